"""``sample camelyon16 --workers``: the same output as one worker, and the OpenSlide path on a real
Aperio .svs slide (RGBA composited on white)."""
import shutil

import numpy as np
import polars as pl
import pytest
from PIL import Image

from tests.test_camelyon import HOLE, SMALL, TUMOR, write_slide
from wsolctl.data.camelyon import sample_camelyon16
from wsolctl.wsi.annotations import asap_xml
from wsolctl.wsi.camelyon16 import SamplingParams

SVS = __import__("pathlib").Path(__file__).parent / "data" / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    base = tmp_path_factory.mktemp("parallel")
    slides, xml = base / "slides", base / "xml"
    slides.mkdir()
    xml.mkdir()
    write_slide(slides / "tumor_001.tif")
    write_slide(slides / "tumor_002.tif")
    write_slide(slides / "normal_001.tif", box=(512, 512, 1024, 768))  # too little tissue: its shortfall is carried
    write_slide(slides / "normal_002.tif")
    write_slide(slides / "normal_003.tif")
    (xml / "tumor_001.xml").write_text(asap_xml([("_0", TUMOR), ("_2", HOLE)]))
    (xml / "tumor_002.xml").write_text(asap_xml([("Tumor", SMALL)]))
    return base, slides, xml


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and ".cache" not in p.parts and not p.name.endswith(".json")}


def test_two_workers_give_the_same_output(slides):
    base, slides_dir, xml = slides
    params = SamplingParams(patch_size=256, tissue_downsample=16, pn=0.2, folds=2)
    one = sample_camelyon16(slides_dir, xml, base / "one", None, params, quiet=True)
    two = sample_camelyon16(slides_dir, xml, base / "two", None, params, quiet=True, workers=2)
    assert pl.read_parquet(base / "one" / "manifest.parquet").equals(pl.read_parquet(base / "two" / "manifest.parquet"))
    assert one["counts"] == two["counts"] and one["warnings"] == two["warnings"]
    per_slide = dict(pl.read_parquet(base / "two" / "manifest.parquet").group_by("slide").len().iter_rows())
    assert (per_slide["normal_001"], per_slide["normal_002"], per_slide["normal_003"]) == (2, 8, 5)  # 5 each + 3 carried
    assert _files(base / "one") == _files(base / "two")  # patches, masks, fold files: byte for byte


def test_real_aperio_svs_samples_rgb_tissue_patches(tmp_path):
    from wsolctl.wsi.slide import Slide

    slides, xml = tmp_path / "slides", tmp_path / "xml"
    slides.mkdir()
    xml.mkdir()
    shutil.copy(SVS, slides / "tumor_001.svs")
    shutil.copy(SVS, slides / "normal_001.svs")
    assert type(Slide(slides / "tumor_001.svs").source).__name__.startswith("Openslide")  # the OpenSlide path
    (xml / "tumor_001.xml").write_text(asap_xml([("_0", [(900, 1400), (1500, 1400), (1500, 2400), (900, 2400)])]))
    stamp = sample_camelyon16(slides, xml, tmp_path / "out", None,
                              SamplingParams(patch_size=256, pn=0.2, folds=2), quiet=True, workers=2)
    manifest = pl.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert stamp["counts"]["train"]["tumor"] > 0 and stamp["counts"]["train"]["normal"] > 0
    for row in manifest.iter_rows(named=True):
        patch = Image.open(tmp_path / "out" / row["image"])
        assert patch.mode == "RGB" and patch.size == (256, 256)
        pixels = np.asarray(patch)
        assert row["tissue_pct"] >= 10 and pixels.mean() < 235  # tissue, not the white background

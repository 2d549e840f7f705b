"""CAMELYON16 sampling on tiny pyramidal TIFF slides written with tifffile (successive IFDs, tiles,
four levels), ASAP XML annotations with an exclusion hole and a reference CSV."""
import json

import numpy as np
import polars as pl
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image

from wsolctl.data.camelyon import Camelyon16, Camelyon16Params, sample_camelyon16
from wsolctl.data.folds import read_encoding, read_split
from wsolctl.errors import DataError
from wsolctl.wsi.annotations import asap_xml, parse_asap, rasterize
from wsolctl.wsi.camelyon16 import SamplingParams
from wsolctl.wsi.camelyon16_inputs import read_reference
from wsolctl.wsi.sampling import calibrate
from wsolctl.wsi.slide import Slide
from wsolctl.wsi.tissue import otsu_thresholds, tissue_mask

SIDE, PATCH = 2048, 256
BACKGROUND, TISSUE, NUCLEI = (243, 242, 245), (214, 140, 190), (120, 60, 150)
# Tumour polygon (level-0 floats, off the pixel-centre grid) with a rectangular exclusion hole.
# Vertices with "generic" decimals: no pixel centre lies on (or within rounding error of) an edge, where
# the even-odd convention of matplotlib and of exact arithmetic can disagree.
TUMOR = [(400.317, 420.733), (1500.219, 380.441), (1620.653, 1100.127), (1300.471, 1560.913), (450.829, 1480.261)]
HOLE = [(800.25, 800.25), (1100.25, 800.25), (1100.25, 1100.25), (800.25, 1100.25)]
SMALL = [(900.311, 900.737), (1350.223, 880.419), (1400.647, 1300.163), (950.853, 1330.271)]
PARAMS = dict(patch_size=PATCH, tissue_downsample=16, pn=0.2, folds=3)


def write_slide(path, box=(256, 256, 1792, 1792)):
    """White background, a rectangle of pink tissue with purple dots; pyramid 2048 → 256."""
    image = np.empty((SIDE, SIDE, 3), np.uint8)
    image[:] = BACKGROUND
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = TISSUE
    yy, xx = np.mgrid[y0:y1, x0:x1]
    image[y0:y1, x0:x1][((yy // 7) % 5 == 0) & ((xx // 9) % 4 == 0)] = NUCLEI
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        level = image
        for index in range(4):
            tif.write(level, tile=(256, 256), photometric="rgb", compression="zlib",
                      subfiletype=0 if index == 0 else 1, resolution=(40000, 40000), resolutionunit="CENTIMETER")
            level = level[::2, ::2]
    return path


@pytest.fixture(scope="module")
def camelyon(tmp_path_factory):
    base = tmp_path_factory.mktemp("camelyon16")
    slides, xml = base / "slides", base / "annotations"
    (slides / "training").mkdir(parents=True)
    (slides / "testing").mkdir()
    xml.mkdir()
    write_slide(slides / "training" / "tumor_001.tif")
    write_slide(slides / "training" / "tumor_002.tif")
    write_slide(slides / "training" / "normal_001.tif", box=(512, 512, 1024, 768))  # 2 cells: shortfall carried
    write_slide(slides / "training" / "normal_002.tif")
    write_slide(slides / "training" / "normal_003.tif")
    write_slide(slides / "testing" / "test_001.tif")
    write_slide(slides / "testing" / "test_002.tif")
    write_slide(slides / "testing" / "test_003.tif")  # tumour in the CSV but no XML (like test_114)
    (xml / "tumor_001.xml").write_text(asap_xml([("_0", TUMOR), ("_2", HOLE)]))
    (xml / "tumor_002.xml").write_text(asap_xml([("Tumor", SMALL)]))
    (xml / "Test_001.xml").write_text(asap_xml([("_1", SMALL), ("_2", HOLE)]))
    reference = base / "reference.csv"
    reference.write_text("Test_001,Tumor,Macro,\nTest_002,Normal,,\nTest_003,Tumor,Micro,\n")
    out = base / "out"
    stamp = sample_camelyon16(slides, xml, out, reference, SamplingParams(**PARAMS), quiet=True)
    return {"base": base, "slides": slides, "xml": xml, "reference": reference, "out": out, "stamp": stamp,
            "manifest": pl.read_parquet(out / "manifest.parquet")}


def _exact(polygons, x, y, w, h):
    jj, ii = np.meshgrid(np.arange(w) + x + 0.5, np.arange(h) + y + 0.5)
    points = np.c_[jj.ravel(), ii.ravel()]
    inside = np.zeros(len(points), bool)
    for polygon in polygons:
        inside |= MplPath(polygon).contains_points(points)
    return inside.reshape(h, w)


def test_slide_reading_and_tissue_detection(camelyon):
    slide = Slide(camelyon["slides"] / "training" / "normal_001.tif")
    assert (slide.width, slide.height) == (SIDE, SIDE)
    overview, sx, sy = slide.overview(16)
    assert overview.shape == (128, 128, 3) and (sx, sy) == (16, 16)
    mask = tissue_mask(overview, otsu_thresholds(overview))
    drawn = np.zeros_like(mask)
    drawn[512 // 16: 768 // 16, 512 // 16: 1024 // 16] = True
    assert (mask & drawn).sum() / (mask | drawn).sum() > 0.95
    assert slide.region(600, 600, 8, 8).shape == (8, 8, 3)


def test_exact_rasterisation_matches_point_in_polygon():
    for ds in (1, 2.5):
        w, h = int(300 / ds), int(260 / ds)
        ours = rasterize([np.array(TUMOR)], 300.0, 350.0, w, h, ds)
        jj, ii = np.meshgrid(300 + (np.arange(w) + 0.5) * ds, 350 + (np.arange(h) + 0.5) * ds)
        truth = MplPath(TUMOR).contains_points(np.c_[jj.ravel(), ii.ravel()]).reshape(h, w)
        assert (ours == truth).all()


def test_asap_parsing_groups_and_errors(camelyon, tmp_path):
    ann = parse_asap(camelyon["xml"] / "tumor_001.xml")
    assert len(ann.tumor) == 1 and len(ann.exclusion) == 1 and ann.tumor[0][0].tolist() == list(TUMOR[0])
    bad = tmp_path / "bad.xml"
    bad.write_text("<ASAP_Annotations><Annotations><Annotation")
    with pytest.raises(DataError, match="bad.xml: not a readable ASAP XML"):
        parse_asap(bad)


def test_tumour_patches_fractions_and_exact_masks(camelyon):
    out, manifest = camelyon["out"], camelyon["manifest"]
    tumor = manifest.filter(pl.col("category") == "tumor")
    assert tumor.height > 0 and (tumor["tumor_pct"] >= 20.0).all() and (tumor["tissue_pct"] >= 10.0).all()
    assert set(tumor["slide"]) <= {"tumor_001", "tumor_002", "test_001"}
    assert (manifest.filter(pl.col("category") == "normal")["tumor_pct"] == 0).all()
    polygons = {"tumor_001": ([TUMOR], [HOLE]), "tumor_002": ([SMALL], []), "test_001": ([SMALL], [HOLE])}
    hole_seen = False
    for row in tumor.iter_rows(named=True):
        assert (row["x"] % PATCH, row["y"] % PATCH, row["level"]) == (0, 0, 0)
        mask = np.asarray(Image.open(out / row["mask"])) > 0
        keep, holes = polygons[row["slide"]]
        truth = _exact(keep, row["x"], row["y"], PATCH, PATCH)
        if holes:
            hole = _exact(holes, row["x"], row["y"], PATCH, PATCH)
            hole_seen |= bool((truth & hole).any())
            truth &= ~hole
        assert mask.sum() == truth.sum() and (mask == truth).all()
        assert row["tumor_pct"] == pytest.approx(100 * truth.mean())
        patch = np.asarray(Image.open(out / row["image"]))
        assert patch.shape == (PATCH, PATCH, 3)
    assert hole_seen  # exclusion subtracted where it overlaps


def test_balance_skip_and_warnings(camelyon):
    manifest, stamp, out = camelyon["manifest"], camelyon["stamp"], camelyon["out"]
    for set_ in ("train", "test"):
        part = manifest.filter(pl.col("set") == set_)
        n_tumor = part.filter(pl.col("category") == "tumor").height
        assert n_tumor > 0 and part.filter(pl.col("category") == "normal").height == n_tumor
    normal = manifest.filter((pl.col("set") == "train") & (pl.col("category") == "normal"))
    counts = {s: normal.filter(pl.col("slide") == s).height for s in ("normal_001", "normal_002", "normal_003")}
    assert counts["normal_001"] <= 2 and counts["normal_002"] >= counts["normal_003"] - 1  # shortfall carried
    skipped = pl.read_parquet(out / "skipped.parquet")
    assert skipped.to_dicts() == [{"slide": "test_003", "set": "test", "label": "tumor",
                                   "reason": "tumour slide without an annotation XML"}]
    assert any("test_003" in w for w in stamp["warnings"])
    assert "test_003" not in set(manifest["slide"])
    assert set(manifest.filter(pl.col("slide") == "test_002")["category"]) == {"normal"}


def test_slide_level_split_and_fold_files(camelyon):
    out, manifest = camelyon["out"], camelyon["manifest"]
    assert read_encoding(out) == {"normal": 0, "tumor": 1}
    for fold in range(3):
        column = manifest[f"fold_{fold}"]
        by_slide = manifest.group_by("slide").agg(pl.col(f"fold_{fold}").str.replace(r"\+valpx", "").n_unique().alias("n"))
        assert (by_slide["n"] == 1).all()  # no slide in two sets
        assert set(manifest.filter(pl.col("set") == "test")[f"fold_{fold}"]) == {"test"}
        splits = {s: read_split(out, fold, s) for s in ("train", "valcl", "valpx", "test")}
        assert len(splits["test"]) == manifest.filter(pl.col("set") == "test").height
        assert len(splits["valcl"]) == column.str.starts_with("valcl").sum()
        valpx = [s.label for s in splits["valpx"]]
        assert valpx.count(0) == min(5, sum(1 for s in splits["valcl"] if s.label == 0))
        assert valpx.count(1) == min(5, sum(1 for s in splits["valcl"] if s.label == 1))
        assert {s.image for s in splits["valpx"]} <= {s.image for s in splits["valcl"]}
        for sample in splits["train"] + splits["test"]:
            assert (out / sample.image).is_file() and sample.size == (PATCH, PATCH)
            assert bool(sample.masks) == (sample.label == 1)
            for mask in sample.masks:
                assert (out / mask).is_file()


def test_deterministic_and_resumable(camelyon):
    base = camelyon["base"]
    again = base / "again"
    sample_camelyon16(camelyon["slides"], camelyon["xml"], again, camelyon["reference"], SamplingParams(**PARAMS), quiet=True)
    second = pl.read_parquet(again / "manifest.parquet")
    assert second.equals(camelyon["manifest"])
    # Resume: with the manifest gone, finished slides come from the cache and patches are not rewritten.
    some = again / second["image"][0]
    before = some.stat().st_mtime_ns
    (again / "manifest.parquet").unlink()
    sample_camelyon16(camelyon["slides"], camelyon["xml"], again, camelyon["reference"], SamplingParams(**PARAMS), quiet=True)
    assert pl.read_parquet(again / "manifest.parquet").equals(second) and some.stat().st_mtime_ns == before
    other = sample_camelyon16(camelyon["slides"], camelyon["xml"], base / "seed1", camelyon["reference"],
                              SamplingParams(**PARAMS, seed=1), quiet=True)
    assert other["counts"]["train"]["tumor"] == camelyon["stamp"]["counts"]["train"]["tumor"]


def test_calibration_text_versus_reference():
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(0.2, 0.5, 200), np.ones(900), rng.uniform(0.5001, 0.99, 100)])
    kept, category, wanted = calibrate(p, 0.2, 0.5, 0.05, np.random.default_rng(1))
    assert wanted == 10 and (category == 2).sum() == 10 and (category == 1).sum() == 200
    assert (p[kept[category == 2]] > 0.5).all() and (p[kept[category == 1]] <= 0.5).all()
    ref, ref_category, _ = calibrate(p, 0.2, 0.5, 0.05, np.random.default_rng(1), reference=True)
    assert (ref_category == 2).sum() > 5 * 10  # the missing break keeps many per draw
    # Text: a bin is chosen uniformly among non-empty bins, so the p = 1 pile does not dominate.
    assert (p[kept[category == 2]] < 1).sum() >= 5
    again, _, _ = calibrate(p, 0.2, 0.5, 0.05, np.random.default_rng(1))
    assert (again == kept).all()
    none, cat, wanted = calibrate(p[:50], 0.2, 0.5, 0.01, np.random.default_rng(1))
    assert wanted == 0 and (cat == 1).all()


def test_reference_calibration_option_end_to_end(camelyon):
    stamp = sample_camelyon16(camelyon["slides"], camelyon["xml"], camelyon["base"] / "ref", camelyon["reference"],
                              SamplingParams(**PARAMS, reference_calibration=True), quiet=True)
    text = camelyon["manifest"].filter((pl.col("set") == "train") & (pl.col("calibration") == 2)).height
    ref = pl.read_parquet(camelyon["base"] / "ref" / "manifest.parquet")
    assert ref.filter((pl.col("set") == "train") & (pl.col("calibration") == 2)).height > text
    assert stamp["counts"]["train"]["tumor"] > camelyon["stamp"]["counts"]["train"]["tumor"]


def test_reference_csv_and_input_errors(tmp_path, camelyon):
    csv = tmp_path / "r.csv"
    csv.write_text("Test_001,Tumor,Macro\nTest_002,Maybe\n")
    with pytest.raises(DataError, match=r"r.csv:2: expected 'slide,Tumor\|Normal"):
        read_reference(csv)
    csv.write_text("image,type,metastasis\nTest_001,Tumor,Macro\n")
    assert read_reference(csv) == {"test_001": "tumor"}
    with pytest.raises(DataError, match="slides folder not found"):
        sample_camelyon16(tmp_path / "nope", None, tmp_path / "o", quiet=True)


def test_recipe_reads_sampled_output(camelyon, tmp_path):
    from tests.conftest import TINY
    from wsolctl.recipe import load_recipe

    out = camelyon["out"]
    text = TINY.format(root=out).replace("name: synthetic-glas", "name: camelyon16").replace(
        "  params: {size: 64, train_per_class: 6, test_per_class: 3, folds: 2, valpx_per_class: 1}\n", "  fold: 2\n")
    (tmp_path / "r.yaml").write_text(text)
    recipe = load_recipe(tmp_path / "r.yaml")
    dataset = Camelyon16(recipe.dataset.params)
    dataset.prepare(out, recipe.dataset.fold)
    assert len(read_split(dataset.folds_dir(out), 2, "train")) > 0
    with pytest.raises(DataError, match="fold 3 does not exist"):
        dataset.prepare(out, 3)
    with pytest.raises(DataError, match="no sampled CAMELYON16 here"):
        Camelyon16().prepare(tmp_path, 0)
    # With params.slides the plugin samples on first use (here: the same output, reused at once).
    params = Camelyon16Params(slides=str(camelyon["slides"]), annotations=str(camelyon["xml"]),
                              reference=str(camelyon["reference"]), sampling=PARAMS, quiet=True)
    Camelyon16(params).prepare(out, 0)
    assert json.loads((out / "wsolctl-camelyon16.json").read_text())["counts"] == camelyon["stamp"]["counts"]


def test_cli_sample_command(camelyon, tmp_path):
    from typer.testing import CliRunner

    from wsolctl.cli import app

    result = CliRunner().invoke(app, ["sample", "camelyon16", str(camelyon["slides"]), str(camelyon["xml"]),
                                      "--out", str(tmp_path / "cli"), "--reference", str(camelyon["reference"]),
                                      "--patch-size", str(PATCH), "--pn", "0.2", "--folds", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "manifest.parquet" in result.output and "test_003" in result.output
    bad = CliRunner().invoke(app, ["sample", "camelyon16", str(tmp_path / "none"), str(camelyon["xml"]), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "slides folder not found" in bad.output

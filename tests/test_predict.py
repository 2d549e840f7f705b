"""``wsolctl predict`` on pyramidal TIFF slides written with tifffile, with a test method plugin whose
map is known from the image content (redness), registered through an entry point: the stitched
heatmap must separate tumour from tissue, regions must be level-0 polygons on the tumours, a
corrupt slide must fail alone, reruns must skip finished inputs."""
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image

from tests.conftest import plugins_on_path

PLUGIN = Path(__file__).parent / "plugins" / "redness"
SIDE = (3072, 2048)  # width, height
BACKGROUND, TISSUE, TUMOR = (243, 242, 245), (214, 140, 190), (205, 45, 50)
TUMORS = [(900, 700, 260), (2200, 1300, 180)]  # level-0 centre x, y and radius of round tumours

RECIPE = """\
name: redness
seed: 0
device: cpu
image_size: 32
dataset:
  name: synthetic-glas
  root: {root}
  params: {{size: 32, train_per_class: 4, test_per_class: 2, folds: 2, valpx_per_class: 1}}
backbones:
  - name: resnet18-wsol
methods:
  - name: redness
  - name: redness-cam
train:
  epochs: 1
  batch_size: 4
evaluation:
  thresholds: 100
"""


def write_slide(path: Path, tumors=TUMORS, side=SIDE, tile=256) -> Path:
    """White background, a pink tissue rectangle with purple dots, red round tumours; 4 levels."""
    import tifffile

    width, height = side
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    image[height // 8: height * 7 // 8, width // 10: width * 9 // 10] = TISSUE
    yy, xx = np.mgrid[0:height, 0:width]
    image[(image == TISSUE).all(axis=2) & ((yy // 7) % 5 == 0) & ((xx // 9) % 4 == 0)] = (120, 60, 150)
    for cx, cy, r in tumors:
        image[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = TUMOR
    with tifffile.TiffWriter(path) as tif:
        level = image
        for index in range(4):
            tif.write(level, tile=(tile, tile), photometric="rgb", compression="zlib",
                      subfiletype=0 if index == 0 else 1, resolution=(40000, 40000), resolutionunit="CENTIMETER")
            level = level[::2, ::2]
    return path


def tumor_mask(shape, ds, tumors=TUMORS):
    """Truth at heatmap pixel centres."""
    yy, xx = (np.mgrid[0:shape[0], 0:shape[1]] + 0.5) * ds
    out = np.zeros(shape, bool)
    for cx, cy, r in tumors:
        out |= (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    return out


def auc(scores, labels):
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels.sum()
    negatives = labels.size - positives
    return (ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives)


@pytest.fixture(scope="module")
def plugin_path():
    with plugins_on_path(PLUGIN) as folder:
        yield folder


@pytest.fixture(scope="module")
def study(tmp_path_factory, plugin_path):
    from wsolctl import pipeline

    base = tmp_path_factory.mktemp("predict")
    recipe = base / "redness.yaml"
    recipe.write_text(RECIPE.format(root=base / "data"))
    out = base / "study"
    pipeline.train(recipe, out, quiet=True)
    pipeline.select(out, quiet=True)
    slides = base / "slides"
    slides.mkdir()
    write_slide(slides / "tumor_a.tif")
    write_slide(slides / "normal_b.tif", tumors=[])
    (slides / "broken.tif").write_bytes(b"II*\x00" + os.urandom(3000))  # a TIFF header, then garbage
    xml_dir = base / "xml"
    xml_dir.mkdir()
    from wsolctl.wsi.annotations import asap_xml

    circles = [[(cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 64, endpoint=False)]
               for cx, cy, r in TUMORS]
    (xml_dir / "tumor_a.xml").write_text(asap_xml([("_0", c) for c in circles]))
    return {"base": base, "out": out, "slides": slides, "xml": xml_dir}


@pytest.fixture(scope="module")
def predicted(study):
    from wsolctl.predict import PredictOptions, predict

    options = PredictOptions(method="redness", tile_size=256, batch_size=8, annotations=study["xml"], threshold=0.7)
    result = predict(study["out"], [study["slides"]], study["base"] / "pred", options, quiet=True)
    return result, study["base"] / "pred"


@pytest.mark.slow
def test_known_map_separates_tumour_from_tissue(predicted):
    import large_image

    result, out = predicted
    meta = json.loads((out / "tumor_a" / "heatmap.json").read_text())
    assert (meta["width"], meta["height"]) == SIDE and meta["map_kind"] == "probability"
    source = large_image.open(str(out / "tumor_a" / "heatmap.tif"))  # opens as a pyramid
    info = source.getMetadata()
    assert (info["sizeX"], info["sizeY"]) == (meta["heatmap_width"], meta["heatmap_height"])
    import openslide  # what QuPath and ASAP-style readers use: a tiled pyramid with the map's pixel size

    pyramid = openslide.OpenSlide(str(out / "tumor_a" / "heatmap.tif"))
    assert pyramid.level_count >= 2 and pyramid.level_dimensions[0] == (meta["heatmap_width"], meta["heatmap_height"])
    assert float(pyramid.properties["openslide.mpp-x"]) == pytest.approx(0.25 * meta["downsample"])
    heat = np.asarray(Image.open(out / "tumor_a" / "heatmap.tif")).astype(float) / 255
    ds = meta["downsample"]
    truth = tumor_mask(heat.shape, ds)
    # tissue at heatmap pixel centres (the drawn rectangle)
    yy, xx = (np.mgrid[0:heat.shape[0], 0:heat.shape[1]] + 0.5) * ds
    tissue = (xx > SIDE[0] / 10 + ds) & (xx < SIDE[0] * 0.9 - ds) & (yy > SIDE[1] / 8 + ds) & (yy < SIDE[1] * 7 / 8 - ds)
    assert auc(heat[tissue], truth[tissue]) >= 0.95
    row = next(r for r in result.rows if r["slide"] == "tumor_a")
    assert row["status"] == "ok" and row["annotated"] and row["pxap"] > 90 and row["dice"] > 80
    tiles = pl.read_parquet(out / "tumor_a" / "tiles.parquet")
    assert row["tiles"] == tiles.height and (tiles["x"] % 256 == 0).all()
    inside = tiles.filter((pl.col("x") == 768) & (pl.col("y") == 512))  # a tile inside the first tumour
    assert inside["map_max"][0] > 0.9 and inside["map_mean"][0] > 0.9


@pytest.mark.slow
def test_regions_are_level0_polygons_on_the_tumours(predicted):
    from wsolctl.wsi.annotations import parse_asap

    _, out = predicted
    geo = json.loads((out / "tumor_a" / "regions.geojson").read_text())
    polygons = [f["geometry"]["coordinates"][0] for f in geo["features"]]
    assert len(polygons) == 2 and all(f["properties"]["objectType"] == "annotation" for f in geo["features"])
    for (cx, cy, r), ring in zip(TUMORS, sorted(polygons, key=lambda p: np.mean(p, 0)[0])):
        ring = np.asarray(ring)
        assert np.array_equal(ring[0], ring[-1])
        assert MplPath(ring).contains_point((cx, cy))  # level-0 coordinates: the centre is inside
        distance = np.hypot(ring[:, 0] - cx, ring[:, 1] - cy)
        assert np.abs(distance - r).max() < 0.1 * r + 2 * 48  # on the boundary, within a heatmap pixel or two
    tiles = json.loads((out / "tumor_a" / "tiles.geojson").read_text())["features"]
    assert len(tiles) == pl.read_parquet(out / "tumor_a" / "tiles.parquet").height
    assert tiles[0]["properties"]["objectType"] == "detection" and "Probability" in tiles[0]["properties"]["measurements"]
    asap = parse_asap(out / "tumor_a" / "regions.xml")
    assert len(asap.tumor) == 2 and not asap.exclusion
    normal = json.loads((out / "normal_b" / "regions.geojson").read_text())
    assert normal["features"] == []


@pytest.mark.slow
def test_corrupt_slide_fails_alone_and_rerun_skips(predicted, study):
    from wsolctl.predict import PredictOptions, predict

    result, out = predicted
    status = {r["slide"]: r["status"] for r in result.rows}
    assert status == {"broken": "failed", "normal_b": "ok", "tumor_a": "ok"}
    broken = next(r for r in result.rows if r["slide"] == "broken")
    assert "broken.tif" in broken["error"] and not (out / "broken").exists()
    table = pl.read_parquet(out / "predictions.parquet")
    assert table.height == 3 and set(table.columns) >= {"slide", "status", "error", "tiles", "tissue_tiles",
                                                        "score_max", "score_mean", "region_area", "duration_s",
                                                        "pxap", "dice"}
    normal = table.filter(pl.col("slide") == "normal_b").row(0, named=True)
    tumour = table.filter(pl.col("slide") == "tumor_a").row(0, named=True)
    assert normal["score_max"] < tumour["score_max"] and normal["region_area"] == 0 and tumour["region_area"] > 0
    area = sum(np.pi * r * r for _, _, r in TUMORS)
    assert abs(tumour["region_area"] - area) < 0.15 * area
    assert "mean over slides with tumour" in (out / "scores.md").read_text()
    stamp = (out / "tumor_a" / "heatmap.tif").stat().st_mtime_ns
    options = PredictOptions(method="redness", tile_size=256, batch_size=8, annotations=study["xml"], threshold=0.7)
    again = predict(study["out"], [study["slides"]], out, options, quiet=True)
    assert (out / "tumor_a" / "heatmap.tif").stat().st_mtime_ns == stamp  # skipped
    assert [r["status"] for r in again.rows] == [r["status"] for r in result.rows]


@pytest.mark.slow
def test_cam_maps_normalised_once_per_slide_with_overlap(study, tmp_path):
    """A CAM-type map on an arbitrary scale (5·redness − 1) gets one min-max per slide; with overlap
    the blend stays smooth and the tumour still ranks first."""
    from wsolctl.predict import PredictOptions, predict

    options = PredictOptions(method="redness-cam", tile_size=512, overlap=0.5, batch_size=16, threshold=0.6)
    result = predict(study["out"], [study["slides"] / "tumor_a.tif"], tmp_path, options, quiet=True)
    assert result.rows[0]["status"] == "ok"
    meta = json.loads((tmp_path / "tumor_a" / "heatmap.json").read_text())
    assert meta["normalisation"]["kind"] == "cam" and meta["normalisation"]["max"] == pytest.approx(4.0, abs=0.2)
    heat = np.asarray(Image.open(tmp_path / "tumor_a" / "heatmap.tif")).astype(float) / 255
    truth = tumor_mask(heat.shape, meta["downsample"])
    assert heat.max() == 1.0 and auc(heat.ravel(), truth.ravel()) >= 0.95
    assert pl.read_parquet(tmp_path / "tumor_a" / "tiles.parquet").height > 24  # 6 × 4 without overlap


@pytest.mark.slow
def test_slide_without_tissue_gives_empty_outputs(study, tmp_path):
    """No tissue tile (CLAM crashed on empty score arrays): an all-zero heatmap, no regions, no score."""
    import tifffile

    from wsolctl.predict import PredictOptions, predict

    blank = np.full((1024, 1024, 3), 244, np.uint8)
    with tifffile.TiffWriter(tmp_path / "blank.tif") as tif:
        tif.write(blank, tile=(256, 256), photometric="rgb")
        tif.write(blank[::2, ::2], tile=(256, 256), photometric="rgb", subfiletype=1)
    result = predict(study["out"], [tmp_path / "blank.tif"], tmp_path / "out",
                     PredictOptions(method="redness-cam", tile_size=256), quiet=True)
    row = result.rows[0]
    assert row["status"] == "ok", row["error"]
    assert row["tiles"] == 0 and row["score_max"] is None and row["regions"] == 0
    assert np.asarray(Image.open(tmp_path / "out" / "blank" / "heatmap.tif")).max() == 0


@pytest.mark.slow
def test_model_choice_errors_and_image_inputs(study, tmp_path):
    from wsolctl.errors import InputError
    from wsolctl.predict import PredictOptions, load_selected, predict

    with pytest.raises(InputError, match=r"give --method \(one of redness, redness-cam\)"):
        load_selected(study["out"])
    with pytest.raises(InputError, match=r"--backbone 'vgg': not in this run directory; choose from resnet18-wsol"):
        load_selected(study["out"], "redness", "vgg")
    loaded = load_selected(study["out"], "redness")
    threshold = pl.read_parquet(study["out"] / "results.parquet").filter(
        (pl.col("method") == "redness") & (pl.col("selection") == "b-loc"))["threshold"][0]
    assert loaded.threshold == threshold and loaded.map_kind == "probability"
    patch = np.full((64, 80, 3), TISSUE, np.uint8)
    patch[10:30, 20:50] = TUMOR
    Image.fromarray(patch).save(tmp_path / "patch.png")
    result = predict(study["out"], [tmp_path / "patch.png"], tmp_path / "out", PredictOptions(method="redness"),
                     quiet=True)
    assert result.rows[0]["status"] == "ok" and result.rows[0]["kind"] == "image"
    cam = np.asarray(Image.open(tmp_path / "out" / "patch" / "cam.png"))
    assert cam.shape == (64, 80) and cam[15:25, 25:45].min() > 200 and cam[45:, :].max() < 120
    assert (tmp_path / "out" / "patch" / "overlay.png").is_file()


@pytest.mark.slow
def test_predict_defaults_to_the_studys_rule_and_needs_checkpoints(study, tmp_path):
    """Without --selection: the first of the study's rules that chose a model (b-loc here; b-cl when the
    study's results hold only b-cl, as a study without masks selects); no checkpoints: one line naming
    `wsolctl train`."""
    import shutil

    from wsolctl.errors import InputError
    from wsolctl.predict import load_selected

    assert load_selected(study["out"], "redness").selection == "b-loc"
    copy = tmp_path / "copy"
    shutil.copytree(study["out"], copy)
    results = pl.read_parquet(copy / "results.parquet")
    results.filter(pl.col("selection") == "b-cl").write_parquet(copy / "results.parquet")
    assert load_selected(copy, "redness").selection == "b-cl"
    with pytest.raises(InputError, match=r"no model selected by b-loc .*give --selection \(b-cl\)"):
        load_selected(copy, "redness", selection="b-loc")
    for ckpt in copy.glob("runs/*/ckpt"):
        shutil.rmtree(ckpt)
    with pytest.raises(InputError, match=r"`wsolctl train RECIPE --out OUT` must run first"):
        load_selected(copy, "redness")


@pytest.mark.slow
def test_cli_exit_codes(study, tmp_path):
    from typer.testing import CliRunner

    from wsolctl.cli import app

    args = ["predict", str(study["out"]), str(study["slides"] / "tumor_a.tif"), str(study["slides"] / "broken.tif"),
            "--out", str(tmp_path), "--method", "redness", "--tile-size", "1024", "--level", "1", "--quiet"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 1, done.output
    assert "broken.tif" in done.stderr and "1 of 2 input(s) failed" in done.stderr
    assert (tmp_path / "tumor_a" / "overlay.png").is_file()
    meta = json.loads((tmp_path / "tumor_a" / "heatmap.json").read_text())
    assert meta["level"] == 1 and meta["tiles"] == 2  # 1024 px at level 1 = 2048 level-0 px: 2 × 1 tiles
    wrong = CliRunner().invoke(app, args[:5] + ["--quiet"])
    assert wrong.exit_code == 2 and wrong.stderr.strip().count("\n") == 0 and "--method" in wrong.stderr


def test_regions_round_trip_through_asap_xml(tmp_path):
    """Fast (no study): the regions of a thresholded heatmap, written as ASAP XML and read back as
    annotations, rasterise to exactly the thresholded pixels, hole included, at level 0 scale ``ds``."""
    from wsolctl.predict.regions import extract_regions, write_asap
    from wsolctl.wsi.annotations import parse_asap

    heat = np.zeros((40, 60), dtype=np.float32)
    heat[5:25, 10:30] = 0.9
    heat[12:18, 16:22] = 0.1  # a hole
    heat[30:36, 40:55] = 0.8
    heat[2, 55] = 1.0  # a single pixel: under MIN_PIXELS, no region
    regions = extract_regions(heat, threshold=0.5, ds=4.0)
    assert [len(r.holes) for r in regions] == [1, 0]
    assert regions[0].area == (20 * 20 - 6 * 6) * 16 and regions[0].peak == pytest.approx(0.9)
    write_asap(tmp_path / "regions.xml", regions)
    mask = parse_asap(tmp_path / "regions.xml").mask(0, 0, 60, 40, downsample=4.0)
    expected = heat >= 0.5
    expected[2, 55] = False
    assert np.array_equal(mask, expected)


def test_tiles_blend_into_a_pyramidal_heatmap(tmp_path):
    """Fast (no study): overlapping tile maps blend with their window weights (a constant map stays
    constant), a CAM-type slide is min-max normalised over tissue, and the TIFF holds level 0 as uint8
    with 2× reductions."""
    import tifffile

    from wsolctl.predict.heatmap import Canvas, normalise, write_tiff

    canvas = Canvas(width=128, height=64, ds=2.0, cells=32)  # 64 × 32 heatmap pixels, 64-px tiles
    tissue = np.ones((32, 32), bool)
    for x in (0, 32):  # two tiles overlapping by half: heatmap columns 0..31 and 16..47
        canvas.add(x, 0, np.full((32, 32), 3.0, np.float32), tissue)
    blended = canvas.blended()
    assert np.allclose(blended[canvas.covered], 3.0) and canvas.covered[:, :48].all() and not canvas.covered[:, 48:].any()
    ramp = blended + np.arange(64, dtype=np.float32)
    scale = normalise("cam", ramp, canvas.tissue)
    assert (scale.low, scale.high) == pytest.approx((3.0, 3.0 + 47))  # over the tissue the tiles covered
    assert normalise("probability", blended, canvas.tissue).apply(blended).max() == 1.0  # clipped, not rescaled
    heat = scale.apply(ramp)
    levels = write_tiff(tmp_path / "heat.tif", heat, ds=2.0, mm_x=0.00025, tile=16)
    with tifffile.TiffFile(tmp_path / "heat.tif") as tif:
        pages = [page.asarray() for page in tif.pages]
    assert levels == len(pages) == 3 and [p.shape for p in pages] == [(32, 64), (16, 32), (8, 16)]
    assert np.array_equal(pages[0], np.round(heat * 255).astype(np.uint8))


def test_run_summary_prints_the_results_and_the_baseline(tmp_path, capsys):
    """Fast: the table ``wsolctl run`` ends with, from a results.parquet alone."""
    from wsolctl.results.summary import print_summary

    pl.DataFrame([{"backbone": "resnet18-wsol", "method": m, "selection": "b-loc", "epoch": 1, "pxap": p,
                   "tp": 60.0, "fp": 20.0, "cl_acc": 75.0, "baseline_pxap": 41.25}
                  for m, p in (("cam", 55.5), ("gradcam", 61.0))]).write_parquet(tmp_path / "results.parquet")
    print_summary(tmp_path)
    printed = capsys.readouterr().out
    assert "55.5" in printed and "61.0" in printed and "all-foreground baseline PxAP: 41.2" in printed

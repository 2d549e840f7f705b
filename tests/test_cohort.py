"""``wsolctl sample slides``: a cohort of pyramidal TIFF slides from two scanners (0.25 and 0.5 µm/px)
covering the same tissue, a tumour disc of the same physical size in each, drawn in QuPath GeoJSON;
a manifest with patients, bad rows and a corrupt slide."""
import csv
import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from wsolctl.data.cohort import STAMP, sample_cohort
from wsolctl.data.folds import read_encoding, read_split
from wsolctl.errors import DataError
from wsolctl.wsi.annotations import parse_geojson, qupath_geojson
from wsolctl.wsi.cohort import CohortParams

FIELD = 256.0  # µm: every slide shows the same 256 × 256 µm of tissue
DISC = (128.0, 120.0, 60.0)  # tumour disc centre x, y and radius, µm
BACKGROUND, TISSUE, NUCLEI, TUMOR = (243, 242, 245), (214, 140, 190), (120, 60, 150), (205, 45, 50)
PARAMS = dict(mpp=0.5, patch_size=32, min_roi=0.001, folds=2, test_fraction=0.25, valpx_per_class=2)


def write_slide(path, mpp, tumour, resolution=True):
    """The field at ``mpp`` µm/px (a background margin, tissue, the disc when ``tumour``): a tiled
    pyramid of successive IFDs, 3 levels, pixel size in the TIFF resolution tags."""
    import tifffile

    side = int(FIELD / mpp)
    yy, xx = (np.mgrid[0:side, 0:side] + 0.5) * mpp  # pixel centres in µm
    image = np.empty((side, side, 3), np.uint8)
    image[:] = BACKGROUND
    tissue = (xx > 24) & (xx < FIELD - 24) & (yy > 24) & (yy < FIELD - 24)
    image[tissue] = TISSUE
    image[tissue & ((yy // 3.5) % 5 == 0) & ((xx // 4.5) % 4 == 0)] = NUCLEI
    if tumour:
        image[(xx - DISC[0]) ** 2 + (yy - DISC[1]) ** 2 < DISC[2] ** 2] = TUMOR
    with tifffile.TiffWriter(path) as tif:
        for index in range(3):
            per_cm = 1e4 / (mpp * 2 ** index)
            extra = dict(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER") if resolution else {}
            tif.write(image[:: 2 ** index, :: 2 ** index], tile=(128, 128), photometric="rgb", compression="zlib",
                      subfiletype=0 if index == 0 else 1, **extra)
    return path


def disc_geojson(path, mpp, name="Tumor"):
    t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    ring = [((DISC[0] + DISC[2] * np.cos(a)) / mpp, (DISC[1] + DISC[2] * np.sin(a)) / mpp) for a in t]
    path.write_text(json.dumps(qupath_geojson([(name, [ring])])))
    return path


def truth(x, y, size, ds, mpp):
    """The disc at a patch's pixel centres (the analytic shape the polygon approximates)."""
    jj, ii = np.meshgrid((x + (np.arange(size) + 0.5) * ds) * mpp, (y + (np.arange(size) + 0.5) * ds) * mpp)
    return (jj - DISC[0]) ** 2 + (ii - DISC[1]) ** 2 < DISC[2] ** 2


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    base = tmp_path_factory.mktemp("cohort")
    rows = [("slide", "label", "annotations", "patient", "split")]
    for patient, mpp in (("P1", 0.25), ("P2", 0.5), ("P3", 0.5), ("P4", 0.25)):
        write_slide(base / f"{patient}-tumour.tif", mpp, True)
        write_slide(base / f"{patient}-normal.tif", mpp, False)
        disc_geojson(base / f"{patient}-tumour.geojson", mpp)
        rows += [(f"{patient}-tumour.tif", "tumor", f"{patient}-tumour.geojson", patient, ""),
                 (f"{patient}-normal.tif", "normal", "", patient, "")]
    (base / "corrupt.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    write_slide(base / "stroma.tif", 0.5, True)
    disc_geojson(base / "stroma.geojson", 0.5, name="Stroma")
    write_slide(base / "plain.tif", 0.5, True)
    rows += [("corrupt.tif", "tumor", "P1-tumour.geojson", "P5", ""),  # line 10: unreadable slide
             ("missing.tif", "normal", "", "P5", ""),                  # line 11: missing file
             ("stroma.tif", "tumor", "stroma.geojson", "P5", ""),      # line 12: unknown annotation class
             ("plain.tif", "tumor", "", "P5", "")]                     # line 13: no annotations
    with (base / "manifest.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    out = base / "out"
    stamp = sample_cohort(base / "manifest.csv", out, CohortParams(**PARAMS), quiet=True)
    return {"base": base, "out": out, "stamp": stamp, "patches": pl.read_parquet(out / "patches.parquet")}


def test_same_tumour_area_on_both_scanners(cohort):
    tumour = cohort["patches"].filter(pl.col("label") == "tumor")
    expected = np.pi * (DISC[2] / 0.5) ** 2  # disc area in patch pixels at 0.5 µm/px
    areas = {}
    for slide, part in tumour.group_by("slide"):
        areas[slide[0]] = float((part["roi_fraction"] * 32 * 32).sum())
    assert set(areas) == {"P1-tumour", "P2-tumour", "P3-tumour", "P4-tumour"}
    for slide, area in areas.items():
        assert area == pytest.approx(expected, rel=0.05), slide
    assert areas["P1-tumour"] == pytest.approx(areas["P2-tumour"], rel=0.05)  # 0.25 vs 0.5 µm/px scanners
    assert (cohort["patches"]["mpp"] == 0.5).all() and (cohort["patches"]["patch_size"] == 32).all()
    assert set(cohort["patches"].filter(pl.col("slide") == "P1-tumour")["slide_mpp"]) == {0.25}
    assert cohort["stamp"]["mpp"] == 0.5


def test_masks_match_the_rasterised_truth(cohort):
    out, tumour = cohort["out"], cohort["patches"].filter(pl.col("label") == "tumor")
    agree = total = 0
    for row in tumour.iter_rows(named=True):
        mask = np.asarray(Image.open(out / row["mask"])) > 0
        image = np.asarray(Image.open(out / row["image"]))
        assert mask.shape == (32, 32) and image.shape == (32, 32, 3)
        want = truth(row["x"], row["y"], 32, 0.5 / row["slide_mpp"], row["slide_mpp"])
        agree, total = agree + (mask == want).sum(), total + mask.size
        assert row["roi_fraction"] == pytest.approx(mask.mean())
        assert 0 < row["roi_fraction"]
        red = (image[..., 0] > 180) & (image[..., 1] < 90)  # the pixels show the disc where the mask says
        assert (red == mask).mean() > 0.9
    assert agree / total >= 0.99
    normal = cohort["patches"].filter(pl.col("label") == "normal")
    assert normal.height > 0 and normal["mask"].is_null().all() and (normal["roi_fraction"] == 0).all()


def test_no_patient_in_two_splits(cohort):
    patches, out = cohort["patches"], cohort["out"]
    assert read_encoding(out) == {"normal": 0, "tumor": 1}
    assert patches.group_by("patient").agg(pl.col("split").n_unique())["split"].max() == 1
    assert set(patches.filter(pl.col("split") == "test")["patient"]) != set()
    for fold in range(2):
        column = pl.col(f"fold_{fold}").str.replace(r"\+valpx", "")
        assert patches.group_by("patient").agg(column.n_unique())[f"fold_{fold}"].max() == 1
        splits = {s: read_split(out, fold, s) for s in ("train", "valcl", "valpx", "test")}
        assert all(splits.values())
        owners = {s: {patches.filter(pl.col("image") == x.image)["patient"][0] for x in items}
                  for s, items in splits.items()}
        assert not (owners["train"] & owners["valcl"]) and not (owners["train"] & owners["test"])
        assert not (owners["valcl"] & owners["test"])
        assert all(bool(s.masks) == (s.label == 1) for s in splits["valpx"])


def test_bad_rows_and_a_corrupt_slide_fail_alone(cohort):
    skipped = {row["slide"]: row for row in cohort["stamp"]["skipped"]}
    assert set(skipped) == {"corrupt", "missing.tif", "stroma", "plain"}
    manifest = str(cohort["base"] / "manifest.csv")
    assert skipped["corrupt"]["where"] == f"{manifest}:10" and "read" in skipped["corrupt"]["reason"]
    assert skipped["missing.tif"]["where"] == f"{manifest}:11" and "file not found" in skipped["missing.tif"]["reason"]
    assert "'Stroma'" in skipped["stroma"]["reason"] and skipped["stroma"]["where"] == f"{manifest}:12"
    assert "without annotations" in skipped["plain"]["reason"]
    assert pl.read_parquet(cohort["out"] / "skipped.parquet").height == 4
    assert cohort["patches"]["patient"].unique().sort().to_list() == ["P1", "P2", "P3", "P4"]


def test_rerun_writes_nothing_and_resumes_per_slide(cohort):
    out, base = cohort["out"], cohort["base"]
    image = out / cohort["patches"]["image"][0]
    before = image.stat().st_mtime_ns, (out / "patches.parquet").stat().st_mtime_ns
    assert sample_cohort(base / "manifest.csv", out, CohortParams(**PARAMS), quiet=True) == cohort["stamp"]
    assert (image.stat().st_mtime_ns, (out / "patches.parquet").stat().st_mtime_ns) == before
    (out / STAMP).unlink()  # interrupted before the end: slides come from the cache, patches stay
    sample_cohort(base / "manifest.csv", out, CohortParams(**PARAMS), quiet=True)
    assert image.stat().st_mtime_ns == before[0]
    assert pl.read_parquet(out / "patches.parquet").equals(cohort["patches"])


def test_inherit_labels_mpp_column_and_fixed_test(tmp_path, cohort):
    base = cohort["base"]
    write_slide(tmp_path / "bare.tif", 0.5, True, resolution=False)  # no pixel size in the file
    (tmp_path / "stated.tif").symlink_to(tmp_path / "bare.tif")
    for name in ("P1-tumour", "P1-normal", "P2-tumour", "P2-normal", "plain"):
        (tmp_path / f"{name}.tif").symlink_to(base / f"{name}.tif")
    rows = ["slide,label,patient,split,mpp", "P1-tumour.tif,tumor,A,test,", "P1-normal.tif,normal,A,,",
            "P2-tumour.tif,tumor,B,,", "P2-normal.tif,normal,B,,", "plain.tif,tumor,C,,", "bare.tif,tumor,C,,",
            "stated.tif,tumor,C,,0.5", "sub/stated.tif,tumor,C,,0.5"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "stated.tif").symlink_to(tmp_path / "bare.tif")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    stamp = sample_cohort(tmp_path / "m.csv", tmp_path / "out", CohortParams(**{**PARAMS, "unannotated": "inherit"}),
                          quiet=True)
    patches = pl.read_parquet(tmp_path / "out" / "patches.parquet")
    assert stamp["masks"] is False and patches.filter(pl.col("label") == "tumor")["mask"].is_null().all()
    assert set(patches.filter(pl.col("split") == "test")["patient"]) == {"A"}  # the whole patient follows its slide
    reasons = {s["slide"]: s["reason"] for s in stamp["skipped"]}
    assert "no pixel size" in reasons["bare"] and "also used" in reasons["sub/stated.tif"]
    assert set(patches.filter(pl.col("slide") == "stated")["slide_mpp"]) == {0.5}  # the manifest's mpp
    assert patches.filter(pl.col("slide") == "plain").height > 0  # inherited its label
    # the same manifest as Parquet reads the same rows
    from wsolctl.wsi.manifest import read_manifest

    frame = pl.read_csv(tmp_path / "m.csv", infer_schema_length=0)
    frame.write_parquet(tmp_path / "m.parquet")
    csv_rows, parquet_rows = read_manifest(tmp_path / "m.csv"), read_manifest(tmp_path / "m.parquet")
    assert [s.path for s in csv_rows[0]] == [s.path for s in parquet_rows[0]] and len(parquet_rows[1]) == 1
    assert parquet_rows[0][-1].mpp == 0.5 and parquet_rows[1][0]["where"].endswith("m.parquet: row 8")
    with pytest.raises(DataError, match="missing column"):
        (tmp_path / "bad.csv").write_text("path,label\nx.tif,tumor\n")
        sample_cohort(tmp_path / "bad.csv", tmp_path / "o2", quiet=True)


def test_workers_give_the_same_output(cohort, tmp_path):
    stamp = sample_cohort(cohort["base"] / "manifest.csv", tmp_path / "w2", CohortParams(**PARAMS), quiet=True, workers=2)
    assert pl.read_parquet(tmp_path / "w2" / "patches.parquet").equals(cohort["patches"])
    assert stamp["counts"] == cohort["stamp"]["counts"]


@pytest.mark.slow
def test_ray_executor_gives_the_same_output(cohort, tmp_path):
    pytest.importorskip("ray")
    sample_cohort(cohort["base"] / "manifest.csv", tmp_path / "ray", CohortParams(**PARAMS), quiet=True, workers=2,
                  executor="ray")
    assert pl.read_parquet(tmp_path / "ray" / "patches.parquet").equals(cohort["patches"])


def _die_on_bad(job, params, cache, progress):
    import os

    if job.name == "bad":
        os._exit(3)  # as a crash in a reader's native code would
    return {"ok": job.name}


def test_a_worker_that_dies_fails_its_slide_not_the_run(tmp_path):
    from types import SimpleNamespace

    from wsolctl.executors import WorkerPool
    from wsolctl.progress import Progress
    from wsolctl.wsi.slidejobs import SlideRunner

    jobs = [(SimpleNamespace(name=n),) for n in ("a", "bad")]
    with WorkerPool(2, start_method="fork") as pool, Progress(quiet=True) as progress:
        results = SlideRunner(tmp_path, None, progress, pool, deaths_fail_alone=True)(_die_on_bad, jobs)
    assert "worker process died" in results[1]["error"]
    with WorkerPool(2, start_method="fork") as pool, Progress(quiet=True) as progress:
        with pytest.raises(RuntimeError, match="bad: worker died"):
            SlideRunner(tmp_path, None, progress, pool)(_die_on_bad, jobs)


def test_geojson_feature_list_and_holes(tmp_path):
    outer = [(0, 0), (100, 0), (100, 100), (0, 100)]
    hole = [(25, 25), (75, 25), (75, 75), (25, 75)]
    features = qupath_geojson([("Tumor", [outer, hole]), (None, [outer])])["features"]
    features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}})
    (tmp_path / "a.geojson").write_text(json.dumps(features))  # older QuPath: a bare list of features
    found = parse_geojson(tmp_path / "a.geojson")
    assert found["Tumor"].mask(0, 0, 100, 100).sum() == 100 * 100 - 50 * 50
    assert found[None].mask(0, 0, 100, 100).all() and found[None].ignored_groups == ["feature 2: Point"]
    (tmp_path / "b.geojson").write_text("{not json")
    with pytest.raises(DataError, match="b.geojson: not a readable GeoJSON"):
        parse_geojson(tmp_path / "b.geojson")


def test_cli_sample_slides(cohort, tmp_path):
    from typer.testing import CliRunner

    from wsolctl.cli import app

    args = ["sample", "slides", str(cohort["base"] / "manifest.csv"), "--out", str(tmp_path / "cli"), "--mpp", "0.5",
            "--patch-size", "32", "--min-roi", "0.5", "--folds", "2", "--test-fraction", "0.25", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "patches.parquet" in result.output and "name: folds" in result.output and "manifest.csv:10" in result.output
    patches = pl.read_parquet(tmp_path / "cli" / "patches.parquet")
    assert (patches.filter(pl.col("label") == "tumor")["roi_fraction"] >= 0.5).all()
    bad = CliRunner().invoke(app, ["sample", "slides", str(tmp_path / "none.csv"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "manifest not found" in bad.output


@pytest.mark.slow
def test_a_study_runs_on_the_sampled_cohort(cohort, tmp_path):
    from tests.conftest import TINY
    from wsolctl import pipeline

    out = tmp_path / "data"  # a few patches per slide: the study takes seconds
    sample_cohort(cohort["base"] / "manifest.csv", out, CohortParams(**PARAMS, max_per_slide=16), quiet=True)
    recipe = TINY.format(root=out).replace("name: synthetic-glas", "name: folds").replace(
        "  params: {size: 64, train_per_class: 6, test_per_class: 3, folds: 2, valpx_per_class: 1}\n", "  fold: 1\n")
    (tmp_path / "r.yaml").write_text(recipe.replace("  - name: gradcam\n", ""))
    pipeline.run(tmp_path / "r.yaml", tmp_path / "run", quiet=True)
    results = pl.read_parquet(tmp_path / "run" / "results.parquet")
    assert results.height > 0 and results["pxap"].is_not_null().all()
    # predict defaults to the resolution the study's data were sampled at
    from wsolctl.predict import PredictOptions
    from wsolctl.predict.resolution import with_study_mpp

    assert with_study_mpp(PredictOptions(), tmp_path / "run", results["run_id"][0]).mpp == 0.5
    assert with_study_mpp(PredictOptions(level=1), tmp_path / "run", results["run_id"][0]).mpp is None


def test_predict_tiles_at_a_physical_resolution(cohort, tmp_path):
    from wsolctl.errors import InputError
    from wsolctl.predict import PredictOptions
    from wsolctl.predict.resolution import tile_grid
    from wsolctl.wsi.slide import Slide

    options = PredictOptions(tile_size=32, mpp=0.5)
    fine, coarse = Slide(cohort["base"] / "P1-tumour.tif"), Slide(cohort["base"] / "P2-tumour.tif")
    assert tile_grid(fine, options).footprint == 64 and tile_grid(coarse, options).footprint == 32
    assert tile_grid(fine, PredictOptions(tile_size=32, level=1)).footprint == 64
    # the same tissue in both: a tile read at 0.5 µm/px from the 0.25 µm/px slide matches the other
    a = fine.region(64, 64, 32, 32, tile_grid(fine, options).level_downsample).astype(int)
    b = coarse.region(32, 32, 32, 32, tile_grid(coarse, options).level_downsample).astype(int)
    assert np.abs(a - b).mean() < 20
    write_slide(tmp_path / "bare.tif", 0.5, False, resolution=False)
    with pytest.raises(InputError, match="no pixel size"):
        tile_grid(Slide(tmp_path / "bare.tif"), options)


def test_grouped_stratified_splits():
    from wsolctl.data.splits import SplitParams, assign_folds, draw_test

    rng = np.random.default_rng(0)
    strata = {f"P{i:02d}": ("tumor" if i % 3 else "normal") for i in range(30)}  # 20 tumour, 10 normal patients
    test = draw_test(strata, 0.2, 0, ["normal", "tumor"])
    assert sum(strata[g] == "tumor" for g in test) == 4 and sum(strata[g] == "normal" for g in test) == 2
    assert draw_test(strata, 0.2, 0, ["normal", "tumor"]) == test and draw_test(strata, 0, 0, ["normal"]) == set()
    groups = [g for g in strata for _ in range(int(rng.integers(1, 5)))]  # patches per patient
    labels = [strata[g] for g in groups]
    folds = assign_folds(groups, labels, [g in test for g in groups], [True] * len(groups),
                         {g: s for g, s in strata.items() if g not in test}, ["normal", "tumor"], SplitParams(3, 0, 0.25, 2))
    for fold in range(3):
        where: dict[str, set[str]] = {}
        for g, f in zip(groups, folds):
            where.setdefault(g, set()).add(f[fold].replace("+valpx", ""))
        assert all(len(w) == 1 for w in where.values())  # no patient in two splits
        val = {g for g, w in where.items() if w == {"valcl"}}
        assert sum(strata[g] == "tumor" for g in val) == 4 and sum(strata[g] == "normal" for g in val) == 2
        assert [f[fold] for f in folds].count("valcl+valpx") == 4
    assert len({frozenset(g for g, f in zip(groups, folds) if f[k] == "valcl") for k in range(3)}) > 1


def test_several_annotated_classes(cohort, tmp_path):
    mpp, square = 0.5, [(60, 300), (200, 300), (200, 440), (60, 440)]  # level-0 px, below the disc
    t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    disc = [((DISC[0] + DISC[2] * np.cos(a)) / mpp, (DISC[1] + DISC[2] * np.sin(a)) / mpp) for a in t]
    (tmp_path / "two.geojson").write_text(json.dumps(qupath_geojson([("Tumor", [disc]), ("Stroma", [square])])))
    (tmp_path / "two.tif").symlink_to(cohort["base"] / "P2-tumour.tif")
    (tmp_path / "n.tif").symlink_to(cohort["base"] / "P2-normal.tif")
    (tmp_path / "s.tif").symlink_to(cohort["base"] / "P3-tumour.tif")
    (tmp_path / "m.csv").write_text("slide,label,annotations\ntwo.tif,tumor,two.geojson\nn.tif,normal,\ns.tif,stroma,\n")
    stamp = sample_cohort(tmp_path / "m.csv", tmp_path / "out", CohortParams(**{**PARAMS, "min_roi": 0.5}), quiet=True)
    assert read_encoding(tmp_path / "out") == {"normal": 0, "stroma": 1, "tumor": 2}
    patches = pl.read_parquet(tmp_path / "out" / "patches.parquet").filter(pl.col("slide") == "two")
    stroma = patches.filter(pl.col("label") == "stroma")
    assert set(patches["label"]) == {"stroma", "tumor"}
    assert stroma.height > 0 and (stroma["roi_fraction"] >= 0.5).all() and (patches["roi_fraction"] >= 0.5).all()
    for row in stroma.iter_rows(named=True):  # a stroma patch's mask is the square, never the disc
        mask = np.asarray(Image.open(tmp_path / "out" / row["mask"])) > 0
        assert mask.sum() == round(row["roi_fraction"] * 32 * 32)
        assert row["x"] >= 32 and row["x"] + 32 <= 224 and row["y"] >= 288 and row["y"] + 32 <= 448
    assert [s["slide"] for s in stamp["skipped"]] == ["s"]  # a stroma slide without annotations

"""One tiny study end to end: train → select → report, resume, determinism, standalone steps."""
import json
import math

import polars as pl
import pytest

from tests.conftest import assert_localizes
from wsolctl import pipeline
from wsolctl.results.compare import compare
from wsolctl.results.tables import RESULT_COLUMNS


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    from tests.conftest import TINY

    tmp = tmp_path_factory.mktemp("e2e")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(TINY.format(root=tmp / "data"))
    out = tmp / "out"
    pipeline.run(recipe, out, quiet=True)
    return recipe, out


@pytest.mark.slow
def test_outputs_and_schema(finished):
    _, out = finished
    for name in ("results.parquet", "epochs.parquet", "curves.parquet", "report.md", "recipe.resolved.yaml",
                 "wsolctl.log", "figures/threshold-sensitivity.png", "figures/training-curves.png"):
        assert (out / name).is_file(), name
    results = pl.read_parquet(out / "results.parquet")
    assert results.columns[: len(RESULT_COLUMNS)] == RESULT_COLUMNS
    assert sorted(results["method"].unique()) == ["cam", "gradcam"]
    assert sorted(results["selection"].unique()) == ["b-cl", "b-loc"]
    assert results["run_id"].n_unique() == 1  # CAM and Grad-CAM share one classifier
    assert_localizes(results)
    for row in results.iter_rows(named=True):
        assert 0 <= row["pxap"] <= 100 and 0 <= row["threshold"] <= 1 and row["epoch"] in (0, 1)
        assert math.isclose(row["tp"] + row["fn"], 100, abs_tol=1e-6)
        assert math.isclose(row["fp"] + row["tn"], 100, abs_tol=1e-6)
    epochs = pl.read_parquet(out / "epochs.parquet")
    assert sorted(epochs["epoch"].unique()) == [0, 1]  # epoch 0 = before training
    assert {"valcl_acc", "valpx_pxap", "train_loss"} <= set(epochs.columns)
    curves = pl.read_parquet(out / "curves.parquet")
    assert {"threshold", "precision", "recall", "tp", "fn", "fp", "tn"} <= set(curves.columns)
    assert len(curves) == 4 * 102  # 2 methods × 2 rules × (100 thresholds + the reference's two end points)
    import numpy as np

    examples = next((out / "runs").glob("*/examples"))
    images = np.load(examples / "images.npz")
    assert images["images"].shape == (6, 48, 48, 3) and sorted(images["labels"]) == [0, 0, 0, 1, 1, 1]
    cams = np.load(examples / "gradcam__b-loc.npz")["cams"]
    assert cams.shape == (6, 48, 48) and cams.dtype == np.uint8 and cams.max() == 255  # min-max normalised
    report = (out / "report.md").read_text()
    assert "B-LOC selection" in report and "trivial baseline" in report and "share one trained classifier" in report


@pytest.mark.slow
def test_selection_follows_validation_history(finished):
    _, out = finished
    epochs = pl.read_parquet(out / "epochs.parquet")
    results = pl.read_parquet(out / "results.parquet")
    for method in ("cam", "gradcam"):
        hist = epochs.filter(pl.col("method") == method).sort("epoch")
        rows = {r["selection"]: r["epoch"] for r in results.filter(pl.col("method") == method).iter_rows(named=True)}
        for rule, metric in (("b-loc", "valpx_pxap"), ("b-cl", "valcl_acc")):
            best = hist[metric].max()
            assert rows[rule] == hist.filter(pl.col(metric) == best)["epoch"].max()  # ties → later epoch


@pytest.mark.slow
def test_a_trained_model_comes_back_from_its_run_directory(finished):
    import torch

    from wsolctl.engine.build import build_data
    from wsolctl.engine.evaluate import evaluate
    from wsolctl.engine.rundir import RunDir

    _, out = finished
    row = pl.read_parquet(out / "results.parquet").filter(
        (pl.col("method") == "gradcam") & (pl.col("selection") == "b-cl")).row(0, named=True)
    run = RunDir.of(out, row["run_id"])
    model, spec = run.load_model("gradcam", "b-cl")
    assert spec.run_id == run.run_id and spec.labels == ("cam", "gradcam") and not model.training
    assert run.epoch_of("gradcam", "b-cl") == row["epoch"]
    state = torch.load(run.checkpoint(row["epoch"]), weights_only=True)
    by_epoch, _ = run.load_model(epoch=row["epoch"])
    assert all(torch.equal(by_epoch.state_dict()[k], v) for k, v in state.items())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # the rebuilt model gives the numbers select recorded on test
    data = build_data(spec, torch.device("cpu"))
    scores = evaluate(model, {"gradcam": spec.methods[1].instantiate()}, data.test, torch.device("cpu"),
                      accuracy=True, localize=True, thresholds=spec.recipe.evaluation.thresholds)
    assert scores.accuracy == pytest.approx(row["cl_acc"]) and scores.localization["gradcam"].pxap == pytest.approx(row["pxap"])


@pytest.mark.slow
def test_the_untrained_reference_is_the_runs_epoch_0_model(finished):
    """Training keeps epoch 0's checkpoint; select scores each method's maps from it on test
    (results.parquet ``untrained_pxap``) and the report shows their mean as a reference row."""
    import torch

    from wsolctl.engine.build import build_data
    from wsolctl.engine.evaluate import evaluate
    from wsolctl.engine.rundir import RunDir

    _, out = finished
    results = pl.read_parquet(out / "results.parquet")
    run = RunDir.of(out, results["run_id"][0])
    model, spec = run.load_model(epoch=0)
    data = build_data(spec, torch.device("cpu"))
    methods = {label: method.instantiate() for label, method in zip(spec.labels, spec.methods)}
    scores = evaluate(model, methods, data.test, torch.device("cpu"), accuracy=False, localize=True,
                      thresholds=spec.recipe.evaluation.thresholds)
    for row in results.iter_rows(named=True):
        assert row["untrained_pxap"] == pytest.approx(scores.localization[row["method"]].pxap)
    mean = results.filter(pl.col("selection") == "b-loc")["untrained_pxap"].mean()
    assert f"| *reference: untrained model (epoch 0)* | {mean:.1f} |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_rerun_skips_finished_work(finished):
    recipe, out = finished
    state = next((out / "runs").glob("*/state.pt"))
    before = state.stat().st_mtime_ns, (out / "runs" / state.parent.name / "test.json").stat().st_mtime_ns
    pipeline.run(recipe, out, quiet=True)
    after = state.stat().st_mtime_ns, (out / "runs" / state.parent.name / "test.json").stat().st_mtime_ns
    assert before == after


@pytest.mark.slow
def test_same_recipe_and_seed_give_the_same_numbers(finished, tmp_path):
    recipe, out = finished
    again = pipeline.run(recipe, tmp_path / "again", quiet=True).parent
    outcome = compare(out, again, [f"{m}=0" for m in ("pxap", "tp", "fn", "fp", "tn", "cl_acc", "miou")])
    assert not outcome.failed, outcome.markdown
    a = pl.read_parquet(out / "results.parquet").sort(["method", "selection"])
    b = pl.read_parquet(again / "results.parquet").sort(["method", "selection"])
    assert a.drop("params").equals(b.drop("params"))


@pytest.mark.slow
def test_resume_after_interruption(finished, tmp_path, monkeypatch):
    """Kill training during epoch 2, rerun: the history equals an uninterrupted run's."""
    from wsolctl.engine import train as train_module

    recipe, _ = finished
    full = pipeline.train(recipe, tmp_path / "full", ["train.epochs=2"], quiet=True)
    history = json.loads(next((full / "runs").glob("*/epochs.json")).read_text())

    real = train_module._train_epoch
    calls = []

    def crash_on_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", crash_on_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        pipeline.train(recipe, tmp_path / "resumed", ["train.epochs=2"], quiet=True)
    run_dir = next((tmp_path / "resumed" / "runs").iterdir())
    assert not (run_dir / "done.json").exists()
    before = json.loads((run_dir / "epochs.json").read_text())
    assert max(r["epoch"] for r in before) == 1
    # The rerun must continue from the saved state: it trains the missing epoch only. Training is
    # deterministic, so a restart from scratch would give the same history; count the epochs instead.
    epochs_run = []

    def counting(*args, **kwargs):
        epochs_run.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "_train_epoch", counting)
    pipeline.train(recipe, tmp_path / "resumed", ["train.epochs=2"], quiet=True)
    assert len(epochs_run) == 1
    resumed = json.loads((run_dir / "epochs.json").read_text())
    assert resumed[:len(before)] == before  # earlier rows untouched, their duration_s included
    strip = lambda rows: [{k: v for k, v in r.items() if k != "duration_s"} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(history)


@pytest.mark.slow
def test_select_and_report_run_alone(finished, tmp_path):
    import shutil

    _, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for name in ("results.parquet", "curves.parquet", "report.md"):
        (copy / name).unlink()
    for cache in (copy / "runs").glob("*/test.json"):
        cache.unlink()
    pipeline.select(copy, quiet=True)
    pipeline.report(copy)
    assert pl.read_parquet(copy / "results.parquet").drop("params").equals(
        pl.read_parquet(out / "results.parquet").drop("params"))
    (copy / "curves.parquet").unlink()
    pipeline.report(copy)
    assert "threshold sensitivity skipped" in (copy / "report.md").read_text()


@pytest.mark.slow
def test_select_without_checkpoints_rebuilds_the_same_tables(finished, tmp_path):
    """What docs/example-report commits: an output directory less its checkpoints and training states.
    select reuses each run's test.json and writes the tables exactly as the first select did."""
    import shutil

    _, out = finished
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("ckpt", "*.pt", "*.parquet"))
    pipeline.select(copy, quiet=True)
    for table in ("results.parquet", "curves.parquet", "epochs.parquet"):
        assert pl.read_parquet(copy / table).equals(pl.read_parquet(out / table)), table


@pytest.mark.slow
def test_intervals_and_comparisons(finished, tmp_path):
    """Every resampled column gets an interval around its value; comparisons pair the methods; a run
    scored before per-image statistics were kept, or `samples: 0`, gives none (issue 25)."""
    import shutil

    _, out = finished
    results = pl.read_parquet(out / "results.parquet")
    for column in ("pxap", "cl_acc", "tp", "miou", "dice_fg", "dice_fg_otsu"):
        low, high, value = results[f"{column}_ci_low"], results[f"{column}_ci_high"], results[column]
        assert low.is_not_null().all(), column
        assert ((low <= value + 1e-9) & (value <= high + 1e-9)).all(), column
    assert (results["pxap_ci_high"] > results["pxap_ci_low"]).all()
    comparisons = pl.read_parquet(out / "comparisons.parquet")
    assert set(comparisons["metric"]) == {"pxap", "cl_acc"} and comparisons.height == 4  # per rule, one pair
    row = comparisons.filter((pl.col("metric") == "pxap") & (pl.col("selection") == "b-loc")).row(0, named=True)
    pxap = {r["method"]: r["pxap"] for r in results.filter(pl.col("selection") == "b-loc").iter_rows(named=True)}
    assert row["difference"] == pytest.approx(pxap[row["method_a"]] - pxap[row["method_b"]])
    assert 0 <= row["p_improvement"] <= 1 and row["difference_ci_low"] <= row["difference"] <= row["difference_ci_high"]
    assert set(pl.read_parquet(out / "ranks.parquet").group_by("method", "selection", "metric").agg(
        pl.col("share").sum())["share"].round(9)) == {1.0}

    old = tmp_path / "old"  # as docs/example-report commits runs scored by earlier versions
    shutil.copytree(out, old, ignore=shutil.ignore_patterns("ckpt", "*.pt", "per-image", "*.parquet"))
    pipeline.select(old, quiet=True)
    again = pl.read_parquet(old / "results.parquet")
    assert again["pxap_ci_low"].is_null().all() and not (old / "comparisons.parquet").exists()
    assert again.select(RESULT_COLUMNS).equals(results.select(RESULT_COLUMNS))
    recipe = old / "recipe.resolved.yaml"
    recipe.write_text(recipe.read_text().replace("samples: 2000", "samples: 0"))
    pipeline.select(old, quiet=True)
    assert not any(c.endswith("_ci_low") for c in pl.read_parquet(old / "results.parquet").columns)


def test_select_refuses_unfinished_runs(tmp_path, tiny_recipe):
    out = tmp_path / "out"
    out.mkdir()
    import yaml

    from wsolctl.recipe import load_recipe

    (out / "recipe.resolved.yaml").write_text(yaml.safe_dump(load_recipe(tiny_recipe).resolved_dict()))
    with pytest.raises(FileNotFoundError, match="run `wsolctl train` first"):
        pipeline.select(out, quiet=True)


@pytest.mark.slow
def test_baseline_pxap_is_the_test_sets_foreground_fraction(finished):
    """The trivial all-foreground map's PxAP is the fraction of ROI pixels of the test masks, as
    evaluated (resized to the recipe's image size), counted here independently of the meter."""
    import torch

    from wsolctl.data.folds import read_split
    from wsolctl.data.images import FoldImages
    from wsolctl.recipe import load_recipe

    recipe, out = finished
    parsed = load_recipe(recipe)
    root = parsed.dataset.root
    test = FoldImages(root, read_split(root, parsed.dataset.fold, "test"), parsed.image_size)
    masks = torch.stack([test[i][2] for i in range(len(test))])
    fraction = 100.0 * masks.double().mean().item()
    assert 0 < fraction < 100
    baseline = pl.read_parquet(out / "results.parquet")["baseline_pxap"].unique()
    assert len(baseline) == 1 and baseline[0] == pytest.approx(fraction, rel=1e-9, abs=1e-9)


def test_cam_target_predicted_explains_the_predicted_class():
    """``evaluation.cam_target: predicted`` must change the maps: with a classifier that predicts
    class 1 for every image of class 0, the maps are class 1's, not the label's."""
    import torch

    from tests.conftest import build_model
    from wsolctl.engine.evaluate import evaluate
    from wsolctl.methods.cam import CAM

    model = build_model(CAM()).eval()
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([-100.0, 100.0]))  # always predicts class 1
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(4, dtype=torch.long)
    masks = torch.zeros(4, 32, 32, dtype=torch.bool)
    masks[:, 8:20, 8:20] = True

    class Spy(CAM):
        def cams(self, model, images, targets):
            maps = super().cams(model, images, targets)
            self.seen.append((targets.clone(), maps.clone()))
            return maps

    seen = {}
    for mode in ("ground-truth", "predicted"):
        spy = Spy()
        spy.seen = []
        scores = evaluate(model, {"cam": spy}, [(images, labels, masks)], torch.device("cpu"), accuracy=True,
                          localize=True, thresholds=100, cam_target=mode)
        assert scores.accuracy == 0.0
        (targets, maps), = spy.seen
        seen[mode] = targets, maps, scores.localization["cam"].pxap
    assert seen["ground-truth"][0].tolist() == [0, 0, 0, 0]
    assert seen["predicted"][0].tolist() == [1, 1, 1, 1]
    with torch.no_grad():
        class_maps = model(images).class_maps
    torch.testing.assert_close(seen["ground-truth"][1], class_maps[:, 0])
    torch.testing.assert_close(seen["predicted"][1], class_maps[:, 1])
    assert seen["ground-truth"][2] != seen["predicted"][2]

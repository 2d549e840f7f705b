"""The survey report from hand-made Parquet tables: known numbers (means, ± std, bold, pairs), method
order and groups, every figure, partial inputs, several directories, HTML. No training."""
import re

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from wsolctl import pipeline
from wsolctl.cli import app
from wsolctl.results import survey

PNG = b"\x89PNG\r\n\x1a\n"
# (method, backbone) -> B-LOC PxAP on folds 0 and 1; B-CL is 4 points lower, accuracy B-LOC 70 / B-CL 90
PXAP = {("gap", "resnet50-wsol"): (50.0, 54.0), ("cam", "resnet50-wsol"): (60.0, 64.0),
        ("cam", "vgg16-wsol"): (48.0, 52.0), ("gradcam", "resnet50-wsol"): (70.0, 70.0),
        ("thirdparty", "resnet50-wsol"): (30.0, 30.0), ("tscam", "deit-small"): (40.0, 44.0),
        ("scorecam", "resnet50-wsol"): (80.0, 80.0),  # beyond the survey: never in its tables
        ("unet", "resnet50-wsol"): (95.0, 97.0)}


def _rows(dataset: str, methods=None) -> list[dict]:
    rows = []
    for (method, backbone), values in PXAP.items():
        if methods and method not in methods:
            continue
        for fold, pxap in enumerate(values):
            for rule, shift, acc in (("b-loc", 0.0, 70.0), ("b-cl", -4.0, 90.0)):
                tp = pxap / 2 + fold  # arbitrary but known
                fp = 100 - pxap
                rows.append({"run_id": f"{method}-{backbone}-{fold}", "dataset": dataset, "fold": fold,
                             "backbone": backbone, "method": method, "params": "{}", "seed": 0, "selection": rule,
                             "epoch": 3 if rule == "b-loc" else 9, "pxap": pxap + shift, "tp": tp, "fn": 100 - tp,
                             "fp": fp, "tn": 100 - fp, "threshold": 0.2, "miou": pxap / 2, "cl_acc": acc,
                             "baseline_pxap": 40.0, "untrained_pxap": pxap / 2})
    return rows


def _study(out, dataset="glas", methods=None, curves=True, epochs=True, examples=True, comparisons=True):
    out.mkdir(parents=True)
    rows = _rows(dataset, methods)
    pl.DataFrame(rows).write_parquet(out / "results.parquet")
    thresholds = np.linspace(0, 0.99, 100)
    if curves:
        frames = [pl.DataFrame({"threshold": thresholds, "miou": 60 * np.exp(-3 * thresholds) + r["pxap"] / 10,
                                "precision": 0.5, "recall": 1 - thresholds, "tp": 0.0, "fn": 0.0, "fp": 0.0,
                                "tn": 0.0}).with_columns(**{k: pl.lit(r[k]) for k in
                                                            ("run_id", "dataset", "fold", "backbone", "seed",
                                                             "method", "selection")}) for r in rows]
        pl.concat(frames).write_parquet(out / "curves.parquet")
    if epochs:
        pl.DataFrame([{"run_id": r["run_id"], "dataset": dataset, "fold": r["fold"], "backbone": r["backbone"],
                       "seed": 0, "method": r["method"], "epoch": e, "valcl_acc": 50.0 + 5 * e,
                       "valpx_pxap": 60.0 - e, "train_loss": 1.0 / (e + 1), "lr": 0.01, "duration_s": 1.0}
                      for r in rows if r["selection"] == "b-loc" for e in range(10)]).write_parquet(out / "epochs.parquet")
    if examples:
        rng = np.random.default_rng(0)
        for r in rows:
            folder = out / "runs" / r["run_id"] / "examples"
            folder.mkdir(parents=True, exist_ok=True)
            masks = np.zeros((4, 16, 16), bool)
            masks[:, 4:12, 4:12] = True
            np.savez_compressed(folder / "images.npz", images=rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8),
                                masks=masks, labels=np.array([0, 0, 1, 1]), ids=np.array(["a", "b", "c", "d"]))
            np.savez_compressed(folder / f"{r['method']}__{r['selection']}.npz",
                                cams=rng.integers(0, 255, (4, 16, 16), dtype=np.uint8))
            # the class names a run records from its data's encoding.yaml
            (folder.parent / "done.json").write_text('{"classes": {"gland-free": 0, "adenocarcinoma": 1}}')
    if comparisons:
        _uncertainty(out, rows)
    return out


def _uncertainty(out, rows):
    """comparisons.parquet and ranks.parquet as select writes them, from replicates scattered around
    each B-LOC row's PxAP (first fold)."""
    from itertools import combinations

    from wsolctl.results import bootstrap

    rng = np.random.default_rng(0)
    first = [r for r in rows if r["selection"] == "b-loc" and r["fold"] == min(x["fold"] for x in rows)]
    comparisons, ranks = [], []
    for backbone in sorted({r["backbone"] for r in first}):
        mine = sorted((r for r in first if r["backbone"] == backbone), key=lambda r: r["method"])
        values = {r["method"]: r["pxap"] + rng.normal(0, 3, 200) for r in mine}
        for a, b in combinations(sorted(values), 2):
            comparisons.append({"dataset": mine[0]["dataset"], "backbone": backbone, "selection": "b-loc",
                                "metric": "pxap", "method_a": a, "method_b": b,
                                **bootstrap.difference(values[a], values[b], 0.95)})
        ranked = bootstrap.ranks(np.stack(list(values.values())))
        for k, method in enumerate(values):
            found, counts = np.unique(ranked[k], return_counts=True)
            ranks += [{"dataset": mine[0]["dataset"], "backbone": backbone, "selection": "b-loc", "metric": "pxap",
                       "method": method, "rank": int(f), "share": c / 200} for f, c in zip(found, counts)]
    if comparisons:  # select writes none without a pair of methods
        pl.DataFrame(comparisons).write_parquet(out / "comparisons.parquet")
        pl.DataFrame(ranks).write_parquet(out / "ranks.parquet")


def _row(report: str, label: str, title_part: str) -> list[str]:
    """The cells of ``label``'s row in the first table whose title contains ``title_part``."""
    section = report[report.index(title_part):]
    section = section[: section.index("\n\n", section.index("|"))]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"{label} not in {title_part}")


def _pngs(out, names):
    for name in names:
        data = (out / "figures" / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = _study(tmp_path_factory.mktemp("report") / "glas")
    pipeline.report(out)
    return out, (out / "report.md").read_text()


def test_table1_means_std_bold_and_average(full):
    _, report = full
    table1 = "PxAP, B-LOC selection (survey Table 1)"
    assert "| method | VGG16 | ResNet50 | DeiT-S | mean over backbones |" in report
    # cam: ResNet50 folds 60, 64 → 62.0 ± 2.8 (sample std); VGG16 48, 52 → 50.0 ± 2.8; mean of both 56.0
    assert _row(report, "cam", table1) == ["**50.0 ± 2.8**", "62.0 ± 2.8", "–", "56.0"]
    assert _row(report, "gradcam", table1) == ["–", "**70.0 ± 0.0**", "–", "**70.0**"]  # 2 equal folds
    assert _row(report, "tscam", table1) == ["–", "–", "**42.0 ± 2.8**", "42.0"]
    # WSOL average (bottom-up + top-down + the installed kinds; not U-Net, not unknown kinds)
    assert _row(report, "*WSOL average*", table1) == ["50.0", f"{(52 + 62 + 70) / 3:.1f}", "42.0",
                                                      f"{(52 + 56 + 42 + 70) / 4:.1f}"]
    assert _row(report, "unet", table1) == ["–", "96.0 ± 1.4", "–", "96.0"]  # never bold


def test_method_order_and_groups(full):
    _, report = full
    section = report[report.index("survey Table 1"):report.index("survey Tables 2–3")]
    labels = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert labels == ["method", "*Bottom-up WSOL*", "gap", "cam", "tscam", "*Top-down WSOL*", "gradcam",
                      "*WSOL average*", "*Fully supervised*", "unet", "*reference: all-foreground map*",
                      "*reference: untrained model (epoch 0)*"]
    assert [m for _, ms in survey.grouped_methods(["unet", "iscam", "maxmin", "gap", "gradcam"]) for m in ms] == \
        ["gap", "maxmin", "gradcam", "iscam", "unet"]


def test_methods_beyond_the_survey_have_their_own_group(full):
    _, report = full
    beyond = report[report.index("## Beyond the survey"):report.index("## All metrics")]
    assert report.index("survey Table 5") < report.index("## Beyond the survey")  # after the survey's tables
    section = beyond[beyond.index("Beyond the survey: PxAP, B-LOC selection, `glas`"):]
    section = section[: section.index("\n\n", section.index("|"))]
    labels = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert labels == ["method", "*Top-down WSOL*", "scorecam", "*Other (kind unknown: plugin not installed)*",
                      "thirdparty", "*reference: all-foreground map*", "*reference: untrained model (epoch 0)*"]
    assert _row(report, "scorecam", "Beyond the survey: PxAP, B-LOC selection") == ["**80.0 ± 0.0**", "**80.0**"]
    assert "Beyond the survey: Classification accuracy, B-LOC / B-CL selection, `glas`" in beyond
    # declared on the class itself: Score-CAM subclasses CAM (a survey method) and is not the survey's
    assert survey.in_survey("cam") and survey.in_survey("gradcam") and survey.in_survey("unet[1]")
    assert not survey.in_survey("scorecam") and not survey.in_survey("thirdparty")
    assert survey.families(["thirdparty", "unet", "scorecam", "gap", "gradcam"]) == [
        ("Bottom-up WSOL", ["gap"]), ("Top-down WSOL", ["gradcam"]), ("Fully supervised", ["unet"]),
        ("Beyond the survey: Top-down WSOL", ["scorecam"]),
        ("Beyond the survey: Other (kind unknown: plugin not installed)", ["thirdparty"])]


def test_reference_rows_of_the_pxap_tables(full, tmp_path):
    """The all-foreground map and the untrained models (mean over the WSOL methods of a column) follow
    every method in both PxAP tables, in no average and never bold; without untrained scores: –."""
    _, report = full
    table1, table4 = "PxAP, B-LOC selection (survey Table 1)", "PxAP, B-LOC / B-CL selection (survey Table 4)"
    foreground, untrained = "*reference: all-foreground map*", "*reference: untrained model (epoch 0)*"
    assert _row(report, foreground, table1) == ["40.0"] * 4
    # untrained = PxAP / 2 per fold: VGG16 cam 25; ResNet50 gap 26, cam 31, gradcam 35; DeiT-S tscam 21
    expected = ["25.0", f"{(26 + 31 + 35) / 3:.1f}", "21.0", f"{(25 + 26 + 31 + 35 + 21) / 5:.1f}"]
    assert _row(report, untrained, table1) == expected
    assert _row(report, untrained, table4) == expected  # one value: they do not depend on the rule
    assert _row(report, foreground, "Beyond the survey: PxAP, B-LOC selection") == ["40.0", "40.0"]
    assert "Reference rows, in no average and no ranking" in report
    assert "reference" not in report[report.index("Confusion components"):report.index("survey Table 4")]
    out = tmp_path / "old"
    out.mkdir()
    pl.DataFrame(_rows("glas")).drop("untrained_pxap").write_parquet(out / "results.parquet")
    pipeline.report(out)
    assert _row((out / "report.md").read_text(), untrained, table1) == ["–"] * 4  # runs without epoch-0 checkpoints


def test_confusion_bold_lower_is_better(full):
    _, report = full
    title = "Confusion components, B-LOC selection"
    # ResNet50 columns TP*, FN*, FP*, TN*: gradcam has the highest TP* (35.5), lowest FN* and FP*
    assert _row(report, "gradcam", title)[4:8] == ["**35.5 ± 0.7**", "**64.5 ± 0.7**", "**30.0 ± 0.0**", "**70.0 ± 0.0**"]
    assert _row(report, "gap", title)[4:8] == ["26.5 ± 2.1", "73.5 ± 2.1", "48.0 ± 2.8", "52.0 ± 2.8"]


def test_selection_pairs(full):
    _, report = full
    pxap = _row(report, "cam", "PxAP, B-LOC / B-CL selection (survey Table 4)")
    assert pxap[:2] == ["**50.0 ± 2.8** / **46.0 ± 2.8**", "62.0 ± 2.8 / 58.0 ± 2.8"]
    assert pxap[3] == "56.0 / 52.0"
    accuracy = _row(report, "gradcam", "Classification accuracy, B-LOC / B-CL selection (survey Table 5)")
    assert accuracy[1] == "**70.0 ± 0.0** / **90.0 ± 0.0**"
    # the survey selects the U-Net (and NEGEV) by B-LOC only: its B-CL is marked as an extension
    assert _row(report, "unet †", "PxAP, B-LOC / B-CL selection (survey Table 4)")
    assert "†: B-CL is an extension of this tool; the survey selects that method by B-LOC only" in report


def test_every_figure_rendered(full):
    out, report = full
    names = ["threshold-sensitivity.png", "model-selection.png", "training-curves.png",
             "qualitative-glas-0.png", "qualitative-glas-1.png", "significance-glas.png", "ranking-stability.png"]
    _pngs(out, names)
    for name in names:
        assert f"(figures/{name})" in report
    assert "skipped" not in report
    assert "trivial baseline" in report and "B-LOC selection" in report
    assert "`glas`, gland-free test images" in report and "`glas`, adenocarcinoma test images" in report


def test_partial_set_of_methods(tmp_path):
    out = _study(tmp_path / "one", methods={"gradcam"})
    pipeline.report(out)
    report = (out / "report.md").read_text()
    assert _row(report, "gradcam", "survey Table 1") == ["**70.0 ± 0.0**", "**70.0**"]
    assert "WSOL average" not in report and "Bottom-up" not in report
    _pngs(out, ["threshold-sensitivity.png", "model-selection.png", "qualitative-glas-0.png"])


def test_results_only_directory(tmp_path):
    source = _study(tmp_path / "src", curves=False, epochs=False, examples=False, comparisons=False)
    out = tmp_path / "report"
    path = pipeline.report(source, out)
    report = path.read_text()
    for number in ("Table 1", "Tables 2–3", "Table 4", "Table 5"):
        assert f"(survey {number})" in report
    assert "threshold sensitivity skipped" in report and "training curves skipped" in report
    assert "qualitative grids of `glas` skipped" in report and "significance maps and ranking stability skipped" in report
    _pngs(out, ["model-selection.png"])
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["model-selection.png"]
    assert list(source.iterdir()) == [source / "results.parquet"]  # the source is left alone


def test_merge_several_directories(tmp_path):
    glas = _study(tmp_path / "glas", "glas")
    camelyon = _study(tmp_path / "camelyon", "camelyon16", curves=False)
    out = tmp_path / "merged"
    result = CliRunner().invoke(app, ["report", str(glas), str(camelyon), str(glas), "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert report.index("Dataset `glas`") < report.index("Dataset `camelyon16`")
    assert "62.0 ± 2.8" in _row(report, "cam", "Table 1), `camelyon16`")  # glas given twice: still 2 folds
    assert "62.0 ± 2.8" in _row(report, "cam", "Table 1), `glas`")
    assert f"curves.parquet not found in `{camelyon}`" in report  # partial input: noted
    _pngs(out, ["threshold-sensitivity.png", "qualitative-glas-1.png", "qualitative-camelyon16-1.png"])
    assert not (glas / "report.md").exists()
    refused = CliRunner().invoke(app, ["report", str(glas), str(camelyon)])
    assert refused.exit_code == 2 and "--out" in refused.output


def test_html_is_one_self_contained_file(tmp_path):
    source = _study(tmp_path / "src")
    out = tmp_path / "html"
    result = CliRunner().invoke(app, ["report", str(source), "--out", str(out), "--format", "html"])
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert not (out / "report.md").exists()
    assert page.count("data:image/png;base64,") == 7 and 'src="figures/' not in page
    assert "<table>" in page and "<strong>62.0 ± 2.8</strong>" not in page  # cam is not best on ResNet50
    assert "<td><strong>50.0 ± 2.8</strong></td>" in page and "<td><em>WSOL average</em></td>" in page
    assert "<code>glas</code>" in page and "**" not in page
    assert re.search(r"<h3>PxAP, B-LOC selection \(survey Table 1\), <code>glas</code></h3>", page)
    bad = CliRunner().invoke(app, ["report", str(source), "--format", "pdf"])
    assert bad.exit_code == 2


def test_missing_results_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "results.parquet: not found" in result.output


def test_only_the_report_is_written(full):
    out, _ = full
    assert sorted(p.name for p in out.iterdir()) == [
        "comparisons.parquet", "curves.parquet", "epochs.parquet", "figures", "ranks.parquet", "report.md",
        "results.parquet", "runs"]


RECIPES = __import__("pathlib").Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("name, dataset, epochs, step", [("glas", "glas", 1000, 250), ("camelyon16", "camelyon16", 20, 5)])
def test_paper_recipes_encode_the_protocol(name, dataset, epochs, step):
    from wsolctl.recipe import load_recipe

    result = CliRunner().invoke(app, ["validate", str(RECIPES / "paper" / f"{name}.yaml")])
    # valid; the real data is not on this machine, which validate reports (one line) unless it is there
    assert result.exit_code == 0 or (result.exit_code == 2 and result.output.count("\n") == 1
                                     and ": dataset.root: " in result.output), result.output
    recipe = load_recipe(RECIPES / "paper" / f"{name}.yaml")
    assert recipe.dataset.name == dataset and recipe.image_size == 224 and recipe.selection == ["b-loc", "b-cl"]
    assert (recipe.train.epochs, recipe.train.scheduler.step_size, recipe.train.batch_size) == (epochs, step, 32)
    assert recipe.sweep.search == "table7" and recipe.sweep.grid == {"train.lr": [0.1, 0.01, 0.001]}
    assert recipe.sweep.folds == [0, 1, 2, 3, 4] and recipe.executor.gpus_per_run == 1
    backbones = {m.name: m.backbones for m in recipe.methods}
    assert backbones["tscam"] == ["deit-tiny", "deit-small", "deit-base"]
    assert backbones["cam"] == ["vgg16-wsol", "inceptionv3-wsol", "resnet50-wsol"] == backbones["unet"]
    order = [m for _, ms in survey.families(backbones) for m in ms]
    assert [m.name for m in recipe.methods] == order  # the survey's order, then the methods beyond it
    assert {"pixelcam", "sat"} <= set(backbones) and backbones["sat"] == backbones["tscam"]
    tscam = next(m for m in recipe.methods if m.name == "tscam")
    assert recipe.train_of(tscam).optimizer.lr_classifier_ratio == 1  # the reference: one lr for every parameter
    unet = next(m for m in recipe.methods if m.name == "unet")
    assert unet.params.classifier == "probe"  # the reference's U-Net: no cross-entropy through the encoder


@pytest.mark.parametrize("name", ["synthetic-study", "synthetic-study-camelyon", "beyond-survey"])
def test_synthetic_study_recipes_validate(name):
    result = CliRunner().invoke(app, ["validate", str(RECIPES / f"{name}.yaml")])
    assert result.exit_code == 0, result.output


def test_beyond_survey_recipe_runs_the_methods_beyond_the_survey():
    from wsolctl.recipe import load_recipe

    recipe = load_recipe(RECIPES / "beyond-survey.yaml")
    names = [m.name for m in recipe.methods]
    ours, beyond = survey.split_survey(names)
    assert ours == ["cam"]  # the reference run PixelCAM starts from
    assert {"pixelcam", "sat", "scorecam", "sscam", "iscam", "ablationcam"} <= set(beyond)
    assert recipe.dataset.name == "synthetic-glas" and recipe.device == "cpu"
    on_deit = [m for m in recipe.methods if m.name in ("pixelcam", "sat") and m.backbones == ["deit-tiny"]]
    assert len(on_deit) == 2 and all(recipe.train_of(m).optimizer.lr_classifier_ratio == 1 for m in on_deit)


def test_qualitative_grid_wraps_by_family(tmp_path):
    """40 methods: at most 8 maps per row, a family never shares a row, every map drawn."""
    from PIL import Image

    from wsolctl.results import figures

    sizes = {"Bottom-up WSOL": 15, "Top-down WSOL": 5, "Fully supervised": 1, "Beyond the survey: Bottom-up WSOL": 2,
             "Beyond the survey: Top-down WSOL": 17}
    rng = np.random.default_rng(0)
    columns = [figures.MapColumn(f"{family[:3]}{i}", family, rng.integers(0, 255, (4, 16, 16), dtype=np.uint8), 0.5)
               for family, n in sizes.items() for i in range(n)]
    rows = figures._grid_rows(columns, 8)
    assert [(family, len(maps)) for family, maps in rows] == [
        ("Bottom-up WSOL", 8), ("Bottom-up WSOL", 7), ("Top-down WSOL", 5), ("Fully supervised", 1),
        ("Beyond the survey: Bottom-up WSOL", 2), ("Beyond the survey: Top-down WSOL", 8),
        ("Beyond the survey: Top-down WSOL", 8), ("Beyond the survey: Top-down WSOL", 1)]
    masks = np.zeros((4, 16, 16), bool)
    masks[:, 4:12, 4:12] = True
    examples = {"images": rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), "masks": masks,
                "labels": np.array([0, 0, 1, 1]), "ids": np.array(["a", "b", "c", "d"])}
    path = figures.qualitative(examples, columns, 1, tmp_path / "q.png", "glas: class 1")
    width, height = Image.open(path).size
    panel = figures.PANEL_INCHES * figures.QUALITATIVE_DPI
    assert width <= 8.5 * panel and height >= 2 * 9 * panel  # 8 columns; 2 images × (1 + 8 rows)
    assert width >= 8 * 180  # thumbnails of ≥ 160 px once titles and margins are taken


def test_figures_fit_a_screen_and_tell_their_lines_apart(tmp_path):
    """23 methods on two datasets: the training curves are one sheet of small multiples grouped by
    family that fits a 1920 × 1080 screen; the threshold-sensitivity lines of a family each get their
    own colour."""
    from PIL import Image

    from wsolctl.results import figures

    methods = ["gap", "maxpool", "lse", "cam", "has", "wildcat", "acol", "spg", "deepmil", "prm", "adl", "cutmix",
               "tscam", "maxmin", "negev", "gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "layercam", "unet",
               "scorecam", "ablationcam"]
    epochs = pl.DataFrame([{"dataset": d, "backbone": "deit-tiny" if m == "tscam" else "resnet18-wsol", "method": m,
                            "fold": 0, "seed": 0, "epoch": e, "valcl_acc": 50.0 + e, "valpx_pxap": 40.0 + i}
                           for d in ("glas", "camelyon") for i, m in enumerate(methods) for e in range(4)])
    results = epochs.filter(pl.col("epoch") == 2).with_columns(selection=pl.lit("b-loc"))
    width, height = Image.open(figures.training_curves(epochs, results, tmp_path / "t.png")).size
    assert width <= 1920 and height <= 1080
    bottom_up = [m for family, ms in survey.families(methods) if family == "Bottom-up WSOL" for m in ms]
    assert len(bottom_up) == 15 and len(set(figures._family_colours(bottom_up)[:15])) == 15


def test_intervals_beside_single_run_values(tmp_path):
    """A key with one run shows its bootstrap interval beside the value (bold stays on the value);
    several runs show mean ± sd; a null interval shows the value alone (issue 25)."""
    out = _study(tmp_path / "glas", curves=False, epochs=False, examples=False, comparisons=False)
    results = pl.read_parquet(out / "results.parquet")
    single = results.filter(pl.col("fold") == 0)
    interval = pl.when(pl.col("method") == "gap").then(None).otherwise(pl.col("pxap"))
    single.with_columns(pxap_ci_low=interval - 3, pxap_ci_high=interval + 2).write_parquet(out / "results.parquet")
    report = (pipeline.report(out)).read_text()
    row = _row(report, "cam", "PxAP, B-LOC selection (survey Table 1)")
    assert row[0] == "**48.0** [45.0, 50.0]" and row[-1] == "54.0"  # the mean over backbones: no interval
    assert _row(report, "gap", "PxAP, B-LOC selection (survey Table 1)")[0].count("[") == 0
    assert "[" not in "".join(_row(report, "cam", "Confusion components"))

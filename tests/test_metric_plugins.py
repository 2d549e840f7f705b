"""Metrics are plugins (``wsolctl.metrics`` entry points): the built-ins declare what the schema, the
evaluation, the selection and the report read, and a metric the project does not ship — one file
(tests/plugins/energy) and one entry-point line — reaches results.parquet and the report."""
from pathlib import Path

import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.conftest import plugins_on_path
from wsolctl import metrics
from wsolctl.engine.evaluate import evaluate
from wsolctl.errors import UnknownPlugin
from wsolctl.metrics import BUILT_IN_COLUMNS, Column, Metric

ENERGY = Path(__file__).parent / "plugins" / "energy"


@pytest.fixture
def energy():
    with plugins_on_path(ENERGY) as folder:
        yield folder


def test_built_in_metrics_are_registered_like_third_parties():
    from wsolctl import plugins

    registered = plugins.registered("metrics")
    assert {"dice", "maxboxacc-v2", "pointing-game", "deletion", "insertion", "road"} <= set(registered)
    assert all(ep.dist.name == "wsolctl" for name, ep in registered.items())
    assert metrics.names()[0] == metrics.BUILT_IN == "pxap"
    installed = metrics.installed()
    assert [m.name for m in installed][:2] == ["dice", "maxboxacc-v2"]  # survey_rank, not the name
    columns = [c.name for m in installed for c in m.columns]
    assert len(columns) == len(set(columns)) and not set(columns) & set(BUILT_IN_COLUMNS)
    for metric in installed:
        assert metric.columns and all(c.unit for c in metric.columns)
        assert {t.column for t in metric.tables} <= {c.name for c in metric.columns}
    assert {m.name for m in installed if m.forward_passes} == {"deletion", "insertion", "road"}


def test_the_package_names_no_metric_outside_the_metric_plugins():
    """Schema, evaluation, selection and report read the registry: no plugin's name or column there."""
    package = Path(metrics.__file__).parents[1]
    plugin_words = {m.name for m in metrics.installed()} | {c.name for m in metrics.installed() for c in m.columns}
    plugin_words -= {"dice"}  # also a word of the docs (Dice of the predictions, issue 14's U-Net loss)
    readers = ["recipe/schema.py", "recipe/evaluation.py", "engine/evaluate.py", "engine/final_test.py", "results/survey.py", "results/report.py",
               "results/tables.py", "results/compare.py"]
    for name in readers:
        text = (package / name).read_text()
        found = sorted(w for w in plugin_words if f'"{w}"' in text or f"'{w}'" in text)
        assert not found, f"{name} names metrics {found}"


class _Probe(Metric):
    """A metric recording what its meter is given."""

    name = "probe"
    columns = (Column("probe", "probe"),)
    seen: list = []

    @classmethod
    def meter(cls, context):
        cls.seen.append(context.model)
        return _ProbeMeter(cls.columns[0].name)


class _ProbeMeter:
    def __init__(self, column: str):
        self.column, self.images = column, 0

    def update(self, maps, masks, images, targets):
        self.images += len(maps)

    def compute(self):
        return {self.column: float(self.images)}


class _FixedMaps:
    map_kind = "cam"

    def cams(self, model, images, targets):
        return images[:, 0]


class _Classifier(torch.nn.Module):
    def forward(self, x):
        from types import SimpleNamespace

        return SimpleNamespace(logits=torch.stack([x.mean(dim=(1, 2, 3)), -x.mean(dim=(1, 2, 3))], dim=1))


def _evaluate(metric_list):
    torch.manual_seed(0)
    images, labels = torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 0, 1, 1])
    masks = torch.rand(5, 8, 8) > 0.5
    loader = DataLoader(TensorDataset(images, labels, masks), batch_size=2)
    model = _Classifier()
    return model, evaluate(model, {"m": _FixedMaps()}, loader, torch.device("cpu"), accuracy=True, localize=True,
                           thresholds=10, metrics=metric_list, settings=None)


def test_only_metrics_that_declare_forward_passes_get_the_model():
    class WithModel(_Probe):
        name = "with-model"
        columns = (Column("with_model", "with model"),)
        forward_passes = True
        seen: list = []

    _Probe.seen = []
    model, scores = _evaluate([_Probe, WithModel])
    assert _Probe.seen == [None] and WithModel.seen == [model]
    assert scores.metrics["m"] == {"probe": 5.0, "with_model": 5.0}  # every image of the split, once


def test_a_meter_must_give_exactly_the_declared_columns():
    class Liar(_Probe):
        name = "liar"
        columns = (Column("declared", "declared"),)

        @classmethod
        def meter(cls, context):
            return _ProbeMeter("probe")

    with pytest.raises(UnknownPlugin, match="metric 'liar' computed columns \\['probe'\\], but declares \\['declared'\\]"):
        _evaluate([Liar])


def test_declarations_that_clash_are_refused(monkeypatch):
    from wsolctl import plugins

    class Shadow(_Probe):
        columns = (Column("pxap", "PxAP again"),)

    class Twin(_Probe):
        columns = (Column("pointing_game", "pointing again"),)

    fake = {"shadow": Shadow, "twin": Twin}
    real = plugins.load
    monkeypatch.setattr(plugins, "load", lambda kind, name: fake[name] if name in fake else real(kind, name))
    with pytest.raises(UnknownPlugin, match="metric 'shadow' declares built-in columns \\['pxap'\\]"):
        metrics.load("shadow")
    with pytest.raises(UnknownPlugin, match="both declare column 'pointing_game'"):
        metrics.chosen(["pxap", "pointing-game", "twin"])


def test_a_third_party_metric_is_a_recipe_name_and_a_report_table(energy, tiny_recipe):
    from wsolctl.recipe import RecipeError, load_recipe
    from wsolctl.results import survey

    recipe = load_recipe(tiny_recipe, ["evaluation.metrics=[pxap, energy-pointing]"])
    assert recipe.evaluation.metrics == ["pxap", "energy-pointing"]
    with pytest.raises(RecipeError, match="unknown metric 'energy-pointin'; did you mean 'energy-pointing'"):
        load_recipe(tiny_recipe, ["evaluation.metrics=[energy-pointin]"])
    rows = pl.DataFrame([{"dataset": "glas", "backbone": "resnet50-wsol", "method": m, "selection": "b-loc",
                          "pxap": 50.0, "energy_pointing": v} for m, v in (("cam", 70.0), ("gradcam", 30.0))])
    ((_, tables),) = survey.dataset_tables(rows)
    (table,) = [t for t in tables if t.title.startswith("Energy pointing game, B-LOC selection")]
    assert {row[0]: row[1] for row in table.rows}["cam"] == "**70.0**"


def test_without_the_plugin_its_name_is_refused_and_its_column_gets_no_table(tiny_recipe):
    from wsolctl.recipe import RecipeError, load_recipe
    from wsolctl.results import survey

    with pytest.raises(RecipeError, match="unknown metric 'energy-pointing'"):
        load_recipe(tiny_recipe, ["evaluation.metrics=[pxap, energy-pointing]"])
    rows = pl.DataFrame([{"dataset": "glas", "backbone": "resnet50-wsol", "method": "cam", "selection": "b-loc",
                          "pxap": 50.0, "energy_pointing": 70.0}])
    ((_, tables),) = survey.dataset_tables(rows)
    assert not [t for t in tables if "Energy" in t.title]


@pytest.mark.slow
def test_a_third_party_metric_reaches_results_and_report(energy, tmp_path, tiny_recipe):
    """One file and one entry-point line: the metric is scored on test, is a results.parquet column and
    a report table."""
    from wsolctl import pipeline

    assert [p.name for p in ENERGY.glob("*.py")] == ["wsolctl_test_energy.py"]
    entry_points = (next(ENERGY.glob("*.dist-info")) / "entry_points.txt").read_text().split("\n")
    assert [line for line in entry_points if "=" in line] == ["energy-pointing = wsolctl_test_energy:EnergyPointing"]
    out = tmp_path / "out"
    pipeline.run(tiny_recipe, out, ["methods=[{name: cam}]", "evaluation.metrics=[pxap, energy-pointing]"], quiet=True)
    results = pl.read_parquet(out / "results.parquet")
    values = results["energy_pointing"].to_list()
    assert len(values) == 2 and all(0 < v < 100 for v in values)
    report = (out / "report.md").read_text()
    assert "### Energy pointing game, B-LOC selection, `synthetic-glas`" in report
    header = next(line for line in report.splitlines() if line.startswith("| dataset | backbone | method | n | epoch"))
    assert "energy pointing" in header


def test_the_metric_catalog_lists_built_in_and_plugins(energy):
    from wsolctl.catalog import metric_catalog

    rows = {row["name"]: row for row in metric_catalog()}
    assert list(rows)[0] == "pxap" and rows["pxap"]["columns"]["threshold"] == "[0, 1], or 2 = predict nothing"
    assert rows["deletion"]["forward_passes"] and not rows["dice"]["forward_passes"]
    assert rows["energy-pointing"]["package"] == "wsolctl-test-energy 0.1"
    assert rows["energy-pointing"]["columns"] == {"energy_pointing": "%"}


def test_a_metric_gets_its_params_from_the_recipe(tiny_recipe):
    from types import SimpleNamespace

    from pydantic import BaseModel, ConfigDict

    from wsolctl.recipe import RecipeError, load_recipe

    class ScaleParams(BaseModel):
        model_config = ConfigDict(extra="forbid")
        scale: float = 1.0

    class Scaled(_Probe):
        name = "scaled"
        Params = ScaleParams
        given: list = []

        @classmethod
        def meter(cls, context):
            cls.given.append(context.params)
            return _ProbeMeter(cls.columns[0].name)

    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]), torch.rand(2, 8, 8) > 0.5))
    for settings, scale in ((SimpleNamespace(metric_params={"scaled": {"scale": 3}}), 3.0), (None, 1.0)):
        evaluate(_Classifier(), {"m": _FixedMaps()}, loader, torch.device("cpu"), accuracy=False, localize=True,
                 thresholds=10, metrics=[Scaled], settings=settings)
        assert Scaled.given.pop() == ScaleParams(scale=scale)
    with pytest.raises(RecipeError, match="evaluation.metric_params: 'dice' is not in evaluation.metrics"):
        load_recipe(tiny_recipe, ["evaluation.metrics=[pxap]", "evaluation.metric_params={dice: {}}"])
    with pytest.raises(RecipeError, match="evaluation.metric_params: dice.x: Extra inputs are not permitted"):
        load_recipe(tiny_recipe, ["evaluation.metrics=[pxap, dice]", "evaluation.metric_params={dice: {x: 1}}"])


def test_built_in_metric_settings_are_their_params_and_the_old_keys_still_load(tiny_recipe):
    from wsolctl.engine.plan import same_test_settings, test_settings
    from wsolctl.metrics import PxAP
    from wsolctl.recipe import load_recipe

    listed = "evaluation.metrics=[pxap, maxboxacc-v2, deletion, road]"
    new = load_recipe(tiny_recipe, [listed, "evaluation.metric_params={maxboxacc-v2: {thresholds: 20}}"])
    with pytest.warns(FutureWarning, match="evaluation.box_thresholds is deprecated: use "
                                           "evaluation.metric_params.maxboxacc-v2.thresholds"):
        old = load_recipe(tiny_recipe, [listed, "evaluation.box_thresholds=20", "evaluation.faithfulness_steps=16"])
    assert old.evaluation.metric_params == {"maxboxacc-v2": {"thresholds": 20}, "deletion": {"steps": 16}}
    import warnings

    with warnings.catch_warnings():  # the old keys at their defaults (an earlier recipe.resolved.yaml): no warning
        warnings.simplefilter("error", FutureWarning)
        assert load_recipe(tiny_recipe, [listed, "evaluation.box_thresholds=100"]).evaluation.metric_params == {
            "maxboxacc-v2": {"thresholds": 100}}
    assert old == new.model_copy(update={"evaluation": old.evaluation})
    # a test.json of an earlier version (the old keys, every one at its value) is the same test
    recorded = {**test_settings(new), "metric_params": {}, "box_thresholds": 20, "faithfulness_steps": 16,
                "road_percentiles": [10, 20, 30, 40, 50, 60, 70, 80, 90]}
    assert same_test_settings(recorded, test_settings(new))
    assert not same_test_settings({**recorded, "box_thresholds": 30}, test_settings(new))
    assert metrics.declared()[0] is PxAP and PxAP.columns[0].name == "pxap"
    from wsolctl.errors import RecipeError

    with pytest.raises(RecipeError, match="percentiles"):
        load_recipe(tiny_recipe, ["evaluation.metrics=[pxap, road]",
                                  "evaluation.metric_params={road: {percentiles: [50, 10]}}"])

"""Experiment trackers (recipe: tracking): the values they hold, read back with MLflow's client and
TensorBoard's event reader, equal epochs.parquet; a failing tracker warns once and fails nothing;
tracking is not part of run ids."""
import math
import warnings

import polars as pl
import pytest

from wsolctl.errors import TrackerWarning
from wsolctl.recipe import load_recipe

TRACKING = ["tracking=[{name: mlflow}, {name: tensorboard}]"]


def _expected(out) -> dict[tuple[str, str], dict[int, float]]:
    """(run id, "<method>/<column>") -> {epoch: value} of every finite number in epochs.parquet."""
    frame = pl.read_parquet(out / "epochs.parquet")
    skip = {"run_id", "dataset", "fold", "backbone", "seed", "method", "epoch"}
    expected: dict = {}
    for row in frame.iter_rows(named=True):
        for key, value in row.items():
            if key not in skip and isinstance(value, (int, float)) and math.isfinite(value):
                expected.setdefault((row["run_id"], f"{row['method']}/{key}"), {})[row["epoch"]] = value
    return expected


@pytest.mark.slow
def test_mlflow_and_tensorboard_hold_epochs_parquet(tiny_recipe, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from wsolctl import pipeline

    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrackerWarning)
        pipeline.run(load_recipe(tiny_recipe, TRACKING), out, quiet=True)
    expected = _expected(out)
    run_ids = {run_id for run_id, _ in expected}
    assert expected and run_ids

    client = MlflowClient(f"sqlite:///{out.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny").experiment_id
    (parent,) = client.search_runs([experiment], f"tags.`wsolctl.out` = '{out.resolve()}'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {c.data.tags["wsolctl.run_id"] for c in children} == run_ids
    for child in children:
        run_id = child.data.tags["wsolctl.run_id"]
        assert child.data.params["run_id"] == run_id and child.data.params["backbone.name"] == "resnet18-wsol"
        assert child.data.params["train.epochs"] == "1"
        for (rid, key), values in expected.items():
            if rid == run_id:
                history = client.get_metric_history(child.info.run_id, key)
                assert {m.step: m.value for m in history} == pytest.approx(values), key
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.parquet", "report.md", "figures"} <= artifacts

    for run_id in run_ids:
        events = EventAccumulator(str(out / "tensorboard" / run_id))
        events.Reload()
        for (rid, key), values in expected.items():
            if rid == run_id:
                assert {e.step: e.value for e in events.Scalars(key)} == pytest.approx(values, rel=1e-6), key

    # a second command on the same output directory logs nothing twice
    pipeline.run(load_recipe(tiny_recipe, TRACKING), out, quiet=True)
    again = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(again) == len(children)
    assert len(client.search_runs([experiment], f"tags.`wsolctl.out` = '{out.resolve()}'")) == 1


def test_tracking_is_not_part_of_run_ids(tiny_recipe):
    from wsolctl.engine.study import Study

    plain = [r.run_id for r in Study.plan(load_recipe(tiny_recipe)).search.runs]
    tracked = [r.run_id for r in Study.plan(load_recipe(tiny_recipe, TRACKING)).search.runs]
    assert plain == tracked


def test_a_failing_tracker_warns_once_and_is_left_out(tiny_recipe, tmp_path):
    pytest.importorskip("mlflow")
    from wsolctl.tracking import TrackedRun, Trackers

    recipe = load_recipe(tiny_recipe, ["tracking=[{name: mlflow, params: {tracking_uri: 'nowhere://x'}}]"])
    with pytest.warns(TrackerWarning, match="tracker 'mlflow' failed") as caught:
        trackers = Trackers(recipe, tmp_path)
        for _ in range(3):
            trackers.each("log_run", TrackedRun("r", "r", "final", {}, []))
        trackers.close()
    assert len([w for w in caught if issubclass(w.category, TrackerWarning)]) == 1
    assert trackers.active == []


def test_an_unknown_tracker_is_a_recipe_error(tiny_recipe):
    from wsolctl.errors import RecipeError

    with pytest.raises(RecipeError, match=r"tracking\[0\]\.name: unknown tracker .*did you mean 'mlflow'"):
        load_recipe(tiny_recipe, ["tracking=[{name: mlflfow}]"])

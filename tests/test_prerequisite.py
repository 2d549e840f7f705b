"""Methods built on another trained model (e.g. NEGEV on CAM): trained first, once, handed over."""
import json
from importlib.metadata import EntryPoint

import polars as pl
import pytest
import torch

from wsolctl import pipeline, plugins
from wsolctl.methods.cam import CAM

RECEIVED = []


class FromCAM(CAM):
    """Fine-tunes CAM's selected classifier (a stand-in for NEGEV's use of it)."""

    def training_key(self):
        return {"method": "from-cam"}

    def prerequisite(self):
        return {"name": "cam", "params": {}}

    def load_prerequisite(self, model, state):
        RECEIVED.append({k: v.clone() for k, v in state.items()})
        model.load_state_dict(state)


@pytest.fixture
def from_cam_installed(monkeypatch):
    """Register FromCAM as if a package had installed it."""
    real = plugins.registered
    extra = EntryPoint("from-cam", "tests.test_prerequisite:FromCAM", "wsolctl.methods")
    monkeypatch.setattr(plugins, "registered",
                        lambda kind: {**real(kind), "from-cam": extra} if kind == "methods" else real(kind))
    plugins.load.cache_clear()
    RECEIVED.clear()
    yield
    plugins.load.cache_clear()


@pytest.mark.slow
def test_prerequisite_is_trained_once_and_handed_over(tmp_path, tiny_recipe, from_cam_installed):
    text = tiny_recipe.read_text().replace("  - name: gradcam\n", "  - name: from-cam\n")
    (tmp_path / "r.yaml").write_text(text.replace("  - name: cam\n", ""))
    out = pipeline.run(tmp_path / "r.yaml", tmp_path / "out", quiet=True).parent
    runs = pl.read_parquet(out / "runs.parquet")
    assert sorted(runs["phase"]) == ["prerequisite", "search"]
    prereq_id = runs.filter(pl.col("phase") == "prerequisite")["run_id"].item()
    dependent = runs.filter(pl.col("phase") == "search")["run_id"].item()
    assert json.loads((out / "runs" / dependent / "spec.json").read_text())["prerequisite"] == prereq_id
    best = json.loads((out / "runs" / prereq_id / "done.json").read_text())["best"]["cam"]["b-loc"]
    expected = torch.load(out / "runs" / prereq_id / "ckpt" / f"epoch-{best:04d}.pt", weights_only=True)
    (received,) = RECEIVED
    assert all(torch.equal(received[k], expected[k]) for k in expected)
    results = pl.read_parquet(out / "results.parquet")
    assert set(results["method"]) == {"from-cam"}  # the prerequisite is not itself reported


@pytest.mark.slow
def test_prerequisite_reuses_an_identical_run_of_the_recipe(tiny_recipe, from_cam_installed):
    from wsolctl.engine.plan import study_runs
    from wsolctl.recipe import load_recipe
    from wsolctl.recipe.sweep import search_variants

    text = tiny_recipe.read_text().replace("  - name: gradcam\n", "  - {name: from-cam, backbones: [resnet18-wsol]}\n")
    tiny_recipe.write_text(text.replace("  - name: cam\n", "  - {name: cam, backbones: [resnet18-wsol]}\n"))
    runs = {r.labels[0]: r for r in study_runs(search_variants(load_recipe(tiny_recipe)))}
    assert runs["from-cam"].prerequisite.run_id == runs["cam"].run_id  # trained once, used twice
    out = pipeline.run(tiny_recipe, tiny_recipe.parent / "out", quiet=True).parent
    study = pl.read_parquet(out / "runs.parquet")
    assert len(study) == 2 and set(study["phase"]) == {"search"}
    assert set(pl.read_parquet(out / "results.parquet")["method"]) == {"cam", "from-cam"}

"""The example plugin packages install like any third-party plugins and run from a recipe: a method and
a metric (plugins/wsolctl-example-method), a dataset and a backbone (plugins/wsolctl-example-data).

They are built from copies in the test's tmp dir, so no build/ or *.egg-info lands in the source tree."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
pytestmark = pytest.mark.slow  # pip installs, subprocess CLIs, whole studies


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """PYTHONPATH environment with both example packages installed into a tmp target."""
    tmp = tmp_path_factory.mktemp("plugins")
    site = tmp / "site"
    for name in ("wsolctl-example-method", "wsolctl-example-data"):
        source = shutil.copytree(PLUGINS / name, tmp / name, ignore=shutil.ignore_patterns("build", "*.egg-info"))
        install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                                  "--target", str(site), str(source)], capture_output=True, text=True)
        assert install.returncode == 0, install.stderr
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def wsolctl(env, cwd, *args):
    return subprocess.run([sys.executable, "-m", "wsolctl", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_sources_stay_clean(plugin_env):
    for name in ("wsolctl-example-method", "wsolctl-example-data"):
        leftovers = [p.name for p in (PLUGINS / name).iterdir() if p.name == "build" or p.name.endswith(".egg-info")]
        assert not leftovers, f"{name}: {leftovers}"


def test_installed_example_plugin_trains_from_a_recipe(plugin_env, tmp_path, tiny_recipe):
    listed = {row["name"]: row for row in json.loads(wsolctl(plugin_env, tmp_path, "methods", "--json").stdout)}
    assert listed["example-maxpool"]["package"] == "wsolctl-example-method 0.1.0"
    assert listed["example-maxpool"]["params"] == {"dropout": 0.0}
    recipe = tiny_recipe.read_text().replace("  - name: gradcam\n", "  - {name: example-maxpool, params: {dropout: 0.1}}\n")
    (tmp_path / "plugin.yaml").write_text(recipe)
    bad = wsolctl(plugin_env, tmp_path, "validate", "plugin.yaml", "--set", "methods.1.params.dropout=2")
    assert bad.returncode == 2 and "methods[1].params.dropout: Input should be less than 1" in bad.stderr
    metric = {row["name"]: row for row in json.loads(wsolctl(plugin_env, tmp_path, "metrics", "--json").stdout)}
    assert metric["example-contrast"]["columns"] == {"contrast": "pp"}
    result = wsolctl(plugin_env, tmp_path, "run", "plugin.yaml", "--out", "out", "--quiet",
                     "--set", "evaluation.metrics=[pxap, example-contrast]")
    assert result.returncode == 0, result.stderr
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(results["method"]) == {"cam", "example-maxpool"}
    assert results["contrast"].is_between(-100, 100).all()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Score contrast, B-LOC selection" in report and "contrast (pp)" in report
    assert results["run_id"].n_unique() == 2  # different heads: separate classifiers
    assert results.filter(pl.col("method") == "example-maxpool")["pxap"].is_finite().all()


def test_installed_dataset_and_backbone_plugins_run_from_a_recipe(plugin_env, tmp_path, tiny_recipe):
    recipe = tiny_recipe.read_text().replace("image_size: 48", "image_size: 32")
    recipe = recipe.replace("name: synthetic-glas", "name: example-squares").replace("name: resnet18-wsol", "name: example-tinycnn")
    recipe = "\n".join("  params: {size: 32, per_class: 3}" if line.startswith("  params:") else line
                       for line in recipe.splitlines())
    (tmp_path / "data.yaml").write_text(recipe)
    bad = wsolctl(plugin_env, tmp_path, "validate", "data.yaml", "--set", "dataset.params.size=8")
    assert bad.returncode == 2 and "dataset.params.size" in bad.stderr and "Traceback" not in bad.stderr
    result = wsolctl(plugin_env, tmp_path, "run", "data.yaml", "--out", "out", "--quiet")
    assert result.returncode == 0, result.stderr
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(results["dataset"]) == {"example-squares"} and set(results["backbone"]) == {"example-tinycnn"}
    assert set(results["method"]) == {"cam", "gradcam"} and results["pxap"].is_finite().all()
    # the plugin's data are what was evaluated: 3 of the 6 test images have a 10×10 square (side // 3)
    assert abs(results["baseline_pxap"][0] - 100 * 0.5 * (10 * 10) / (32 * 32)) < 1e-6
    assert (tmp_path / "data" / "fold-0" / "test" / "image_ids.txt").read_text().count("\n") == 6

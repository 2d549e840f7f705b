"""The example plugin package installs like any third-party plugin and runs from a recipe."""
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

PLUGIN = Path(__file__).resolve().parent.parent / "plugins" / "wsolctl-example-method"


def test_installed_example_plugin_trains_from_a_recipe(tmp_path, tiny_recipe):
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--target", str(site), str(PLUGIN)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    def wsolctl(*args):
        return subprocess.run([sys.executable, "-m", "wsolctl", *args], capture_output=True, text=True, env=env, cwd=tmp_path)

    listed = {row["name"]: row for row in json.loads(wsolctl("methods", "--json").stdout)}
    assert listed["example-maxpool"]["package"] == "wsolctl-example-method 0.1.0"
    assert listed["example-maxpool"]["params"] == {"dropout": 0.0}
    recipe = tiny_recipe.read_text().replace("  - name: gradcam\n", "  - {name: example-maxpool, params: {dropout: 0.1}}\n")
    (tmp_path / "plugin.yaml").write_text(recipe)
    bad = wsolctl("validate", "plugin.yaml", "--set", "methods.1.params.dropout=2")
    assert bad.returncode == 2 and "methods[1].params.dropout: Input should be less than 1" in bad.stderr
    result = wsolctl("run", "plugin.yaml", "--out", "out", "--quiet")
    assert result.returncode == 0, result.stderr
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(results["method"]) == {"cam", "example-maxpool"}
    assert results["run_id"].n_unique() == 2  # different heads: separate classifiers
    assert results.filter(pl.col("method") == "example-maxpool")["pxap"].is_finite().all()

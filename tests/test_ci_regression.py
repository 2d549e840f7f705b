"""The shipped CI recipe reproduces its committed baseline (this is how users put wsolctl in CI).

Reproduction is two-sided: a better number is as much a change as a worse one, so ``--mode within``
(|Δ| ≤ tolerance) rather than the default one-sided regression check."""
import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


@pytest.mark.slow
def test_ci_recipe_matches_its_baseline(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "wsolctl", "run", str(RECIPES / "ci-regression.yaml"), "--out", str(out),
                          "--quiet", "--set", f"dataset.root={tmp_path / 'data'}"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    check = subprocess.run([sys.executable, "-m", "wsolctl", "compare", str(RECIPES / "ci-regression.baseline.parquet"),
                            str(out), "--mode", "within", "--tolerance", "pxap=0.5"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "wsolctl compare: OK" in check.stdout

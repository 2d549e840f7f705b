"""``wsolctl compare``: matching, tolerances, directions, exit codes."""
import subprocess
import sys

import polars as pl
import pytest

from wsolctl.results.compare import compare, parse_tolerances


def results(overrides=None):
    rows = []
    for method in ("cam", "gradcam"):
        for selection in ("b-loc", "b-cl"):
            rows.append({"dataset": "d", "fold": 0, "backbone": "b", "method": method, "selection": selection,
                         "pxap": 60.0, "tp": 50.0, "fn": 50.0, "fp": 20.0, "tn": 80.0, "miou": 40.0, "cl_acc": 90.0})
    frame = pl.DataFrame(rows)
    for (method, column), value in (overrides or {}).items():
        frame = frame.with_columns(pl.when(pl.col("method") == method).then(value).otherwise(pl.col(column)).alias(column))
    return frame


def save(tmp_path, name, frame):
    path = tmp_path / name
    frame.write_parquet(path)
    return path


def test_identical_passes(tmp_path):
    outcome = compare(save(tmp_path, "a.parquet", results()), save(tmp_path, "b.parquet", results()))
    assert not outcome.failed and "OK" in outcome.markdown


@pytest.mark.parametrize("column,value,fails", [
    ("pxap", 59.6, False),   # within the default 0.5
    ("pxap", 59.4, True),    # worse by more than 0.5
    ("pxap", 70.0, False),   # better is never a regression
    ("fn", 52.0, True),      # FN* is lower-is-better
    ("fn", 40.0, False),
    ("fp", 21.5, True),
    ("tn", 78.0, True),
    ("cl_acc", 85.0, True),
])
def test_direction_and_default_tolerance(tmp_path, column, value, fails):
    base = save(tmp_path, "a.parquet", results())
    cand = save(tmp_path, "b.parquet", results({("cam", column): value}))
    outcome = compare(base, cand)
    assert outcome.failed is fails
    if fails:
        assert "**yes**" in outcome.markdown and column in outcome.markdown


def test_custom_tolerance(tmp_path):
    base = save(tmp_path, "a.parquet", results())
    cand = save(tmp_path, "b.parquet", results({("cam", "pxap"): 58.0}))
    assert compare(base, cand).failed
    assert not compare(base, cand, ["pxap=2.5"]).failed
    with pytest.raises(ValueError, match="expected METRIC=VALUE"):
        parse_tolerances(["nope=1"])
    with pytest.raises(ValueError, match="not a number"):
        parse_tolerances(["pxap=x"])


def test_missing_row_fails_extra_row_does_not(tmp_path):
    base = save(tmp_path, "a.parquet", results())
    cand = save(tmp_path, "b.parquet", results().filter(pl.col("method") == "cam"))
    outcome = compare(base, cand)
    assert outcome.failed and "Missing from the candidate" in outcome.markdown and "gradcam" in outcome.markdown
    assert not compare(cand, base).failed  # the candidate may add rows


@pytest.mark.slow
def test_cli_exit_codes(tmp_path):
    base = save(tmp_path, "a.parquet", results())
    worse = save(tmp_path, "b.parquet", results({("gradcam", "pxap"): 10.0}))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "wsolctl", "compare", *args], capture_output=True, text=True)

    assert run(str(base), str(base)).returncode == 0
    result = run(str(base), str(worse), "--output", str(tmp_path / "diff.md"))
    assert result.returncode == 1 and "| gradcam |" in result.stdout
    assert (tmp_path / "diff.md").read_text().startswith("## wsolctl compare: FAIL")
    bad = run(str(base), str(tmp_path / "missing.parquet"))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "missing.parquet" in bad.stderr
    (tmp_path / "junk.parquet").write_text("not parquet")
    assert run(str(base), str(tmp_path / "junk.parquet")).returncode == 2
    assert run(str(base), str(base), "--tolerance", "pxap=abc").returncode == 2


def test_two_sided_modes_fail_on_a_better_candidate(tmp_path):
    """A reproduction check must notice +20 PxAP everywhere; the regression mode must not."""
    base = save(tmp_path, "a.parquet", results())
    better = results().with_columns(pl.col("pxap") + 20.0)
    cand = save(tmp_path, "b.parquet", better)
    assert not compare(base, cand).failed
    outcome = compare(base, cand, mode="within")
    assert outcome.failed and "**yes**" in outcome.markdown and "Mode within" in outcome.markdown
    assert compare(base, cand, ["pxap=25"], mode="within").failed is False
    assert compare(base, cand, ["pxap=25"], mode="exact").failed  # exact ignores tolerances
    assert not compare(base, base, mode="exact").failed


@pytest.mark.parametrize("mode", ["within", "exact"])
def test_two_sided_modes_small_and_nan_differences(tmp_path, mode):
    base = save(tmp_path, "a.parquet", results({("cam", "pxap"): float("nan")}))
    assert not compare(base, base, mode=mode).failed  # NaN reproduces NaN
    nudged = save(tmp_path, "b.parquet", results({("gradcam", "fn"): 50.5}))
    same = save(tmp_path, "c.parquet", results())
    assert compare(same, nudged, mode="within").failed is False  # |Δ| 0.5 ≤ default 1.0
    assert compare(same, nudged, mode="exact").failed is True
    assert compare(same, base, mode=mode).failed  # a NaN candidate for a number


@pytest.mark.slow
def test_cli_mode(tmp_path):
    base = save(tmp_path, "a.parquet", results())
    better = save(tmp_path, "b.parquet", results().with_columns(pl.col("pxap") + 20.0))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "wsolctl", "compare", str(base), str(better), *args],
                              capture_output=True, text=True)

    assert run().returncode == 0
    assert run("--mode", "within", "--tolerance", "pxap=0.5").returncode == 1
    assert run("--mode", "exact").returncode == 1
    bad = run("--mode", "sideways")
    assert bad.returncode == 2 and "--mode 'sideways'" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("mode", ["regression", "within", "exact"])
def test_within_ci_passes_a_baseline_inside_the_candidates_interval(tmp_path, mode):
    """A candidate 2 points lower fails every mode; --within-ci lets it pass when the baseline lies
    inside its interval, not when the interval misses the baseline or is null."""
    base = save(tmp_path, "base.parquet", results())
    lower = results({("cam", "pxap"): 58.0})

    def candidate(low, high):
        frame = lower.with_columns(pxap_ci_low=pl.lit(low, dtype=pl.Float64), pxap_ci_high=pl.lit(high, dtype=pl.Float64))
        return save(tmp_path, "cand.parquet", frame)

    assert compare(base, candidate(55.0, 61.0), mode=mode).failed
    assert not compare(base, candidate(55.0, 61.0), mode=mode, within_ci=True).failed
    assert compare(base, candidate(55.0, 59.0), mode=mode, within_ci=True).failed
    assert compare(base, candidate(None, None), mode=mode, within_ci=True).failed
    assert compare(base, save(tmp_path, "plain.parquet", lower), mode=mode, within_ci=True).failed

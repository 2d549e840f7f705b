"""A refactoring changes no number, run id nor output: ``tests/data/before-after/study.yaml`` trained
and reported by the code as it was before one (issue 29: main at 9576fa6) gave the Parquet tables and
the report committed next to it; the code here must give the same (on CPU, same seed).

The study touches every part of a run directory: a prerequisite (pixelcam on cam), three selection
rules (b-pseudo with a pseudo-annotator), metric plugins, the randomisation check and examples.
Regenerate the fixture only when a change of numbers is intended::

    cd "$(mktemp -d)" && wsolctl run $REPO/tests/data/before-after/study.yaml --out out -q
    cp out/{results,checks,runs,epochs}.parquet out/report.md $REPO/tests/data/before-after/

(run from an empty folder: the data root is relative, and a run id hashes it).
"""
from pathlib import Path

import polars as pl
import pytest

from wsolctl import pipeline

FIXTURE = Path(__file__).resolve().parent / "data" / "before-after"
TABLES = ("results", "checks", "runs", "epochs")
VOLATILE = {"runs": ["duration_s"], "epochs": ["duration_s"]}  # wall times


@pytest.mark.slow
def test_the_study_gives_what_it_gave_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's relative data root, as when the fixture was made
    out = pipeline.run(FIXTURE / "study.yaml", Path("out"), quiet=True).parent
    for name in TABLES:
        before, after = (pl.read_parquet(d / f"{name}.parquet").drop(VOLATILE.get(name, [])) for d in (FIXTURE, out))
        assert after.columns == before.columns and after.dtypes == before.dtypes, name
        for column in before.columns:  # run ids, methods, rules, epochs exactly; scores to float precision
            assert same(after[column], before[column]), f"{name}.{column}: {after[column]} != {before[column]}"
    assert (out / "report.md").read_text() == (FIXTURE / "report.md").read_text()


def same(a: pl.Series, b: pl.Series) -> bool:
    """Equal values (nulls and NaNs where the other has them), floats to a relative 1e-6."""
    if a.dtype != b.dtype or len(a) != len(b):
        return False
    if b.dtype.is_float():
        close = ((a - b).abs() <= 1e-6 * (1 + b.abs())) | (a.is_nan() & b.is_nan())
    else:
        close = a == b
    return bool((close | (a.is_null() & b.is_null())).fill_null(False).all())


def test_the_comparison_can_fail():
    values = pl.Series([1.0, float("nan"), None])
    assert same(values, pl.Series([1.0 + 1e-9, float("nan"), None]))
    for other in ([1.001, float("nan"), None], [1.0, 2.0, None], [1.0, float("nan"), 3.0], [1.0, None, None]):
        assert not same(values, pl.Series(other))
    assert not same(pl.Series(["a", "b"]), pl.Series(["a", "c"]))

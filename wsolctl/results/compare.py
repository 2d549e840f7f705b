"""Regression and reproduction checks between two result sets (``wsolctl compare``).

Rows are matched on dataset/fold/backbone/method/selection. Three modes say when a metric value fails:

- ``regression`` (default): the candidate is worse than the baseline by more than its tolerance,
  "worse" following the metric's direction. Better values always pass.
- ``within``: |candidate − baseline| > tolerance, in either direction (a reproduction check).
- ``exact``: candidate ≠ baseline (tolerances are ignored).

In every mode a NaN candidate for a finite baseline fails, and so does a baseline row with no
candidate; extra candidate rows are reported only. With ``within_ci`` (``--within-ci``) a value also
passes when the baseline lies inside the candidate's bootstrap interval (``<metric>_ci_low`` /
``_ci_high`` of results.parquet): noise-aware checks for hardware whose floating point differs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import polars as pl

from wsolctl.errors import InputError
from wsolctl.metrics import COMPARED
from wsolctl.results.tables import KEYS

HIGHER_IS_BETTER = {c.name: not c.lower_is_better for c in COMPARED}  # the columns' declarations
DEFAULT_TOLERANCE = {c.name: c.tolerance for c in COMPARED}
MODES = ("regression", "within", "exact")


@dataclass
class Comparison:
    table: pl.DataFrame  # one row per key × metric; ``fail`` says whether that value fails the mode
    missing: pl.DataFrame  # baseline keys absent from the candidate
    extra: pl.DataFrame  # candidate keys absent from the baseline
    markdown: str

    @property
    def failed(self) -> bool:
        return bool(self.table["fail"].any()) or len(self.missing) > 0


def read_results(path: Path) -> pl.DataFrame:
    path = Path(path)
    file = path / "results.parquet" if path.is_dir() else path
    if not file.is_file():
        raise InputError(f"{file}: no results file (give a results.parquet or a wsolctl output directory)")
    try:
        frame = pl.read_parquet(file)
    except Exception as exc:  # polars raises several types for a non-Parquet file
        raise InputError(f"{file}: not a readable Parquet file ({exc})") from None
    absent = [c for c in KEYS if c not in frame.columns]
    if absent:
        raise InputError(f"{file}: missing columns {absent}")
    # Several seeds of one key are averaged, so that comparisons are between like and like (their
    # intervals too: an approximation of the pooled interval).
    metrics = [m for m in HIGHER_IS_BETTER if m in frame.columns]
    bounds = [f"{m}_{end}" for m in metrics for end in ("ci_low", "ci_high") if f"{m}_{end}" in frame.columns]
    return frame.group_by(KEYS).agg([pl.col(m).mean() for m in metrics + bounds])


def parse_tolerances(items: Iterable[str]) -> dict[str, float]:
    tolerance = dict(DEFAULT_TOLERANCE)
    for item in items:
        metric, sep, value = item.partition("=")
        if not sep or metric not in HIGHER_IS_BETTER:
            raise InputError(f"--tolerance {item!r}: expected METRIC=VALUE with METRIC in {sorted(HIGHER_IS_BETTER)}")
        try:
            tolerance[metric] = float(value)
        except ValueError:
            raise InputError(f"--tolerance {item!r}: {value!r} is not a number") from None
        if tolerance[metric] < 0:
            raise InputError(f"--tolerance {item!r}: must be ≥ 0")
    return tolerance


def compare(baseline: Path, candidate: Path, tolerances: Iterable[str] = (), mode: str = "regression",
            within_ci: bool = False) -> Comparison:
    if mode not in MODES:
        raise InputError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    tolerance = {m: 0.0 for m in DEFAULT_TOLERANCE} if mode == "exact" else parse_tolerances(tolerances)
    base, cand = read_results(baseline), read_results(candidate)
    metrics = [m for m in HIGHER_IS_BETTER if m in base.columns and m in cand.columns]
    bounds = [c for c in cand.columns if c.endswith(("_ci_low", "_ci_high"))]  # the candidate's only
    joined = base.drop([c for c in base.columns if c.endswith(("_ci_low", "_ci_high"))]).join(
        cand.rename({c: f"{c}_candidate" for c in bounds}), on=KEYS, how="inner", suffix="_candidate")
    long = pl.concat([
        joined.select(*KEYS, pl.lit(m).alias("metric"), pl.col(m).alias("baseline"),
                      pl.col(f"{m}_candidate").alias("candidate"),
                      *[_bound(joined, m, end) for end in ("ci_low", "ci_high")])
        for m in metrics
    ]) if len(joined) else pl.DataFrame(schema={**{k: base.schema[k] for k in KEYS}, "metric": pl.String,
                                                 "baseline": pl.Float64, "candidate": pl.Float64,
                                                 "ci_low": pl.Float64, "ci_high": pl.Float64})
    sign = pl.col("metric").replace_strict({m: 1.0 if up else -1.0 for m, up in HIGHER_IS_BETTER.items()})
    tol = pl.col("metric").replace_strict(tolerance, return_dtype=pl.Float64)
    delta = pl.col("candidate") - pl.col("baseline")
    out_of_bounds = delta * sign < -tol if mode == "regression" else delta.abs() > tol
    if within_ci:  # the baseline inside the candidate's interval passes (null interval: the mode decides)
        inside = (pl.col("baseline") >= pl.col("ci_low")) & (pl.col("baseline") <= pl.col("ci_high"))
        out_of_bounds = out_of_bounds & ~inside.fill_null(False)
    # NaN == NaN counts as reproduced; a NaN candidate for a number always fails
    both_nan = pl.col("candidate").is_nan() & pl.col("baseline").is_nan()
    long = long.with_columns(delta=delta).with_columns(
        fail=out_of_bounds & ~both_nan | pl.col("candidate").is_nan() & pl.col("baseline").is_not_nan())
    missing = base.join(cand, on=KEYS, how="anti").select(KEYS)
    extra = cand.join(base, on=KEYS, how="anti").select(KEYS)
    return Comparison(long, missing, extra, _markdown(long, missing, extra, tolerance, mode, within_ci))


def _bound(joined: pl.DataFrame, metric: str, end: str) -> pl.Expr:
    """The candidate's interval bound of ``metric`` (null when its results have none)."""
    name = f"{metric}_{end}_candidate"
    return (pl.col(name) if name in joined.columns else pl.lit(None, dtype=pl.Float64)).alias(end)


def _markdown(long: pl.DataFrame, missing: pl.DataFrame, extra: pl.DataFrame, tolerance: dict, mode: str,
              within_ci: bool = False) -> str:
    failures = long.filter(pl.col("fail"))
    status = "FAIL" if len(failures) or len(missing) else "OK"
    bounds = "exact" if mode == "exact" else ", ".join(f"{k}={v}" for k, v in tolerance.items())
    lines = [f"## wsolctl compare: {status}", "",
             f"Mode {mode}: {len(long)} metric values compared, {len(failures)} failure(s), {len(missing)} missing "
             f"row(s). Tolerances: {bounds}"
             + ("; a baseline inside the candidate's bootstrap interval passes (--within-ci)." if within_ci else ""), ""]
    changed = long.filter(pl.col("delta").abs() > 0)
    if len(changed):
        lines += ["| " + " | ".join(KEYS) + " | metric | baseline | candidate | Δ | fails |",
                  "|" + "---|" * (len(KEYS) + 5)]
        for r in changed.sort(KEYS + ["metric"]).iter_rows(named=True):
            flag = "**yes**" if r["fail"] else "no"
            lines.append("| " + " | ".join(str(r[k]) for k in KEYS) +
                         f" | {r['metric']} | {r['baseline']:.2f} | {r['candidate']:.2f} | {r['delta']:+.2f} | {flag} |")
        lines.append("")
    for title, frame in (("Missing from the candidate", missing), ("Only in the candidate", extra)):
        if len(frame):
            lines += [f"{title}:", ""] + ["- " + " / ".join(str(v) for v in row) for row in frame.rows()] + [""]
    return "\n".join(lines)

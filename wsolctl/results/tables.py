"""Assemble the Parquet tables of an output directory (schema: docs/results.md)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import polars as pl

from wsolctl.engine.plan import RunSpec
from wsolctl.engine.rundir import RunDir, TestScores
from wsolctl.io import write_parquet
from wsolctl.metrics import ACCURACY, Metric, PxAP
from wsolctl.recipe.base import numbers
from wsolctl.recipe.evaluation import Bootstrap

# the leading columns: the run, then PxAP's titled columns and accuracy; the others follow sorted
RESULT_COLUMNS = ["run_id", "dataset", "fold", "backbone", "method", "params", "seed", "selection", "epoch",
                  *(c.name for c in PxAP.columns if c.title), ACCURACY.name]
KEYS = ["dataset", "fold", "backbone", "method", "selection"]


def _context(spec: RunSpec) -> dict:
    recipe = spec.recipe
    return {"run_id": spec.run_id, "dataset": recipe.dataset.name, "fold": recipe.dataset.fold,
            "backbone": spec.backbone.name, "seed": recipe.seed}


def _params(spec: RunSpec) -> dict[str, str]:
    return {label: json.dumps(numbers(method.params), sort_keys=True)  # new defaults left out, as in run ids
            for label, method in zip(spec.labels, spec.methods)}


def write_tables(out: Path, scored: list[tuple[RunSpec, TestScores]], bootstrap: Optional[Bootstrap] = None,
                 metrics: Sequence[type[Metric]] = ()) -> None:
    """``scored``: (run, its final test, the chosen rows) for every final run; ``bootstrap``: the
    intervals of ``results.parquet`` and the comparisons (``samples`` 0: none), with the resampling
    of the study's ``metrics`` (plugins)."""
    results, curves, epochs, checks = [], [], [], []
    for spec, selected in scored:
        context, params = _context(spec), _params(spec)
        checks += [{**context, **row} for row in selected.checks]
        for row in selected.results:
            results.append({**context, "params": params[row["method"]], **row})
        for row in selected.curves:
            # one column order whether the rows were just scored or read back from test.json (sorted keys)
            order = sorted((k for k, v in row.items() if isinstance(v, list)), key=lambda k: (k != "threshold", k))
            curves.append(pl.DataFrame({k: row[k] for k in order})
                          .with_columns(**{k: pl.lit(v) for k, v in {**context, **row}.items() if not isinstance(v, list)}))
        history = RunDir.of(out, spec.run_id).epochs()
        epochs += [{**context, **row} for row in history]
    comparisons = ranks = None
    if bootstrap is not None and bootstrap.samples:
        from wsolctl.results.intervals import add_intervals

        comparisons, ranks = add_intervals(out, results, metrics, bootstrap.samples, bootstrap.confidence)
    _write_optional(out / "comparisons.parquet", comparisons)
    _write_optional(out / "ranks.parquet", ranks)
    frame = pl.DataFrame(results, infer_schema_length=None)
    frame = frame.with_columns(pl.col(c).cast(pl.Float64) for c in frame.columns if c.endswith(("_ci_low", "_ci_high")))
    write_parquet(out / "results.parquet", frame.select(RESULT_COLUMNS + sorted(c for c in frame.columns if c not in RESULT_COLUMNS)))
    write_parquet(out / "curves.parquet", pl.concat(curves, how="diagonal"))
    write_parquet(out / "epochs.parquet", pl.DataFrame(epochs, infer_schema_length=None))
    _write_optional(out / "checks.parquet", pl.DataFrame(checks, infer_schema_length=None) if checks else None)


def _write_optional(path: Path, frame: Optional[pl.DataFrame]) -> None:
    """A table that only some studies have (e.g. evaluation.checks, intervals): written, or removed
    so that no stale one stays when it was switched off."""
    if frame is not None and len(frame):
        write_parquet(path, frame)
    elif path.is_file():
        path.unlink()

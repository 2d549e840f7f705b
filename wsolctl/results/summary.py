"""The final summary table printed after ``wsolctl run``."""
from __future__ import annotations

from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from wsolctl.metrics import ACCURACY, PxAP


def print_summary(out: Path, quiet: bool = False) -> None:
    results = pl.read_parquet(out / "results.parquet").sort(["backbone", "method", "selection"])
    console = Console()
    if not quiet:
        table = Table(title=f"test results ({out})")
        # FN* = 100 - TP* and TN* = 100 - FP*: the report has them; the terminal table stays narrow.
        for column in ("backbone", "method", "rule"):
            source = "selection" if column == "rule" else column
            table.add_column(column, no_wrap=True, min_width=max(len(v) for v in results[source]))
        shown = [c for c in PxAP.columns if c.name in PxAP.summary]
        for column in ("epoch", *(c.title for c in shown), "acc"):
            table.add_column(column, justify="right", no_wrap=True, min_width=5)
        for r in results.iter_rows(named=True):
            table.add_row(r["backbone"], r["method"], r["selection"], str(r["epoch"]),
                          *(f"{r[k]:.1f}" for k in (*(c.name for c in shown), ACCURACY.name)))
        console.print(table)
        console.print(f"all-foreground baseline PxAP: {results['baseline_pxap'][0]:.1f}")
    console.print(f"report: {out / 'report.md'}")

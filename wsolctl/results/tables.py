"""Assemble the Parquet tables of an output directory (schema: docs/results.md)."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from wsolctl.engine.plan import Run, method_labels
from wsolctl.recipe.schema import Recipe
from wsolctl.io import write_parquet

RESULT_COLUMNS = ["run_id", "dataset", "fold", "backbone", "method", "params", "seed", "selection", "epoch",
                  "pxap", "tp", "fn", "fp", "tn", "threshold", "miou", "cl_acc"]
KEYS = ["dataset", "fold", "backbone", "method", "selection"]


def _context(recipe: Recipe, run: Run) -> dict:
    return {"run_id": run.run_id, "dataset": recipe.dataset.name, "fold": recipe.dataset.fold,
            "backbone": recipe.backbones[run.backbone_index].name, "seed": recipe.seed}


def _params(recipe: Recipe, run: Run) -> dict[str, str]:
    labels = method_labels(recipe)
    return {labels[ref.index]: json.dumps(recipe.methods[ref.index].resolved_params.model_dump(mode="json"),
                                          sort_keys=True) for ref in run.methods}


def write_tables(out: Path, scored: list[tuple[Recipe, Run, dict]]) -> None:
    """``scored``: (run's recipe, run, {"results": [...], "curves": [...]}) for every final run."""
    results, curves, epochs = [], [], []
    for recipe, run, selected in scored:
        context, params = _context(recipe, run), _params(recipe, run)
        for row in selected["results"]:
            results.append({**context, "params": params[row["method"]], **row})
        for row in selected["curves"]:
            curves.append(pl.DataFrame({k: v for k, v in row.items() if isinstance(v, list)})
                          .with_columns(**{k: pl.lit(v) for k, v in {**context, **row}.items() if not isinstance(v, list)}))
        history = json.loads((out / "runs" / run.run_id / "epochs.json").read_text())
        epochs += [{**context, **row} for row in history]
    frame = pl.DataFrame(results, infer_schema_length=None)
    write_parquet(out / "results.parquet", frame.select(RESULT_COLUMNS + sorted(c for c in frame.columns if c not in RESULT_COLUMNS)))
    write_parquet(out / "curves.parquet", pl.concat(curves, how="diagonal"))
    write_parquet(out / "epochs.parquet", pl.DataFrame(epochs, infer_schema_length=None))

"""``report.md``: the results tables (both selection rules), the trivial baseline, and figures.
Works from the Parquet files alone; anything missing is skipped with a note."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import yaml

from wsolctl.results import figures
from wsolctl.results.io import write_text

METRICS = [("pxap", "PxAP"), ("tp", "TP*"), ("fn", "FN*"), ("fp", "FP*"), ("tn", "TN*"),
           ("threshold", "τ*"), ("miou", "mIoU@τ*"), ("cl_acc", "accuracy")]
GROUP = ["dataset", "backbone", "method", "selection"]


def write_report(out: Path) -> Path:
    results = pl.read_parquet(out / "results.parquet")
    lines = [f"# wsolctl report: {out.name}", ""]
    lines += _context(out, results)
    for rule in ("b-loc", "b-cl"):
        rows = results.filter(pl.col("selection") == rule)
        if len(rows):
            lines += [f"## Test results, {rule.upper()} selection", "", *_table(rows), ""]
    lines += ["Metrics in %, τ* in [0, 1]. TP*/FN*/FP*/TN*: each confusion component (as a fraction of "
              "ground-truth foreground or background pixels) averaged over the thresholds (survey eqs. 21–24). "
              "τ*, mIoU: the threshold with the best mIoU on the test set and the mIoU there.", ""]
    lines += _figures(out, results)
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _context(out: Path, results: pl.DataFrame) -> list[str]:
    lines = []
    recipe_path = out / "recipe.resolved.yaml"
    if recipe_path.is_file():
        recipe = yaml.safe_load(recipe_path.read_text())
        t = recipe["train"]
        lines += [f"- dataset: `{recipe['dataset']['name']}` fold {recipe['dataset']['fold']} "
                  f"(root `{recipe['dataset']['root']}`), image size {recipe['image_size']}",
                  f"- training: {t['epochs']} epochs, batch {t['batch_size']}, lr {t['lr']}, "
                  f"{t['optimizer']['name']}, seed {recipe['seed']}"]
    shared = results.group_by("run_id").agg(pl.col("method").unique().sort()).filter(pl.col("method").list.len() > 1)
    for run_id, methods in shared.rows():
        lines.append(f"- {', '.join(methods)} share one trained classifier (run `{run_id}`): "
                     "each is evaluated and selected on its own")
    if "baseline_pxap" in results.columns:
        baseline = results.group_by("dataset").agg(pl.col("baseline_pxap").mean())
        for dataset, value in baseline.rows():
            lines.append(f"- **trivial baseline** (all-foreground map) PxAP on `{dataset}` test: "
                         f"**{value:.2f}** = fraction of ROI pixels")
    return lines + [""]


def _table(rows: pl.DataFrame) -> list[str]:
    """Markdown table; mean ± std over folds/seeds when a group has several rows."""
    agg = rows.group_by(GROUP, maintain_order=True).agg(
        pl.len().alias("n"), pl.col("epoch").mean(),
        *[pl.col(m).mean().alias(m) for m, _ in METRICS],
        *[pl.col(m).std().alias(f"{m}_std") for m, _ in METRICS])
    header = ["dataset", "backbone", "method", "n", "epoch"] + [title for _, title in METRICS]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in agg.sort(["dataset", "backbone", "method"]).iter_rows(named=True):
        cells = [r["dataset"], r["backbone"], r["method"], str(r["n"]), f"{r['epoch']:.0f}"]
        cells += [_cell(r[m], r[f"{m}_std"], 3 if m == "threshold" else 1) for m, _ in METRICS]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _cell(mean, std, digits: int) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _figures(out: Path, results: pl.DataFrame) -> list[str]:
    lines = ["## Figures", ""]
    curves_path, epochs_path = out / "curves.parquet", out / "epochs.parquet"
    if curves_path.is_file():
        figures.threshold_sensitivity(pl.read_parquet(curves_path), out / "figures" / "threshold-sensitivity.png")
        lines += ["![threshold sensitivity](figures/threshold-sensitivity.png)", ""]
    else:
        lines += ["_threshold sensitivity skipped: curves.parquet not found_", ""]
    if epochs_path.is_file():
        figures.training_curves(pl.read_parquet(epochs_path), results, out / "figures" / "training-curves.png")
        lines += ["![PxAP and accuracy over epochs](figures/training-curves.png)", ""]
    else:
        lines += ["_training curves skipped: epochs.parquet not found_", ""]
    return lines

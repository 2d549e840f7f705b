"""Sampled CAMELYON16 patches → fold files and tables: the last of the sampler's three jobs (after
:mod:`wsolctl.wsi.camelyon16_inputs` and :mod:`wsolctl.wsi.camelyon16`).

Writes under ``out``::

    encoding.yaml, fold-K/...            fold format ({normal: 0, tumor: 1}); image paths relative to out
    manifest.parquet                     one row per patch
    skipped.parquet                      slides left out, with the reason
"""
from __future__ import annotations

from pathlib import Path

from wsolctl.data.folds import Sample, write_folds as write_fold_files
from wsolctl.data.splits import SplitParams, assign_folds as assign
from wsolctl.wsi.camelyon16 import SamplingParams, patch_paths
from wsolctl.wsi.camelyon16_inputs import CLASSES


def assign_folds(rows: list[dict], p: SamplingParams) -> list[dict[int, str]]:
    """Per row and fold: train / valcl / valcl+valpx / test, grouped by slide and stratified by the
    slide's label (:mod:`wsolctl.data.splits`); test is the challenge's test set."""
    strata = {r["slide"]: r["slide_label"] for r in rows if r["set"] == "train"}
    return assign(groups=[r["slide"] for r in rows], labels=[r["category"] for r in rows],
                  test=[r["set"] == "test" for r in rows], valpx_ok=[True] * len(rows), strata=strata,
                  classes=list(CLASSES), p=SplitParams(p.folds, p.seed, p.valcl_fraction, p.valpx_per_class))


def write_folds(out: Path, rows: list[dict], folds: list[dict[int, str]], p: SamplingParams) -> None:
    samples = []
    for row in rows:
        image, mask = patch_paths(row)
        samples.append(Sample(image, CLASSES[row["category"]], (p.patch_size, p.patch_size), (mask,) if mask else ()))
    write_fold_files(out, CLASSES, samples, folds, p.folds)


def write_tables(out: Path, rows: list[dict], folds: list[dict[int, str]], skipped: list[dict],
                  p: SamplingParams) -> None:
    import polars as pl

    from wsolctl.io import write_parquet

    data = {
        "slide": [r["slide"] for r in rows], "set": [r["set"] for r in rows],
        "slide_label": [r["slide_label"] for r in rows],
        "x": [r["x"] for r in rows], "y": [r["y"] for r in rows], "level": [0] * len(rows),
        "size": [p.patch_size] * len(rows),
        "tissue_pct": [100.0 * r["tissue"] for r in rows], "tumor_pct": [100.0 * r["tumor"] for r in rows],
        "category": [r["category"] for r in rows], "calibration": [r["calibration"] for r in rows],
        "image": [patch_paths(r)[0] for r in rows], "mask": [patch_paths(r)[1] for r in rows],
    }
    for fold in range(p.folds):
        data[f"fold_{fold}"] = [f[fold] for f in folds]
    schema = {"slide": pl.String, "set": pl.String, "slide_label": pl.String, "x": pl.Int64, "y": pl.Int64,
              "level": pl.Int32, "size": pl.Int32, "tissue_pct": pl.Float64, "tumor_pct": pl.Float64,
              "category": pl.String, "calibration": pl.Int8, "image": pl.String, "mask": pl.String,
              **{f"fold_{k}": pl.String for k in range(p.folds)}}
    write_parquet(out / "manifest.parquet", pl.DataFrame(data, schema=schema))
    write_parquet(out / "skipped.parquet", pl.DataFrame(
        {k: [s[k] for s in skipped] for k in ("slide", "set", "label", "reason")},
        schema={k: pl.String for k in ("slide", "set", "label", "reason")}))

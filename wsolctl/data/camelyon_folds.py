"""Sampled CAMELYON16 patches → fold files and tables: the last of the sampler's three jobs (after
:mod:`wsolctl.wsi.camelyon16_inputs` and :mod:`wsolctl.wsi.camelyon16`).

Writes under ``out``::

    encoding.yaml, fold-K/...            fold format ({normal: 0, tumor: 1}); image paths relative to out
    manifest.parquet                     one row per patch
    skipped.parquet                      slides left out, with the reason
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from wsolctl.data.folds import Sample, write_encoding, write_split
from wsolctl.io import temporary_directory
from wsolctl.wsi.camelyon16 import SamplingParams, patch_paths
from wsolctl.wsi.camelyon16_inputs import CLASSES


def assign_folds(rows: list[dict], p: SamplingParams) -> list[dict[int, str]]:
    """Per row and fold: train / valcl / valcl+valpx / test. Training slides are split per class at
    slide level (no slide in two sets); valpx takes ``valpx_per_class`` patches per class from valcl."""
    train_slides = {label: sorted({r["slide"] for r in rows if r["set"] == "train" and r["slide_label"] == label})
                    for label in CLASSES}
    out: list[dict[int, str]] = [{} for _ in rows]
    for fold in range(p.folds):
        rng = np.random.default_rng([p.seed, fold, 2])
        val_slides: set[str] = set()
        for slides in train_slides.values():
            n = len(slides)
            n_val = min(max(1, round(n * p.valcl_fraction)), n - 1) if n >= 2 else 0
            val_slides |= {slides[i] for i in rng.permutation(n)[:n_val]}
        for i, row in enumerate(rows):
            out[i][fold] = "test" if row["set"] == "test" else ("valcl" if row["slide"] in val_slides else "train")
        rng = np.random.default_rng([p.seed, fold, 3])
        for label in CLASSES:
            val = [i for i, r in enumerate(rows) if out[i][fold] == "valcl" and r["category"] == label]
            for i in sorted(rng.choice(len(val), size=min(p.valpx_per_class, len(val)), replace=False).tolist()) if val else []:
                out[val[i]][fold] = "valcl+valpx"
    return out


def write_folds(out: Path, rows: list[dict], folds: list[dict[int, str]], p: SamplingParams) -> None:
    staging = temporary_directory(out, ".folds.")
    try:
        write_encoding(staging, CLASSES)
        samples = []
        for row in rows:
            image, mask = patch_paths(row)
            samples.append(Sample(image, CLASSES[row["category"]], (p.patch_size, p.patch_size), (mask,) if mask else ()))
        for fold in range(p.folds):
            splits = {split: [] for split in ("train", "valcl", "valpx", "test")}
            for sample, assignment in zip(samples, folds):
                where = assignment[fold]
                if where == "valcl+valpx":
                    splits["valcl"].append(sample)
                    splits["valpx"].append(sample)
                else:
                    splits[where].append(sample)
            for split, items in splits.items():
                write_split(staging, fold, split, items)
        for old in out.glob("fold-*"):
            if old.is_dir() and old.name[5:].isdigit() and int(old.name[5:]) >= p.folds:
                shutil.rmtree(old)
        for fold in range(p.folds):
            final, new = out / f"fold-{fold}", staging / f"fold-{fold}"
            if final.exists():
                trash = staging / f"old-{fold}"
                final.rename(trash)
            new.rename(final)
        os.replace(staging / "encoding.yaml", out / "encoding.yaml")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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

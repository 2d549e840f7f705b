"""The intervals ``select`` writes (docs/results.md, "Confidence intervals"): per results row,
``<column>_ci_low`` / ``<column>_ci_high`` of every resampled column; ``comparisons.parquet`` (paired
differences of two methods) and ``ranks.parquet`` (each method's rank distribution), from the
per-image statistics stored with each selected model (:meth:`wsolctl.engine.rundir.RunDir.test_images`)
and the bootstrap of :mod:`wsolctl.results.bootstrap`."""
from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import polars as pl

from wsolctl.engine.pseudo import AT_THRESHOLD, Otsu
from wsolctl.engine.rundir import RunDir
from wsolctl.metrics import ACCURACY, Metric, PxAP
from wsolctl.plugins import name_of
from wsolctl.results import bootstrap

COMPARED = (PxAP.name, ACCURACY.name)  # the columns of comparisons.parquet and ranks.parquet (higher is better)
CORRECT = "accuracy"  # the statistics name of each image's correctness, resampled as values (column cl_acc)
Resampler = tuple[str, Sequence[str], Optional[Callable]]


def resamplers(metrics: Sequence[type[Metric]]) -> dict[str, Resampler]:
    """By statistics name: (resampling, columns, resampled) of accuracy and of every metric that
    declares a resampling: the always-on PxAP first, the study's plugins, the internal Otsu metric."""
    out: dict[str, Resampler] = {CORRECT: ("values", (ACCURACY.name,), None)}
    for metric in (PxAP, *metrics, Otsu):
        if metric.resampling:
            out[name_of(metric)] = (metric.resampling, tuple(c.name for c in metric.columns), metric.resampled)
    return out


def add_intervals(out: Path, rows: list[dict], metrics: Sequence[type[Metric]], samples: int,
                  confidence: float) -> tuple[Optional[pl.DataFrame], Optional[pl.DataFrame]]:
    """Add the interval columns to ``rows`` (results rows, in place; null where the run kept no
    per-image statistics) and return (comparisons, ranks) tables (None when nothing was resampled)."""
    methods = resamplers(metrics)
    every = [c for _, names, _ in methods.values() for c in names]
    for row in rows:
        row.update({f"{c}_{end}": None for c in every for end in ("ci_low", "ci_high")})
    groups: dict[tuple, tuple[np.ndarray, list[int]]] = {}  # test set -> (its labels, its rows)
    kept: dict[int, dict[str, np.ndarray]] = {}
    for i, row in enumerate(rows):
        found = RunDir.of(out, row["run_id"]).test_images(row["method"], row["selection"])
        if found is None:
            continue
        images, statistics = found
        if "correct" in images:
            statistics[CORRECT] = 100.0 * images["correct"][:, None]
        kept[i] = statistics
        key = (row["dataset"], row["fold"], row["seed"], images["labels"].tobytes())
        groups.setdefault(key, (images["labels"], []))[1].append(i)
    distributions: dict[tuple[int, str], tuple[float, np.ndarray]] = {}
    for (_, _, seed, _), (labels, members) in groups.items():
        everything = np.ones((1, len(labels)))
        names = [(i, c) for i in members for c in _columns(rows[i], bootstrap.columns(everything, kept[i], methods))]

        def statistic(counts: np.ndarray, members=members, names=names) -> np.ndarray:
            found = {i: bootstrap.columns(counts, kept[i], methods) for i in members}
            return np.stack([found[i][c] for i, c in names])

        result = bootstrap.bootstrap(labels, statistic, samples, confidence, seed)
        for k, (i, column) in enumerate(names):
            rows[i][f"{column}_ci_low"], rows[i][f"{column}_ci_high"] = _number(result.low[k]), _number(result.high[k])
            if column in COMPARED:
                distributions[(i, column)] = (rows[i][column], result.distribution[k])
    if not distributions:
        return None, None
    return _comparisons(rows, distributions, confidence), _ranks(rows, distributions)


def _columns(row: dict, found: dict[str, np.ndarray]) -> list[str]:
    """The row's resampled columns: those it has, less the at-threshold columns of a row whose
    threshold comes from another rule (e.g. b-pseudo's val-pseudo τ: not re-chosen per resample)."""
    fixed = set(AT_THRESHOLD) | {"threshold"} if row.get("threshold_rule", "test-masks") != "test-masks" else set()
    return [c for c in found if c in row and c not in fixed]


def _number(value: float) -> Optional[float]:
    return float(value) if np.isfinite(value) else None


def _by_key(rows: list[dict], distributions: dict) -> dict[tuple, dict[str, dict[tuple, tuple[float, np.ndarray]]]]:
    """(dataset, backbone, selection, column) -> method -> (fold, seed) -> (value, replicates)."""
    out: dict = {}
    for (i, column), value in distributions.items():
        row = rows[i]
        key = (row["dataset"], row["backbone"], row["selection"], column)
        out.setdefault(key, {}).setdefault(row["method"], {})[(row["fold"], row["seed"])] = value
    return out


def _comparisons(rows: list[dict], distributions: dict, confidence: float) -> Optional[pl.DataFrame]:
    """One row per dataset × backbone × selection × column × pair of methods (A before B by name):
    A − B over the folds/seeds both have (mean, sd), its interval and ``p_improvement``."""
    out = []
    for (dataset, backbone, selection, column), methods in _by_key(rows, distributions).items():
        for a, b in combinations(sorted(methods), 2):
            runs = sorted(set(methods[a]) & set(methods[b]))
            if not runs:
                continue
            values = np.array([methods[a][r][0] - methods[b][r][0] for r in runs], dtype=np.float64)
            replicates = bootstrap.two_level([methods[a][r][1] - methods[b][r][1] for r in runs], min(s for _, s in runs))
            out.append({"dataset": dataset, "backbone": backbone, "selection": selection, "metric": column,
                        "method_a": a, "method_b": b, "runs": len(runs), "difference": float(values.mean()),
                        "difference_sd": float(values.std(ddof=1)) if len(runs) > 1 else None,
                        **bootstrap.difference(replicates, np.zeros_like(replicates), confidence)})
    if not out:  # a single method: no pair
        return None
    return pl.DataFrame(out, infer_schema_length=None).with_columns(pl.col("difference_sd").cast(pl.Float64))


def _ranks(rows: list[dict], distributions: dict) -> pl.DataFrame:
    """Share of replicates in which each method takes each rank (1 = best), per dataset × backbone
    × selection × column, over the folds/seeds every method has."""
    out = []
    for (dataset, backbone, selection, column), methods in _by_key(rows, distributions).items():
        names = sorted(methods)
        runs = sorted(set.intersection(*(set(methods[m]) for m in names)))
        if len(names) < 2 or not runs:
            continue
        replicates = bootstrap.two_level([np.stack([methods[m][r][1] for m in names]) for r in runs],
                                         min(s for _, s in runs))
        ranked = bootstrap.ranks(replicates)
        for k, method in enumerate(names):
            found, counts = np.unique(ranked[k], return_counts=True)
            out += [{"dataset": dataset, "backbone": backbone, "selection": selection, "metric": column,
                     "method": method, "rank": int(r), "share": float(c / ranked.shape[1])} for r, c in zip(found, counts)]
    return pl.DataFrame(out, infer_schema_length=None)

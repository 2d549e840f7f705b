"""Confidence intervals, paired comparisons and rank distributions by bootstrap over test images.

What is resampled: the test images, with replacement, **within each class** (a replicate keeps every
class's count, so it always has positive and negative images, like the survey's balanced test sets),
with ``scipy.stats.bootstrap`` (one sample per class, ``vectorized``, percentile intervals), seeded
with the recipe's seed. A replicate is a matrix of counts (how often each image is drawn); every
metric is recomputed from its per-image statistics (:mod:`wsolctl.metrics.base`): pooled metrics such
as PxAP from the counts × per-image histograms, per-image metrics as the counts-weighted mean. All
models scored on one test set (methods, backbones, selection rules of one fold and seed) are
resampled with the **same** replicates, so differences between them are paired.

With several folds or seeds, a comparison resamples the runs first, then the images within them
(two levels): replicate ``b`` draws the runs with replacement and takes for the ``j``-th draw of run
``r`` its image replicate ``(b + j) mod B`` (so a run drawn twice gets two image resamples).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

__all__ = ["Replicates", "bootstrap", "columns", "difference", "percentile_interval", "ranks", "two_level"]

# "values" metrics: a column is the counts-weighted mean of the images' values (NaN: not counted)
Statistic = Callable[[np.ndarray], np.ndarray]  # counts (M, N) -> values (K, M)


@dataclass(frozen=True)
class Replicates:
    """Bootstrap of K values on one test set: point estimates (K,), percentile interval (K,) each,
    and the replicates (K, B), replicate ``b`` of every value drawn from the same images."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    distribution: np.ndarray


def bootstrap(labels: np.ndarray, statistic: Statistic, samples: int, confidence: float, seed: int,
              batch: int = 200) -> Replicates:
    """Resample the images (classes ``labels``, (N,)) within class; ``statistic`` maps image counts
    (M, N) to K values each, (K, M). Deterministic for a given ``seed``."""
    from scipy.stats import DegenerateDataWarning, bootstrap as scipy_bootstrap

    labels = np.asarray(labels)
    n = len(labels)
    by_class = tuple(np.flatnonzero(labels == c) for c in np.unique(labels))

    def on_indices(*drawn: np.ndarray, axis: int = -1) -> np.ndarray:
        """scipy hands the resampled indices of each class, (..., n_c); counts per image."""
        picked = np.concatenate(drawn, axis=-1).astype(np.int64)
        lead = picked.shape[:-1]
        flat = picked.reshape(-1, picked.shape[-1])
        rows = np.arange(len(flat))[:, None] * n
        counts = np.bincount((flat + rows).ravel(), minlength=len(flat) * n).reshape(len(flat), n)
        values = statistic(counts.astype(np.float64))
        return values.reshape(values.shape[0], *lead)

    estimate = statistic(np.ones((1, n)))[:, 0]
    with warnings.catch_warnings():  # a value NaN on some resamples gets a NaN interval, as it should
        warnings.simplefilter("ignore", DegenerateDataWarning)
        result = scipy_bootstrap(by_class, on_indices, vectorized=True, n_resamples=samples, batch=batch,
                                 confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    distribution = np.asarray(result.bootstrap_distribution).reshape(len(estimate), samples)
    interval = result.confidence_interval
    return Replicates(estimate, np.reshape(interval.low, -1), np.reshape(interval.high, -1), distribution)


def percentile_interval(distribution: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The percentile interval along the last axis (NaN where a replicate is NaN)."""
    tail = 100 * (1 - confidence) / 2
    return np.percentile(distribution, tail, axis=-1), np.percentile(distribution, 100 - tail, axis=-1)


def columns(counts: np.ndarray, statistics: Mapping[str, np.ndarray],
            resamplers: Mapping[str, tuple[str, Sequence[str], Optional[Callable]]]) -> dict[str, np.ndarray]:
    """Every column a model's per-image ``statistics`` give on the resamples ``counts`` (M, N).
    ``resamplers``: metric name -> (resampling, its columns, its ``resampled`` for "sums")."""
    sums: dict[str, np.ndarray] = {}
    out: dict[str, np.ndarray] = {}
    for name, stats in statistics.items():
        flat = np.asarray(stats, dtype=np.float64).reshape(len(stats), -1)
        kind = resamplers.get(name, ("", (), None))[0]
        if kind == "sums":
            sums[name] = (counts @ flat).reshape(len(counts), *stats.shape[1:])
        elif kind == "values":
            counted = np.isfinite(flat)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = (counts @ np.where(counted, flat, 0.0)) / (counts @ counted)
            out.update(zip(resamplers[name][1], means.T))
    for kind, names, resampled in resamplers.values():
        if kind == "sums" and not set(names) <= set(out):  # else computed already from the same statistics
            try:
                out.update(resampled(sums))
            except KeyError:  # statistics it reads were not kept
                continue
    return out


def difference(a: np.ndarray, b: np.ndarray, confidence: float) -> dict[str, float]:
    """Paired replicates of A and B (B,) each: the interval of A − B and ``p_improvement`` = share
    of replicates where A > B, ties counting ½ (rliable's probability of improvement)."""
    delta = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    low, high = percentile_interval(delta, confidence)
    improvement = float(np.mean(delta > 0) + 0.5 * np.mean(delta == 0)) if np.isfinite(delta).all() else np.nan
    return {"difference_ci_low": float(low), "difference_ci_high": float(high), "p_improvement": improvement}


def two_level(runs: Sequence[np.ndarray], seed: int) -> np.ndarray:
    """Replicates of the mean over runs, (..., B), from each run's image replicates (..., B): the
    runs are drawn with replacement, then an image replicate within each (module docstring). Arrays
    of several values per run (e.g. methods) are drawn together, so comparisons stay paired."""
    stacked = np.stack([np.asarray(r, dtype=np.float64) for r in runs])  # (R, ..., B)
    if len(stacked) == 1:
        return stacked[0]
    count, samples = len(stacked), stacked.shape[-1]
    drawn = np.random.default_rng(seed).integers(0, count, (samples, count))  # (B, R)
    replicate = (np.arange(samples)[:, None] + np.arange(count)[None, :]) % samples  # (B, R)
    picked = stacked[drawn, ..., replicate]  # (B, R, ...)
    return np.moveaxis(picked.mean(axis=1), 0, -1)


def ranks(values: np.ndarray, lower_is_better: bool = False) -> np.ndarray:
    """Rank of each of K methods (1 = best, ties share the best rank) in each replicate: (K, B)."""
    from scipy.stats import rankdata

    return rankdata(values if lower_is_better else -values, method="min", axis=0).astype(np.int64)

"""Figures of the bootstrap statistics (issue 25): which method beats which (challengeR's
significance map) and how stable the ranking is (its blob plot), from ``comparisons.parquet`` and
``ranks.parquet``."""
from __future__ import annotations

import textwrap
from pathlib import Path

import polars as pl

from wsolctl.results import survey
from wsolctl.results.figures import panels, save

WSOL = "tab:orange"  # the ranking blobs


def _ranked_methods(ranks: pl.DataFrame) -> list[str]:
    """Methods by mean bootstrap rank (best first), then name."""
    mean = ranks.group_by("method").agg((pl.col("rank") * pl.col("share")).sum().alias("mean")).sort(["mean", "method"])
    return mean["method"].to_list()


def significance_map(comparisons: pl.DataFrame, ranks: pl.DataFrame, path: Path, title: str) -> Path:
    """challengeR-style significance map of one dataset, a panel per backbone: cell (row A, column B)
    = the probability that A beats B over paired bootstrap replicates (blue: A better, red: worse);
    ● where the interval of A − B excludes 0 in A's favour. Methods by mean bootstrap rank."""
    import numpy as np

    backbones = survey.ordered(comparisons["backbone"].unique(), "backbones")
    size = max(3.0, 0.42 * comparisons.select(pl.concat_list("method_a", "method_b").explode().n_unique()).item() + 1.8)
    fig, axes = panels(len(backbones), size + 0.8, size, cols=min(2, len(backbones)))
    for ax, backbone in zip(axes, backbones):
        pairs = comparisons.filter(pl.col("backbone") == backbone)
        methods = _ranked_methods(ranks.filter(pl.col("backbone") == backbone))
        where = {m: i for i, m in enumerate(methods)}
        odds = np.full((len(methods), len(methods)), np.nan)
        for r in pairs.iter_rows(named=True):
            a, b = where[r["method_a"]], where[r["method_b"]]
            odds[a, b], odds[b, a] = r["p_improvement"], 1 - r["p_improvement"]
            if r["difference_ci_low"] > 0:
                ax.scatter(b, a, s=28, color="black")
            elif r["difference_ci_high"] < 0:
                ax.scatter(a, b, s=28, color="black")
        image = ax.imshow(odds, cmap="RdBu", vmin=0, vmax=1)
        ax.set_xticks(range(len(methods)), methods, rotation=90, fontsize=7)
        ax.set_yticks(range(len(methods)), methods, fontsize=7)
        ax.set(xlabel="… beats this method", ylabel="this method …", title=survey.backbone_title(backbone))
        ax.title.set_fontsize(9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="P(row beats column)")
    width = fig.get_size_inches()[0]
    fig.suptitle(textwrap.fill(f"{title} — ●: the interval of row − column excludes 0", int(width * 11)), fontsize=9)
    return save(fig, path)


def ranking_stability(ranks: pl.DataFrame, path: Path, title: str) -> Path:
    """Blob plot (challengeR): each method's rank distribution over bootstrap replicates, a panel per
    dataset × backbone; blob area ∝ share of replicates, ✕ the median rank. Methods by mean rank."""
    keys = ranks.select("dataset", "backbone").unique().sort(["dataset", "backbone"]).rows()
    methods_max = ranks["method"].n_unique()
    fig, axes = panels(len(keys), max(3.5, 0.45 * methods_max + 1.5), max(3.4, 0.22 * methods_max + 1.8),
                        cols=min(2, len(keys)))
    for ax, (dataset, backbone) in zip(axes, keys):
        rows = ranks.filter((pl.col("dataset") == dataset) & (pl.col("backbone") == backbone))
        methods = _ranked_methods(rows)
        for x, method in enumerate(methods):
            mine = rows.filter(pl.col("method") == method).sort("rank")
            ax.scatter([x] * len(mine), mine["rank"], s=300 * mine["share"].to_numpy(), color=WSOL, alpha=0.7)
            median = mine["rank"][int((mine["share"].cum_sum() >= 0.5).arg_max())]
            ax.scatter([x], [median], marker="x", color="black", s=30)
        ax.set_xticks(range(len(methods)), methods, rotation=90, fontsize=7)
        ax.set(ylabel="rank (1 = best)", ylim=(len(methods) + 0.5, 0.5), title=f"{dataset} / {survey.backbone_title(backbone)}")
        ax.set_yticks(range(1, len(methods) + 1))
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
    fig.suptitle(textwrap.fill(title, int(fig.get_size_inches()[0] * 11)), fontsize=9)
    return save(fig, path)

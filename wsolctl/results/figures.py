"""Report figures (matplotlib, Agg backend, PNG)."""
from __future__ import annotations

from pathlib import Path

import polars as pl


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def threshold_sensitivity(curves: pl.DataFrame, path: Path, selection: str = "b-loc") -> Path:
    """mIoU (%) against the CAM threshold per method, with the mean over methods (survey Fig. 8)."""
    plt = _pyplot()
    data = curves.filter(pl.col("selection") == selection)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    per_method = []
    for (backbone, method), group in data.group_by(["backbone", "method"], maintain_order=True):
        group = group.group_by("threshold").agg(pl.col("miou").mean()).sort("threshold")
        ax.plot(group["threshold"], group["miou"], lw=1.2, label=f"{method} ({backbone})")
        per_method.append(group)
    if len(per_method) > 1:
        mean = pl.concat(per_method).group_by("threshold").agg(pl.col("miou").mean()).sort("threshold")
        ax.plot(mean["threshold"], mean["miou"], color="black", lw=2.5, label="mean of methods")
    ax.set(xlabel="threshold τ", ylabel="mIoU (%)", xlim=(0, 1), ylim=(0, 100),
           title=f"Localization sensitivity to the threshold ({selection.upper()})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def training_curves(epochs: pl.DataFrame, results: pl.DataFrame, path: Path) -> Path:
    """valpx PxAP and valcl accuracy per epoch; the epochs picked by B-LOC / B-CL are marked."""
    plt = _pyplot()
    keys = epochs.select(["backbone", "method"]).unique(maintain_order=True).rows()
    fig, axes = plt.subplots(len(keys), 1, figsize=(6.5, 2.6 * len(keys)), squeeze=False)
    for ax, (backbone, method) in zip(axes[:, 0], keys):
        rows = epochs.filter((pl.col("backbone") == backbone) & (pl.col("method") == method))
        rows = rows.group_by("epoch").agg(pl.col("valpx_pxap").mean(), pl.col("valcl_acc").mean()).sort("epoch")
        ax.plot(rows["epoch"], rows["valpx_pxap"], marker=".", label="valpx PxAP")
        ax.plot(rows["epoch"], rows["valcl_acc"], marker=".", label="valcl accuracy")
        chosen = results.filter((pl.col("backbone") == backbone) & (pl.col("method") == method))
        for rule, color in (("b-loc", "tab:red"), ("b-cl", "tab:green")):
            for epoch in chosen.filter(pl.col("selection") == rule)["epoch"].unique():
                ax.axvline(epoch, color=color, ls="--", lw=1, label=f"{rule.upper()} epoch")
        ax.set(title=f"{method} ({backbone})", xlabel="epoch", ylabel="%", ylim=(0, 100))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    from wsolctl.results.io import atomic_path

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)
    return path

"""Report figures (matplotlib, Agg backend, PNG written atomically): threshold sensitivity (survey
Fig. 8), model selection (Fig. 9), training curves, qualitative grids (Figs. 12-15)."""
from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from wsolctl.results import survey

WSOL, MEAN, FULL = "tab:orange", "tab:blue", "tab:green"
RULE_COLORS = {"b-loc": "tab:orange", "b-cl": "tab:blue", "b-pseudo": "tab:purple"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(n: int, width: float, height: float, cols: int = 1):
    """A figure with ``n`` axes in a grid of ``cols`` columns; the unused ones are hidden."""
    plt = _pyplot()
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _datasets(frame: pl.DataFrame) -> list[str]:
    return survey.ordered(frame["dataset"].unique(), "datasets") if "dataset" in frame.columns else [None]


def _of(frame: pl.DataFrame, dataset) -> pl.DataFrame:
    return frame if dataset is None else frame.filter(pl.col("dataset") == dataset)


def threshold_sensitivity(curves: pl.DataFrame, path: Path, selection: str = "b-loc") -> Path:
    """mIoU (%) against the CAM threshold, one panel per dataset: every WSOL method × backbone
    (orange), their mean (blue), the fully-supervised method (green)."""
    data = curves.filter(pl.col("selection") == selection)
    datasets = _datasets(data)
    fig, axes = _panels(len(datasets), 7, 3.8)
    for ax, dataset in zip(axes, datasets):
        lines = [(backbone, method, group.group_by("threshold").agg(pl.col("miou").mean()).sort("threshold"))
                 for (backbone, method), group in _of(data, dataset).group_by(["backbone", "method"], maintain_order=True)]
        wsol = [line for _, method, line in lines if survey.method_kind(method) in survey.WSOL_KINDS]
        labelled = len(lines) <= 6
        for backbone, method, line in lines:
            full = survey.method_kind(method) == "fully-supervised"
            label = f"{method} ({backbone})" if labelled else ("fully supervised" if full else None)
            ax.plot(line["threshold"], line["miou"], color=FULL if full else (None if labelled else WSOL),
                    lw=2 if full else 1, alpha=1 if full or labelled else 0.6, label=label)
        if not labelled and wsol:
            ax.plot([], [], color=WSOL, lw=1, label="WSOL methods")
        if len(wsol) > 1:
            mean = pl.concat(wsol).group_by("threshold").agg(pl.col("miou").mean()).sort("threshold")
            ax.plot(mean["threshold"], mean["miou"], color="black" if labelled else MEAN, lw=2.5, label="WSOL average")
        ax.set(xlabel="threshold τ", ylabel="mIoU (%)", xlim=(0, 1), ylim=(0, 100),
               title=f"{dataset or ''} — sensitivity to the threshold ({selection.upper()})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


def model_selection(results: pl.DataFrame, path: Path) -> Path:
    """Selected epoch vs test PxAP of every WSOL method × backbone × fold, B-LOC (orange) and B-CL
    (blue); large circles: the averages over WSOL methods (survey Fig. 9). One panel per dataset."""
    wsol = results.filter(pl.col("method").map_elements(lambda m: survey.method_kind(m) in survey.WSOL_KINDS,
                                                        return_dtype=pl.Boolean))
    datasets = _datasets(results)
    fig, axes = _panels(len(datasets), 7, 3.6)
    for ax, dataset in zip(axes, datasets):
        rows = _of(wsol, dataset)
        for rule, color in RULE_COLORS.items():
            mine = rows.filter(pl.col("selection") == rule)
            if not len(mine):
                continue
            ax.scatter(mine["epoch"], mine["pxap"], s=18, color=color, alpha=0.7, label=rule.upper())
            ax.scatter([mine["epoch"].mean()], [mine["pxap"].mean()], s=260, color=color, edgecolor="black",
                       label=f"{rule.upper()} average")
        ax.set(xlabel="selected epoch", ylabel="test PxAP (%)", title=f"{dataset or ''} — model selection")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def training_curves(epochs: pl.DataFrame, results: pl.DataFrame, path: Path) -> Path:
    """valpx PxAP and valcl accuracy per epoch, one panel per dataset × backbone × method; the
    epochs picked by B-LOC / B-CL are marked."""
    key = ["dataset", "backbone", "method"]
    datasets = _datasets(epochs)
    order = {m: i for i, m in enumerate(m for _, ms in survey.grouped_methods(epochs["method"].unique()) for m in ms)}
    keys = sorted(epochs.select(key).unique().rows(), key=lambda k: (datasets.index(k[0]), order[k[2]], k[1]))
    fig, axes = _panels(len(keys), 4.2, 2.6, cols=min(3, len(keys)))
    for i, (ax, values) in enumerate(zip(axes, keys)):
        match = pl.all_horizontal(*[pl.col(k) == v for k, v in zip(key, values)])
        pseudo = ["valpx_pseudo_pxap"] if "valpx_pseudo_pxap" in epochs.columns else []
        rows = epochs.filter(match).group_by("epoch").agg(
            *[pl.col(c).mean() for c in ("valpx_pxap", "valcl_acc", *pseudo)]).sort("epoch")
        ax.plot(rows["epoch"], rows["valpx_pxap"], marker=".", label="valpx PxAP")
        ax.plot(rows["epoch"], rows["valcl_acc"], marker=".", label="valcl accuracy")
        if pseudo:
            ax.plot(rows["epoch"], rows["valpx_pseudo_pxap"], marker=".", label="valpx PxAP (pseudo-masks)")
        chosen = results.filter(match)
        for rule, color in (("b-loc", "tab:red"), ("b-cl", "tab:green"), ("b-pseudo", "tab:purple")):
            for epoch in chosen.filter(pl.col("selection") == rule)["epoch"].unique():
                ax.axvline(epoch, color=color, ls="--", lw=1, label=f"{rule.upper()} epoch")
        ax.set(title=" / ".join(str(v) for v in reversed(values)), xlabel="epoch", ylabel="%", ylim=(0, 100))
        ax.title.set_fontsize(8)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=6, loc="lower right")
    return _save(fig, path, dpi=80)


def qualitative(examples: dict, columns: list[tuple[str, "object"]], label: int, path: Path, title: str) -> Path:
    """Test images of class ``label`` (rows): the image with its ground-truth contour, then each
    column's CAM over it (survey Figs. 12-15). ``examples``: the arrays of ``images.npz``;
    ``columns``: (title, uint8 CAMs aligned with ``examples``), as stored: CAM-type maps min-max
    normalised, probability maps raw. Drawn on the fixed 0-255 scale, never re-stretched per image,
    so a probability map keeps its absolute level (a normal patch's near-zero map stays blue)."""
    import numpy as np

    index = np.flatnonzero(examples["labels"] == label)
    size = 1.1
    fig, axes = _pyplot().subplots(len(index), 1 + len(columns), figsize=(size * (1 + len(columns)), size * len(index) + 0.5),
                                   squeeze=False)
    for r, i in enumerate(index):
        image, mask = examples["images"][i], examples["masks"][i]
        for c, (name, cams) in enumerate([("image + ground truth", None), *columns]):
            ax = axes[r, c]
            ax.imshow(image)
            if cams is not None:
                ax.imshow(cams[i], cmap="jet", alpha=0.5, vmin=0, vmax=255)
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path, dpi=80)


def _save(fig, path: Path, dpi: int = 100) -> Path:
    """PNG with a 256-colour palette: several times smaller than RGB for CAM overlays, same look."""
    import io

    from PIL import Image

    from wsolctl.io import atomic_path

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    _pyplot().close(fig)
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(256)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return path


def randomisation_curves(checks: pl.DataFrame, path: Path) -> Path:
    """Similarity to the trained model's maps against randomised depth, one line per method (and
    backbone / selection when several), a panel per similarity (sanity check, Adebayo et al.)."""
    names = [("spearman_abs", "Spearman (abs)"), ("spearman_signed", "Spearman (signed)"), ("ssim", "SSIM")]
    fig, axes = _panels(len(names), 4.2, 3.2, cols=len(names))
    keys = checks.select("backbone", "method", "selection").unique(maintain_order=True).rows()
    for ax, (column, title) in zip(axes, names):
        for backbone, method, selection in keys:
            rows = checks.filter((pl.col("backbone") == backbone) & (pl.col("method") == method)
                                 & (pl.col("selection") == selection))
            rows = rows.group_by("depth", "layer").agg(pl.col(column).mean()).sort("depth")
            label = method if len(keys) == len({k[1] for k in keys}) else f"{method} ({backbone}, {selection})"
            ax.plot(rows["depth"], rows[column], marker="o", label=label)
            ax.set_xticks(rows["depth"].to_list(), rows["layer"].to_list(), rotation=45, fontsize=7)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(title=title, xlabel="randomised down to", ylim=(-1.05, 1.05))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def randomisation_maps(rows: list[tuple[str, "object", list[str]]], path: Path) -> Path:
    """One row per method: its map of one image after each randomisation depth (``rows``: title,
    (depths, H, W) uint8 maps, layer names)."""
    plt = _pyplot()
    depths = max(len(layers) for _, _, layers in rows)
    fig, axes = plt.subplots(len(rows), depths, figsize=(1.6 * depths, 1.7 * len(rows)), squeeze=False)
    for r, (title, maps, layers) in enumerate(rows):
        for d in range(depths):
            ax = axes[r][d]
            ax.axis("off")
            if d < len(layers):
                ax.imshow(maps[d], cmap="jet", vmin=0, vmax=255)
                ax.set_title(layers[d] if r == 0 else "", fontsize=7)
        axes[r][0].text(-0.1, 0.5, title, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    return _save(fig, path)

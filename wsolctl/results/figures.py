"""Report figures (matplotlib, Agg backend, PNG written atomically): threshold sensitivity (survey
Fig. 8), model selection (Fig. 9), training curves, qualitative grids (Figs. 12-15)."""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import polars as pl

from wsolctl.results import survey
from wsolctl.selection import REFERENCE, RULES

# maps: perceptually uniform (dark purple → yellow); ground truth in a colour viridis never takes, the
# map's contour at τ* in white (above viridis's brightest yellow)
MAP_CMAP, TRUTH, CONTOUR = "viridis", "red", "white"
REFERENCE_LINE = "grey"  # the fully-supervised methods, repeated in every threshold-sensitivity panel


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panels(n: int, width: float, height: float, cols: int = 1):
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


def _family_colours(methods: list[str]) -> list:
    """Distinct colours for one family's lines: tab10, or tab20 in the order that puts its dark
    shades first (neighbours in the legend never share a hue's two shades)."""
    import matplotlib

    if len(methods) <= 10:
        return list(matplotlib.colormaps["tab10"].colors)
    palette = matplotlib.colormaps["tab20"].colors
    return [palette[i] for i in (*range(0, 20, 2), *range(1, 20, 2))]


def threshold_sensitivity(curves: pl.DataFrame, path: Path, selection: str = REFERENCE) -> Path:
    """mIoU (%) against the CAM threshold, a row of panels per dataset and a panel per WSOL method
    family (survey Fig. 8), each with a labelled line per method (and backbone, when several; mean over
    folds and seeds); every panel repeats the dataset's WSOL average (black; the survey's methods, as
    in the tables) and fully-supervised methods (grey, dashed) as references. A family is a panel of
    its own unless all its methods are fully supervised."""
    present = [rule for rule in RULES if rule in set(curves["selection"])]
    if selection not in present:  # e.g. no masks, so no B-LOC: the first rule that selected models
        selection = present[0]
    data = curves.filter(pl.col("selection") == selection)
    datasets = _datasets(data)
    families = [(family, names) for family, names in survey.families(data["method"].unique())
                if any(survey.method_kind(m) != "fully-supervised" for m in names)]  # the rest: in every panel
    several = data.group_by("method").agg(pl.col("backbone").n_unique())["backbone"].max() > 1
    fig, axes = panels(len(datasets) * len(families), 6.4, 3.6, cols=len(families))

    def lines(rows: pl.DataFrame, methods: list[str]) -> list[tuple[str, pl.DataFrame]]:
        out = []
        for method in methods:
            for (backbone,), group in rows.filter(pl.col("method") == method).group_by(["backbone"], maintain_order=True):
                label = f"{method} ({survey.backbone_title(backbone)})" if several else method
                out.append((label, group.group_by("threshold").agg(pl.col("miou").mean()).sort("threshold")))
        return out

    for d, dataset in enumerate(datasets):
        rows = _of(data, dataset)
        present = rows["method"].unique().to_list()
        wsol = [line for _, line in lines(rows, [m for m in present if survey.in_survey(m)
                                                 and survey.method_kind(m) in survey.WSOL_KINDS])]  # the tables' average
        full = lines(rows, [m for m in present if survey.method_kind(m) == "fully-supervised"])
        for f, (family, names) in enumerate(families):
            ax = axes[d * len(families) + f]
            mine = lines(rows, names)
            for (label, line), colour in zip(mine, _family_colours(names) * 2):
                ax.plot(line["threshold"], line["miou"], color=colour, lw=1.3, label=label)
            for label, line in full:
                ax.plot(line["threshold"], line["miou"], color=REFERENCE_LINE, lw=2, ls="--", label=label)
            if len(wsol) > 1:
                mean = pl.concat(wsol).group_by("threshold").agg(pl.col("miou").mean()).sort("threshold")
                ax.plot(mean["threshold"], mean["miou"], color="black", lw=2.5, label="WSOL average")
            ax.set(xlabel="threshold τ", ylabel="mIoU (%)", xlim=(0, 1), ylim=(0, 100))
            ax.set_title(f"{dataset or ''}: {family} ({RULES[selection].title})", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), ncol=1 + len(mine) // 14)
    return save(fig, path)


def model_selection(results: pl.DataFrame, path: Path) -> Path:
    """Selected epoch vs test PxAP of every WSOL method × backbone × fold, one colour per selection
    rule; large circles: the averages over WSOL methods (survey Fig. 9). One panel per dataset."""
    wsol = results.filter(pl.col("method").map_elements(lambda m: survey.method_kind(m) in survey.WSOL_KINDS,
                                                        return_dtype=pl.Boolean))
    datasets = _datasets(results)
    fig, axes = panels(len(datasets), 7, 3.6)
    for ax, dataset in zip(axes, datasets):
        rows = _of(wsol, dataset)
        for rule in RULES.values():
            mine = rows.filter(pl.col("selection") == rule.name)
            if not len(mine):
                continue
            ax.scatter(mine["epoch"], mine["pxap"], s=18, color=rule.color, alpha=0.7, label=rule.title)
            ax.scatter([mine["epoch"].mean()], [mine["pxap"].mean()], s=260, color=rule.color, edgecolor="black",
                       label=f"{rule.title} average")
        ax.set(xlabel="selected epoch", ylabel="test PxAP (%)", title=f"{dataset or ''} — model selection")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, path)


@dataclass
class _Curves:
    """One panel of the training curves: a method on a backbone, under its family."""

    family: str
    method: str
    backbone: str


TRAINING_COLUMNS = 8  # panels per row of the training curves: the sheet stays about a screen wide


def training_curves(epochs: pl.DataFrame, results: pl.DataFrame, path: Path) -> Path:
    """Small multiples, a panel per method × backbone, grouped by family (a family starts a row,
    named on the left): each selection rule's validation metric per epoch (valpx PxAP, valcl
    accuracy… in the rule's colour), a line style per dataset, the epoch each rule picked marked on
    its curve; means over folds and seeds. One legend for the sheet."""
    from matplotlib.lines import Line2D

    datasets = _datasets(epochs)
    styles = {d: ("-", "--", ":", "-.")[i % 4] for i, d in enumerate(datasets)}
    rules = [rule for rule in RULES.values() if rule.metric in epochs.columns]
    curves: dict[str, object] = {}  # metric -> the first rule reading it
    for rule in rules:
        curves.setdefault(rule.metric, rule)
    backbones = {m: survey.ordered(epochs.filter(pl.col("method") == m)["backbone"].unique(), "backbones")
                 for m in epochs["method"].unique()}
    usual = epochs["backbone"].mode().sort()[0]  # panels on another backbone name theirs
    panels = [_Curves(family, m, b) for family, ms in survey.families(epochs["method"].unique()) for m in ms
              for b in backbones[m]]
    rows = _grid_rows(panels, TRAINING_COLUMNS)
    width = max(len(mine) for _, mine in rows)
    height = 1.9 * len(rows)
    fig, axes = _pyplot().subplots(len(rows), width, figsize=(2.1 * width, height + 0.5), squeeze=False)
    for r, (family, mine) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            if c >= len(mine):
                ax.set_visible(False)
                continue
            panel = mine[c]
            match = (pl.col("method") == panel.method) & (pl.col("backbone") == panel.backbone)
            for dataset in datasets:
                history = _of(epochs.filter(match), dataset)
                history = history.group_by("epoch").agg(*[pl.col(m).mean() for m in curves]).sort("epoch")
                for metric, rule in curves.items():
                    ax.plot(history["epoch"], history[metric], color=rule.color, ls=styles[dataset], lw=1.2)
                chosen = _of(results.filter(match), dataset)
                for rule in rules:
                    picked = history.filter(pl.col("epoch").is_in(chosen.filter(pl.col("selection") == rule.name)["epoch"].implode()))
                    ax.plot(picked["epoch"], picked[rule.metric], ls="none", marker="o", ms=7, color=rule.color, mec="black")
            title = panel.method if panel.backbone == usual else f"{panel.method} ({survey.backbone_title(panel.backbone)})"
            ax.set_title(title, fontsize=8)
            ax.set_ylim(0, 100)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if c == 0:
                first = r == 0 or rows[r - 1][0] != family
                ax.set_ylabel((family.replace(": ", ":\n") + "\n" if first else "") + "%", fontsize=8,
                              fontweight="bold" if first else "normal")
    handles = [Line2D([], [], color=rule.color, label=rule.metric_title) for rule in curves.values()]
    handles += [Line2D([], [], color="black", ls=styles[d], label=d) for d in datasets if d is not None]
    handles += [Line2D([], [], ls="none", marker="o", color=rule.color, mec="black", label=f"{rule.title} epoch")
                for rule in rules]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8,
               title="x: epoch; y: validation metric (%)", title_fontsize=8)
    return save(fig, path, dpi=80, rect=(0, 0, 1, height / (height + 0.5)))


@dataclass
class MapColumn:
    """One method's maps in a qualitative grid: ``cams`` (N, h, w) uint8 aligned with the examples, as
    stored (CAM-type maps min-max normalised, probability maps raw); ``threshold``: the τ (in [0, 1])
    whose contour is drawn, None for none."""

    title: str
    family: str
    cams: "object"
    threshold: Optional[float] = None


QUALITATIVE_COLUMNS = 8  # at most this many maps per row (survey Figs. 12-15 read as a grid)
PANEL_INCHES, QUALITATIVE_DPI = 2.0, 100  # thumbnails of ≥ 160 px once titles and margins are taken


def _grid_rows(columns: list[MapColumn], cols: int) -> list[tuple[str, list[MapColumn]]]:
    """Rows of at most ``cols`` maps, a family never sharing a row with another: [(family, maps)]."""
    rows: list[tuple[str, list[MapColumn]]] = []
    for column in columns:
        if rows and rows[-1][0] == column.family and len(rows[-1][1]) < cols:
            rows[-1][1].append(column)
        else:
            rows.append((column.family, [column]))
    return rows


def qualitative(examples: dict, columns: list[MapColumn], label: int, path: Path, title: str,
                cols: int = QUALITATIVE_COLUMNS) -> Path:
    """The test images of class ``label``, one block each (survey Figs. 12-15): the image with its
    ground-truth contour and the ground-truth mask first, then every method's map over the image,
    wrapped at ``cols`` per row and grouped by method family (one family per row, named on the left),
    each with its name, the ground-truth contour (``TRUTH``) and the contour of the map at its threshold
    (white); a colour bar beside the first image. ``examples``: the arrays of ``images.npz``. Maps are
    drawn on the fixed 0-255 scale, never re-stretched per image, so a probability map keeps its
    absolute level."""
    import numpy as np

    index = np.flatnonzero(examples["labels"] == label)
    rows = _grid_rows(columns, cols)
    width = max([4] + [len(maps) for _, maps in rows])  # ≥ 4: the image row holds the colour bar
    layout = [("image", None)]
    for family, maps in rows:
        layout.append((family, maps))
    height = PANEL_INCHES * 1.12 * len(index) * len(layout)
    fig, axes = _pyplot().subplots(len(index) * len(layout), width, squeeze=False,
                                   figsize=(PANEL_INCHES * width, height + 0.6))
    for ax in axes.flat:
        ax.set_axis_off()
    for b, i in enumerate(index):
        image, mask = examples["images"][i], examples["masks"][i].astype(float)
        image_id = Path(str(examples["ids"][i])).stem if "ids" in examples else str(i)
        for r, (family, maps) in enumerate(layout):
            line = axes[b * len(layout) + r]
            if maps is None:
                _panel(line[0], image, mask, None, None, image_id if len(image_id) <= 20 else "…" + image_id[-19:])
                line[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
                line[1].set_title("ground truth", fontsize=9)
                if b == 0:
                    _colour_bar(fig, line[2])
                continue
            for c, column in enumerate(maps):
                _panel(line[c], image, mask, column.cams[i], column.threshold, column.title)
            if r == 1 or family != layout[r - 1][0]:
                line[0].text(-0.08, 0.5, family.replace(": ", ":\n"), transform=line[0].transAxes, rotation=90,
                             ha="right", va="center", fontsize=9, fontweight="bold")
    legend = f"{title} — red: ground truth; white: each map's contour at its threshold τ*"
    fig.suptitle(textwrap.fill(legend, int(PANEL_INCHES * width * 9)), fontsize=11)
    return save(fig, path, dpi=QUALITATIVE_DPI, rect=(0, 0, 1, height / (height + 0.6)))


def _colour_bar(fig, ax) -> None:
    """The maps' colour scale, drawn horizontally across ``ax`` (an empty panel) and the next."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), MAP_CMAP), cax=ax.inset_axes((0.05, 0.55, 1.9, 0.12)),
                       orientation="horizontal")
    bar.set_label("map value (CAM min-max normalised; (p): probability)", fontsize=9)
    bar.ax.tick_params(labelsize=8)
    bar.ax.set_in_layout(False)  # it overhangs its panel on purpose: tight_layout must not shrink the grid for it


def _panel(ax, image, mask, cam, threshold: Optional[float], name: str) -> None:
    """The image, the map over it (``MAP_CMAP``, 0-255) with its contour at ``threshold``, the
    ground-truth contour."""
    ax.set_axis_on()
    ax.imshow(image)
    if cam is not None:
        ax.imshow(cam, cmap=MAP_CMAP, alpha=0.6, vmin=0, vmax=255)
        if threshold is not None and cam.min() < 255 * threshold < cam.max():
            ax.contour(cam.astype(float), levels=[255 * threshold], colors=CONTOUR, linewidths=1.0)
    if mask.any():
        ax.contour(mask, levels=[0.5], colors=TRUTH, linewidths=1.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(name, fontsize=9)


def save(fig, path: Path, dpi: int = 100, rect=(0, 0, 1, 1)) -> Path:
    """PNG with a 256-colour palette: several times smaller than RGB for CAM overlays, same look;
    ``rect``: the part of the figure the axes fill (the rest: the title's)."""
    import io

    from PIL import Image

    from wsolctl.io import atomic_path

    fig.tight_layout(rect=rect)
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
    names = [(column, title) for column, title in (("spearman_abs", "Spearman (abs)"), ("spearman_signed", "Spearman (signed)"),
                                                   ("ssim", "SSIM"), ("hog", "HOG similarity")) if column in checks.columns]
    fig, axes = panels(len(names), 4.2, 3.2, cols=len(names))
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
    return save(fig, path)


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
                ax.imshow(maps[d], cmap=MAP_CMAP, vmin=0, vmax=255)
                ax.set_title(layers[d] if r == 0 else "", fontsize=7)
        axes[r][0].text(-0.1, 0.5, title, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    return save(fig, path)

"""The survey's tables (Rony et al., Tables 1-5) computed from ``results.parquet`` rows.

Every table is a :class:`Table` of Markdown cells: methods grouped
bottom-up / top-down / fully supervised in the survey's order, one column per backbone, mean ± std
over folds and seeds, a "WSOL average" row and the best WSOL value of each column in bold (lower is
better for FN* and FP*). Torch-free.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Optional

import polars as pl

from wsolctl import plugins
from wsolctl.errors import UnknownPlugin
from wsolctl.results.blocks import Table

UNRANKED = 1000  # the default survey_rank of plugins

KIND_TITLES = {"bottom-up": "Bottom-up WSOL", "top-down": "Top-down WSOL", "fully-supervised": "Fully supervised",
               "other": "Other (kind unknown: plugin not installed)"}
WSOL_KINDS = ("bottom-up", "top-down")
# Metrics beyond PxAP (wsolctl/metrics_extra.py), each a table when results.parquet has it:
# column -> (title, caption, lower is better).
EXTRA = {
    "dice_fg": ("Foreground Dice at τ*", "Dice = 2TP / (2TP + FN + FP) of the foreground at τ*, the test "
                "threshold of best mIoU (%)", False),
    "iou_fg": ("Foreground IoU at τ*", "IoU = TP / (TP + FN + FP) of the foreground at τ* (%)", False),
    "maxboxacc_v2": ("MaxBoxAccV2", "wsolevaluation's MaxBoxAccV2: % of images with foreground whose best "
                     "contour box has IoU ≥ δ with a ground-truth box (boxes of the mask's components), "
                     "best threshold, mean over δ = 30, 50, 70 %", False),
    "pointing_game": ("Pointing game", "% of images with foreground whose map maximum lies in the mask "
                      "(ties count fractionally)", False),
    "deletion_auc": ("Deletion AUC", "RISE deletion: area under the target-class probability as the "
                     "top-ranked pixels are replaced by the mean colour (%); lower is better", True),
    "insertion_auc": ("Insertion AUC", "RISE insertion: area under the target-class probability as the "
                      "top-ranked pixels are put back onto a blurred image (%); higher is better", False),
    "road_morf": ("ROAD MoRF", "ROAD (Rong et al. 2022): change of the target-class probability (points) when "
                  "the most relevant pixels are imputed (noisy linear), mean over percentiles; lower is better", True),
    "road_lerf": ("ROAD LeRF", "ROAD: the same when the least relevant pixels are imputed; higher is better", False),
}
FIRST_CLASS = ("dice_fg", "iou_fg")  # shown right after Table 1
METRICS = ["pxap", "tp", "fn", "fp", "tn", "cl_acc", "epoch", *EXTRA]
LOWER_IS_BETTER = {"fn", "fp", *(m for m, (_, _, lower) in EXTRA.items() if lower)}
AVERAGE = "WSOL average"


# ----------------------------------------------------------------------------- ordering
def base_name(method: str) -> str:
    """``name[i]`` (a method listed twice in a recipe) → ``name``."""
    return method.split("[", 1)[0]


def _plugin(kind: str, name: str) -> Any:
    """The registered plugin class of that name, or None (not installed here, or a name only a
    fallback resolves, e.g. a timm backbone: the table still renders, without importing timm)."""
    if name not in plugins.registered(kind):
        return None
    try:
        return plugins.load(kind, name)
    except UnknownPlugin:
        return None


def _rank(kind: str, name: str) -> tuple[int, str]:
    """Survey order first (the plugin's ``survey_rank``), then by name."""
    return getattr(_plugin(kind, name), "survey_rank", UNRANKED), name


def method_kind(method: str) -> str:
    return getattr(_plugin("methods", base_name(method)), "kind", "other")


def grouped_methods(methods) -> list[tuple[str, list[str]]]:
    """[(kind, methods in the survey's order, others after, by name)], non-empty groups."""
    kinds = {m: method_kind(m) for m in set(methods)}
    groups = [(kind, sorted((m for m in kinds if kinds[m] == kind), key=lambda m: (_rank("methods", base_name(m)), m)))
              for kind in KIND_TITLES]
    return [(kind, ms) for kind, ms in groups if ms]


def ordered(values, kind: str) -> list[str]:
    """Distinct plugin names of ``kind`` (datasets, backbones) in the survey's order, others after."""
    return sorted(set(values), key=lambda v: _rank(kind, v))


def backbone_title(name: str) -> str:
    return getattr(_plugin("backbones", name), "title", "") or name


# ----------------------------------------------------------------------------- statistics
def summarise(results: pl.DataFrame) -> pl.DataFrame:
    """One row per dataset × backbone × method × selection: n, mean and std (over folds and seeds)."""
    present = [m for m in METRICS if m in results.columns]
    return results.group_by(["dataset", "backbone", "method", "selection"]).agg(
        pl.len().alias("n"), *[pl.col(m).mean().alias(m) for m in present],
        *[pl.col(m).std().alias(f"{m}_std") for m in present])


class Stats:
    """Lookup of (mean, std, n) by (backbone, method, selection, metric) for one dataset."""

    def __init__(self, summary: pl.DataFrame):
        self._rows = {(r["backbone"], r["method"], r["selection"]): r for r in summary.iter_rows(named=True)}

    def get(self, backbone: str, method: str, selection: str, metric: str) -> Optional[tuple[float, Optional[float], int]]:
        row = self._rows.get((backbone, method, selection))
        if row is None or row.get(metric) is None or _nan(row[metric]):
            return None
        std = row.get(f"{metric}_std")
        return row[metric], (None if std is None or _nan(std) or row["n"] < 2 else std), row["n"]


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------- cells
def fmt(value: Optional[tuple], bold: bool = False, digits: int = 1) -> str:
    if value is None:
        return "–"
    mean, std, _ = value
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
    return f"**{text}**" if bold else text


def best(values: list[Optional[tuple]], lower: bool) -> Optional[float]:
    """The best mean, rounded as displayed (ties are all bold)."""
    means = [round(v[0], 1) for v in values if v is not None]
    return (min(means) if lower else max(means)) if means else None


class Column:
    """One table column: how to get a method's value, and whether lower is better."""

    def __init__(self, title: str, value: Callable[[str], Optional[tuple]], lower: bool = False):
        self.title, self.value, self.lower = title, value, lower


def build(title: str, columns: list[Column], methods: list[str], caption: str) -> Table:
    """Rows: group headers, methods, the WSOL average (before the fully-supervised group); the best
    WSOL value of each column in bold."""
    groups = grouped_methods(methods)
    wsol = [m for kind, ms in groups if kind in WSOL_KINDS for m in ms]
    values = {m: [c.value(m) for c in columns] for kind, ms in groups for m in ms}
    average = [_average([values[m][j] for m in wsol]) for j in range(len(columns))]
    bests = [best([values[m][j] for m in wsol], c.lower) for j, c in enumerate(columns)]
    rows = []
    for kind, ms in groups:
        if kind == "fully-supervised" and len(wsol) > 1:
            rows.append(_row(f"*{AVERAGE}*", average, [None] * len(columns)))
        rows.append([f"*{KIND_TITLES[kind]}*"] + [""] * len(columns))
        for m in ms:
            rows.append(_row(m, values[m], bests if m in wsol else [None] * len(columns)))
    if len(wsol) > 1 and "fully-supervised" not in dict(groups):
        rows.append(_row(f"*{AVERAGE}*", average, [None] * len(columns)))
    return Table(title, ["method"] + [c.title for c in columns], rows, caption)


def _average(values: list[Optional[tuple]]) -> Optional[tuple]:
    means = [v[0] for v in values if v is not None]
    return (_mean(means), None, len(means)) if means else None


def _row(label: str, values: list[Optional[tuple]], bests: list[Optional[float]]) -> list[str]:
    return [label] + [fmt(v, bold=v is not None and b is not None and round(v[0], 1) == b)
                      for v, b in zip(values, bests)]


# ----------------------------------------------------------------------------- the tables
def _backbone_mean(stats: Stats, backbones: list[str], selection: str, metric: str):
    def value(method: str) -> Optional[tuple]:
        means = [v[0] for b in backbones if (v := stats.get(b, method, selection, metric)) is not None]
        return (_mean(means), None, len(means)) if means else None

    return value


def metric_table(stats: Stats, backbones: list[str], methods: list[str], metric: str, title: str,
                 caption: str) -> Table:
    """One metric under B-LOC, method × backbone, with the mean over backbones."""
    lower = metric in LOWER_IS_BETTER
    columns = [Column(backbone_title(b), lambda m, b=b: stats.get(b, m, "b-loc", metric), lower) for b in backbones]
    columns.append(Column("mean over backbones", _backbone_mean(stats, backbones, "b-loc", metric), lower))
    return build(title, columns, methods, caption + "; mean ± std over folds/seeds where there are several; "
                 f"best WSOL value per column in bold{' (lowest)' if lower else ''}.")


def table1(stats: Stats, backbones: list[str], methods: list[str], dataset: str) -> Table:
    """PxAP, B-LOC, method × backbone, with the mean over backbones."""
    return metric_table(stats, backbones, methods, "pxap", f"PxAP, B-LOC selection (survey Table 1), `{dataset}`",
                        "Test PxAP (%)")


def extra_tables(stats: Stats, backbones: list[str], methods: list[str], dataset: str,
                 metrics: list[str]) -> list[Table]:
    """A table per metric of ``EXTRA`` (B-LOC selection)."""
    return [metric_table(stats, backbones, methods, m, f"{EXTRA[m][0]}, B-LOC selection, `{dataset}`", EXTRA[m][1])
            for m in metrics]


def confusion_table(stats: Stats, backbones: list[str], methods: list[str], dataset: str) -> Table:
    """TP*, FN*, FP*, TN* per backbone, B-LOC (survey Tables 2-3)."""
    columns = [Column(f"{backbone_title(b)} {title}", lambda m, b=b, k=k: stats.get(b, m, "b-loc", k), k in LOWER_IS_BETTER)
               for b in backbones for k, title in (("tp", "TP*"), ("fn", "FN*"), ("fp", "FP*"), ("tn", "TN*"))]
    return build(f"Confusion components, B-LOC selection (survey Tables 2–3), `{dataset}`", columns, methods,
                 "TP*, FN* in % of ground-truth foreground pixels, FP*, TN* in % of background pixels, each "
                 "averaged over the thresholds (survey eqs. 21–24). Bold: best WSOL value (lowest for FN*, FP*). "
                 "High FN* = under-activation, high FP* = over-activation.")


def pair_table(stats: Stats, backbones: list[str], methods: list[str], dataset: str, metric: str) -> Table:
    """``metric`` under B-LOC / B-CL side by side (survey Table 4: PxAP, Table 5: accuracy)."""
    rules = ("b-loc", "b-cl")
    columns = [Column(f"{backbone_title(b)} {r.upper()}", lambda m, b=b, r=r: stats.get(b, m, r, metric))
               for b in backbones for r in rules]
    columns += [Column(f"mean {r.upper()}", _backbone_mean(stats, backbones, r, metric)) for r in rules]
    table = build("", columns, methods, "")
    header = ["method"] + [f"{backbone_title(b)}" for b in backbones] + ["mean over backbones"]
    rows = [[row[0]] + [_pair(row[1 + 2 * j], row[2 + 2 * j]) for j in range(len(header) - 1)] for row in table.rows]
    name, number = ("PxAP", 4) if metric == "pxap" else ("Classification accuracy", 5)
    return Table(f"{name}, B-LOC / B-CL selection (survey Table {number}), `{dataset}`", header, rows,
                 f"Test {name.lower() if number == 5 else name} (%) of the model selected by B-LOC (best validation PxAP) / by B-CL (best "
                 "validation accuracy). Bold: best WSOL value per column and rule.")


def _pair(left: str, right: str) -> str:
    if left == right and left in ("", "–"):  # a group header row, or no value under either rule
        return left
    return f"{left} / {right}"


def dataset_tables(results: pl.DataFrame) -> list[tuple[str, list[Table]]]:
    """[(dataset, [Table 1, Dice and IoU at τ*, Tables 2-3, Table 4, Table 5, the other metrics beyond
    PxAP])] for every dataset of ``results`` (tables of metrics it lacks are left out)."""
    out = []
    for dataset in ordered(results["dataset"].unique(), "datasets"):
        rows = results.filter(pl.col("dataset") == dataset)
        stats = Stats(summarise(rows))
        backbones = ordered(rows["backbone"].unique(), "backbones")
        methods = rows["method"].unique().to_list()
        present = [c for c in EXTRA if c in rows.columns and rows[c].is_not_null().any()]
        first = [c for c in present if c in FIRST_CLASS]
        tables = [table1(stats, backbones, methods, dataset), *extra_tables(stats, backbones, methods, dataset, first),
                  confusion_table(stats, backbones, methods, dataset), pair_table(stats, backbones, methods, dataset, "pxap")]
        if "cl_acc" in rows.columns:
            tables.append(pair_table(stats, backbones, methods, dataset, "cl_acc"))
        tables += extra_tables(stats, backbones, methods, dataset, [c for c in present if c not in first])
        out.append((dataset, tables))
    return out

"""The survey's tables (Rony et al., Tables 1-5) computed from ``results.parquet`` rows.

Every table is a :class:`Table` of Markdown cells: methods grouped
bottom-up / top-down / fully supervised in the survey's order, one column per backbone, mean ± std
over folds and seeds, a "WSOL average" row and the best WSOL value of each column in bold (lower is
better for FN* and FP*). Torch-free.

Only the methods whose plugin declares ``in_survey`` (the survey's own) enter those tables; every
other method (Score-CAM family, PixelCAM, SAT, third-party plugins) gets the same tables in a
"Beyond the survey" group of its own (:func:`beyond_tables`), so that it never shifts the survey's
WSOL average nor its bold best values.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable, Optional

import polars as pl

from wsolctl import metrics as registry, plugins
from wsolctl.errors import UnknownPlugin
from wsolctl.metrics import ReportTable
from wsolctl.results.blocks import Table
from wsolctl.selection import REFERENCE

UNRANKED = 1000  # the default survey_rank of plugins

KIND_TITLES = {"bottom-up": "Bottom-up WSOL", "top-down": "Top-down WSOL", "fully-supervised": "Fully supervised",
               "other": "Other (kind unknown: plugin not installed)"}
WSOL_KINDS = ("bottom-up", "top-down")
BUILT_IN = [*(c.name for c in registry.PxAP.columns), registry.ACCURACY.name, "epoch"]  # always in results.parquet
BEYOND = "Beyond the survey"
AVERAGE = "WSOL average"
EXTENSION = "†"  # marks a selection rule the survey does not apply to a method
# the reference rows of the PxAP tables: results.parquet column -> row label (in no average, never bold)
REFERENCES = {c.name: c.title for c in registry.REFERENCE_COLUMNS}
REFERENCE_NOTE = ("Reference rows, in no average and no ranking: the all-foreground map (its PxAP is the fraction "
                  "of ROI pixels) and the untrained model (each WSOL method's maps from the run's epoch-0 checkpoint, "
                  "the seeded, unfitted backbone + head; mean over the table's WSOL methods; –: not scored, for "
                  "runs trained before wsolctl kept that checkpoint).")


def metric_tables() -> list[tuple[Any, ReportTable]]:
    """(metric plugin, table) of every installed metric, in the report's order."""
    return [(metric, table) for metric in registry.installed() for table in metric.tables]


def lower_is_better() -> set[str]:
    """Columns where a lower value is better, as their metrics declare (FN*, FP*...)."""
    return {c.name for metric in registry.declared() for c in metric.columns if c.lower_is_better}


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


def selected_in_survey(method: str, selection: str) -> bool:
    """Whether the survey selects ``method`` by ``selection`` (the plugin's ``survey_selection``); other
    rules are this tool's extensions (NEGEV and U-Net: B-LOC only in the survey)."""
    return selection in getattr(_plugin("methods", base_name(method)), "survey_selection", (selection,))


def in_survey(method: str) -> bool:
    """Whether the method is one of the survey's: its plugin class sets ``in_survey`` itself (a
    subclass of a survey method, or a plugin not installed here, is not)."""
    plugin = _plugin("methods", base_name(method))
    return plugin is not None and bool(vars(plugin).get("in_survey", False))


def for_histology(method: str) -> bool:
    """Whether the method declares it was designed for histology images (``Method.for_histology``)."""
    return bool(getattr(_plugin("methods", base_name(method)), "for_histology", False))


def split_survey(methods) -> tuple[list[str], list[str]]:
    """(the survey's methods, the others), each in the order given."""
    methods = list(methods)
    return [m for m in methods if in_survey(m)], [m for m in methods if not in_survey(m)]


def families(methods) -> list[tuple[str, list[str]]]:
    """[(title, methods)]: the survey's groups (:func:`grouped_methods`), then the methods beyond the
    survey grouped the same way; the order of the report and of its figures."""
    ours, others = split_survey(set(methods))
    return ([(KIND_TITLES[kind], ms) for kind, ms in grouped_methods(ours)]
            + [(f"{BEYOND}: {KIND_TITLES[kind]}", ms) for kind, ms in grouped_methods(others)])


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
    present = [m for m in BUILT_IN + list(REFERENCES) + [t.column for _, t in metric_tables()] if m in results.columns]
    bounds = [f"{m}_{end}" for m in present for end in ("ci_low", "ci_high") if f"{m}_{end}" in results.columns]
    return results.group_by(["dataset", "backbone", "method", "selection"]).agg(
        pl.len().alias("n"), *[pl.col(m).mean().alias(m) for m in present],
        *[pl.col(m).std().alias(f"{m}_std") for m in present], *[pl.col(b).first() for b in bounds])


class Stats:
    """Lookup of (mean, std, n, interval) by (backbone, method, selection, metric) for one dataset;
    the bootstrap interval (low, high) of a single run, else None."""

    def __init__(self, summary: pl.DataFrame):
        self._rows = {(r["backbone"], r["method"], r["selection"]): r for r in summary.iter_rows(named=True)}

    def get(self, backbone: str, method: str, selection: str, metric: str) -> Optional[tuple]:
        row = self._rows.get((backbone, method, selection))
        if row is None or row.get(metric) is None or _nan(row[metric]):
            return None
        std = row.get(f"{metric}_std")
        low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
        interval = (low, high) if row["n"] == 1 and low is not None and high is not None else None
        return row[metric], (None if std is None or _nan(std) or row["n"] < 2 else std), row["n"], interval


def _nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


# ----------------------------------------------------------------------------- cells
def fmt(value: Optional[tuple], bold: bool = False, digits: int = 1) -> str:
    if value is None:
        return "–"
    mean, std, interval = value[0], value[1], value[3] if len(value) > 3 else None
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
    text = f"**{text}**" if bold else text
    return text + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval is not None else "")


def best(values: list[Optional[tuple]], lower: bool) -> Optional[float]:
    """The best mean, rounded as displayed (ties are all bold)."""
    means = [round(v[0], 1) for v in values if v is not None]
    return (min(means) if lower else max(means)) if means else None


class Column:
    """One table column: how to get a method's value, and whether lower is better."""

    def __init__(self, title: str, value: Callable[[str], Optional[tuple]], lower: bool = False):
        self.title, self.value, self.lower = title, value, lower


def build(title: str, columns: list[Column], methods: list[str], caption: str,
          references: Optional[dict[str, list[Callable[[list[str]], Optional[tuple]]]]] = None) -> Table:
    """Rows: group headers, methods, the WSOL average (before the fully-supervised group), then the
    ``references`` (label -> its columns' values, after every method, in no average); the best WSOL
    value of each column in bold."""
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
    for label, cells in (references or {}).items():
        rows.append(_row(f"*{label}*", [value(wsol or methods) for value in cells], [None] * len(columns)))
    return Table(title, ["method"] + [c.title for c in columns], rows, caption)


def _reference(stats: "Stats", backbones: list[str], column: str):
    """A reference row's value over ``methods`` (the table's WSOL methods): the mean of ``column``
    (a per-run reference, e.g. ``untrained_pxap``) over them and the given backbones, for their B-LOC rows."""
    def value(methods: list[str]) -> Optional[tuple]:
        found = [v[0] for b in backbones for m in methods if (v := stats.get(b, m, REFERENCE, column)) is not None]
        return (_mean(found), None, len(found)) if found else None

    return value


def _references(stats: "Stats", per_column: list[list[str]]) -> dict[str, list[Callable]]:
    """The reference rows (:data:`REFERENCES`) of a PxAP table whose columns cover ``per_column``
    backbones each."""
    return {label: [_reference(stats, bs, column) for bs in per_column] for column, label in REFERENCES.items()}


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
    lower = metric in lower_is_better()
    columns = [Column(backbone_title(b), lambda m, b=b: stats.get(b, m, "b-loc", metric), lower) for b in backbones]
    columns.append(Column("mean over backbones", _backbone_mean(stats, backbones, "b-loc", metric), lower))
    references = _references(stats, [[b] for b in backbones] + [backbones]) if metric == "pxap" else None
    return build(title, columns, methods, caption + "; mean ± std over folds/seeds where there are several; "
                 f"best WSOL value per column in bold{' (lowest)' if lower else ''}."
                 + (f" {REFERENCE_NOTE}" if references else ""), references)


def table_title(name: str, dataset: str, survey_ref: str = "", beyond: bool = False) -> str:
    """A table's title: ``name (survey ref), `dataset```; beyond the survey, no survey reference."""
    if beyond:
        return f"{BEYOND}: {name}, `{dataset}`"
    return f"{name}{f' (survey {survey_ref})' if survey_ref else ''}, `{dataset}`"


def table1(stats: Stats, backbones: list[str], methods: list[str], dataset: str, beyond: bool = False) -> Table:
    """PxAP, B-LOC, method × backbone, with the mean over backbones; the caption adds the methods'
    ``report_note`` (conventions a reader needs, e.g. the sign of Eigen-CAM's component)."""
    table = metric_table(stats, backbones, methods, "pxap", table_title("PxAP, B-LOC selection", dataset, "Table 1", beyond),
                         "Test PxAP (%)")
    notes = dict.fromkeys(getattr(_plugin("methods", base_name(m)), "report_note", "") for m in methods)
    return replace(table, caption=" ".join([table.caption, *filter(None, notes)]))


def plugin_tables(stats: Stats, backbones: list[str], methods: list[str], dataset: str,
                  tables: list[ReportTable], beyond: bool = False) -> list[Table]:
    """The tables metric plugins declare (B-LOC selection)."""
    return [metric_table(stats, backbones, methods, t.column,
                         table_title(f"{t.title}, B-LOC selection", dataset, beyond=beyond), t.caption)
            for t in tables]


def confusion_table(stats: Stats, backbones: list[str], methods: list[str], dataset: str,
                    beyond: bool = False) -> Table:
    """TP*, FN*, FP*, TN* per backbone, B-LOC (survey Tables 2-3)."""
    confusion = [c for c in registry.PxAP.columns if c.name in registry.PxAP.confusion]
    columns = [Column(f"{backbone_title(b)} {c.title}", lambda m, b=b, k=c.name: _value(stats.get(b, m, "b-loc", k)),
                      c.lower_is_better) for b in backbones for c in confusion]
    return build(table_title("Confusion components, B-LOC selection", dataset, "Tables 2–3", beyond), columns, methods,
                 "TP*, FN* in % of ground-truth foreground pixels, FP*, TN* in % of background pixels, each "
                 "averaged over the thresholds (survey eqs. 21–24). Bold: best WSOL value (lowest for FN*, FP*). "
                 "High FN* = under-activation, high FP* = over-activation.")


def _value(found: Optional[tuple]) -> Optional[tuple]:
    """A value without its interval (dense tables)."""
    return None if found is None else found[:3]


def pair_table(stats: Stats, backbones: list[str], methods: list[str], dataset: str, metric: str,
               beyond: bool = False) -> Table:
    """``metric`` under B-LOC / B-CL side by side (survey Table 4: PxAP, Table 5: accuracy)."""
    rules = ("b-loc", "b-cl")
    columns = [Column(f"{backbone_title(b)} {r.upper()}", lambda m, b=b, r=r: stats.get(b, m, r, metric))
               for b in backbones for r in rules]
    columns += [Column(f"mean {r.upper()}", _backbone_mean(stats, backbones, r, metric)) for r in rules]
    per_column = [[b] for b in backbones for _ in rules] + [backbones for _ in rules]
    references = _references(stats, per_column) if metric == "pxap" else None
    table = build("", columns, methods, "", references)
    header = ["method"] + [f"{backbone_title(b)}" for b in backbones] + ["mean over backbones"]
    rows = [[_extension_mark(row[0])] + [_pair(row[1 + 2 * j], row[2 + 2 * j], row[0] in _REFERENCE_LABELS)
                                         for j in range(len(header) - 1)] for row in table.rows]
    name, number = ("PxAP", 4) if metric == "pxap" else ("Classification accuracy", 5)
    marked = any(row[0].endswith(EXTENSION) for row in rows)
    return Table(table_title(f"{name}, B-LOC / B-CL selection", dataset, f"Table {number}", beyond), header, rows,
                 f"Test {name.lower() if number == 5 else name} (%) of the model selected by B-LOC (best validation PxAP) / by B-CL (best "
                 "validation accuracy). Bold: best WSOL value per column and rule."
                 + (f" {EXTENSION}: B-CL is an extension of this tool; the survey selects that method by B-LOC only."
                    if marked else "") + (f" {REFERENCE_NOTE} They do not depend on the selection rule." if references else ""))


def _extension_mark(label: str) -> str:
    """A method row whose B-CL selection the survey does not make gets ``EXTENSION``."""
    plain = label.startswith("*") or not label  # group headers and the average
    return label if plain or selected_in_survey(label, "b-cl") else f"{label} {EXTENSION}"


_REFERENCE_LABELS = {f"*{label}*" for label in REFERENCES.values()}


def _pair(left: str, right: str, reference: bool = False) -> str:
    if (left == right and left in ("", "–")) or reference:  # a group header row, no value under either rule, a reference
        return left
    return f"{left} / {right}"


def dataset_tables(results: pl.DataFrame, beyond: bool = False) -> list[tuple[str, list[Table]]]:
    """[(dataset, [Table 1, Dice and IoU at τ*, Tables 2-3, Table 4, Table 5, the other metrics beyond
    PxAP])] for every dataset of ``results`` (tables of metrics it lacks are left out), over the
    survey's methods; ``beyond=True``: the same tables over the other methods (datasets without
    any are left out)."""
    out = []
    for dataset in ordered(results["dataset"].unique(), "datasets"):
        rows = results.filter(pl.col("dataset") == dataset)
        methods = split_survey(rows["method"].unique().to_list())[1 if beyond else 0]
        if not methods:
            continue
        rows = rows.filter(pl.col("method").is_in(methods))
        stats = Stats(summarise(rows))
        backbones = ordered(rows["backbone"].unique(), "backbones")
        present = [(metric, t) for metric, t in metric_tables() if t.column in rows.columns
                   and rows[t.column].is_not_null().any()]
        first = [t for metric, t in present if metric.prominent]
        tables = [table1(stats, backbones, methods, dataset, beyond), *plugin_tables(stats, backbones, methods, dataset, first, beyond),
                  confusion_table(stats, backbones, methods, dataset, beyond), pair_table(stats, backbones, methods, dataset, "pxap", beyond)]
        if "cl_acc" in rows.columns:
            tables.append(pair_table(stats, backbones, methods, dataset, "cl_acc", beyond))
        tables += plugin_tables(stats, backbones, methods, dataset, [t for metric, t in present if not metric.prominent],
                                  beyond)
        out.append((dataset, tables))
    return out

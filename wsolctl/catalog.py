"""What is installed: the catalogs behind ``wsolctl methods`` and ``wsolctl metrics`` (no torch import)."""
from __future__ import annotations

import warnings

from rich.console import Console
from rich.table import Table

from wsolctl import metrics, plugins
from wsolctl.errors import PluginWarning


def _loaded(load):
    """``load()``'s plugins; its :class:`PluginWarning` warnings (broken plugins) printed on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        loaded = load()
    for warning in caught:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning.message}")
    return loaded


def method_catalog() -> list[dict]:
    """One dict per importable method plugin; broken plugins are warned about (stderr) and skipped."""
    loaded = _loaded(lambda: plugins.load_all("methods"))
    rows = []
    for name, cls in sorted(loaded.items()):
        info = plugins.info("methods", name)
        params = {field: _default(spec) for field, spec in cls.Params.model_fields.items()}
        rows.append({"name": name, "kind": cls.kind, "package": f"{info.package} {info.version}",
                     "target": info.target, "api_version": cls.api_version, "params": params,
                     "description": (cls.__doc__ or "").strip().split("\n")[0]})
    return rows


def _default(spec) -> object:
    return None if spec.is_required() else spec.get_default(call_default_factory=True)


def print_catalog(rows: list[dict]) -> None:
    table = Table(title="wsolctl methods")
    for column in ("name", "kind", "package", "parameters (defaults)"):
        table.add_column(column)
    for row in rows:
        params = ", ".join(f"{k}={v!r}" for k, v in row["params"].items()) or "—"
        table.add_row(row["name"], row["kind"], row["package"], params)
    Console().print(table)


def metric_catalog() -> list[dict]:
    """One dict per importable metric plugin (report order), after the always-on built-in one."""
    rows = [{"name": metrics.BUILT_IN, "package": "wsolctl (built in, always on)", "forward_passes": False,
             "columns": {c: "[0, 1)" if c == "threshold" else "%" for c in metrics.BUILT_IN_COLUMNS},
             "description": "PxAP and the survey's TP*/FN*/FP*/TN*, with τ* and mIoU"}]
    for metric in _loaded(metrics.installed):
        info = plugins.info("metrics", metric.name)
        rows.append({"name": metric.name, "package": f"{info.package} {info.version}",
                     "forward_passes": metric.forward_passes, "columns": {c.name: c.unit for c in metric.columns},
                     "description": metric.description})
    return rows


def print_metrics(rows: list[dict]) -> None:
    table = Table(title="wsolctl metrics (recipe: evaluation.metrics)")
    for column in ("name", "package", "model calls", "results columns (unit)", "description"):
        table.add_column(column)
    for row in rows:
        columns = ", ".join(f"{k} ({v})" for k, v in row["columns"].items())
        table.add_row(row["name"], row["package"], "yes" if row["forward_passes"] else "no", columns, row["description"])
    Console().print(table)


def print_runs(recipe) -> None:
    """``wsolctl show --runs``: the search-phase runs, and how many final runs follow."""
    from wsolctl.engine.study import Study
    from wsolctl.recipe.sweep import folds_and_seeds
    from wsolctl.selection import RULES

    search = Study.plan(recipe).search.runs
    table = Table(title=f"runs of {recipe.name}: hyper-parameter search")
    swept = sorted({k for run in search for k in run.variant.swept})
    for column in ("run_id", "backbone", "methods", "fold", "seed", *swept):
        table.add_column(column)
    for run in search:
        table.add_row(run.run_id, run.backbone.name, ", ".join(run.labels), str(run.recipe.dataset.fold),
                      str(run.recipe.seed), *(repr(run.variant.swept.get(k)) for k in swept))
    console = Console()
    console.print(table)
    folds, seeds, search_fold = folds_and_seeds(recipe)
    configs: dict[tuple, set] = {}
    for run in search:  # per (backbone, method group): how many configurations compete
        configs.setdefault((run.backbone.name, run.labels), set()).add(run.variant.config_id)
    # each pair keeps at most one configuration per selection rule
    final_max = sum(min(len(RULES), len(c)) for c in configs.values()) * len(folds) * len(seeds)
    n_configs = len({run.variant.config_id for run in search})
    console.print(f"{len(search)} search run(s) ({n_configs} configuration(s) on fold {search_fold}); then the chosen "
                  f"configuration(s) on folds {folds} × seeds {seeds}: at most {final_max} final run(s), "
                  "those already run in the search reused")

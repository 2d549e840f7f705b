"""What is installed: the method catalog behind ``wsolctl methods`` (no torch import)."""
from __future__ import annotations

import warnings

from rich.console import Console
from rich.table import Table

from wsolctl import plugins
from wsolctl.errors import PluginWarning


def method_catalog() -> list[dict]:
    """One dict per importable method plugin; broken plugins are warned about (stderr) and skipped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PluginWarning)
        loaded = plugins.load_all("methods")
    for warning in caught:
        Console(stderr=True).print(f"[yellow]warning:[/] {warning.message}")
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

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
    rows = [{"name": metrics.PxAP.name, "package": "wsolctl (built in, always on)", "forward_passes": False,
             "columns": {c.name: c.unit for c in metrics.PxAP.columns}, "description": metrics.PxAP.description}]
    for metric in _loaded(metrics.installed):
        info = plugins.info("metrics", plugins.name_of(metric))
        rows.append({"name": info.name, "package": f"{info.package} {info.version}",
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


def run_catalog(recipe) -> dict:
    """``wsolctl show --runs``: the search-phase runs, and how many final runs follow."""
    from wsolctl.engine.study import Study
    from wsolctl.recipe.sweep import folds_and_seeds
    from wsolctl.selection import RULES

    search = Study.plan(recipe).search.runs
    folds, seeds, search_fold = folds_and_seeds(recipe)
    configs: dict[tuple, set] = {}
    for run in search:  # per (backbone, method group): how many configurations compete
        configs.setdefault((run.backbone.name, run.labels), set()).add(run.variant.config_id)
    # each pair keeps at most one configuration per selection rule
    final_max = sum(min(len(RULES), len(c)) for c in configs.values()) * len(folds) * len(seeds)
    return {"recipe": recipe.name, "search_fold": search_fold, "folds": list(folds), "seeds": list(seeds),
            "configurations": len({run.variant.config_id for run in search}), "final_runs_max": final_max,
            "search": [{"run_id": run.run_id, "backbone": run.backbone.name, "methods": list(run.labels),
                        "fold": run.recipe.dataset.fold, "seed": run.recipe.seed, "config_id": run.variant.config_id,
                        "swept": run.variant.swept} for run in search]}


def print_runs(runs: dict) -> None:
    table = Table(title=f"runs of {runs['recipe']}: hyper-parameter search")
    swept = sorted({k for run in runs["search"] for k in run["swept"]})
    for column in ("run_id", "backbone", "methods", "fold", "seed", *swept):
        table.add_column(column)
    for run in runs["search"]:
        table.add_row(run["run_id"], run["backbone"], ", ".join(run["methods"]), str(run["fold"]), str(run["seed"]),
                      *(repr(run["swept"].get(k)) for k in swept))
    console = Console()
    console.print(table)
    console.print(f"{len(runs['search'])} search run(s) ({runs['configurations']} configuration(s) on fold "
                  f"{runs['search_fold']}); then the chosen configuration(s) on folds {runs['folds']} × seeds "
                  f"{runs['seeds']}: at most {runs['final_runs_max']} final run(s), those already run in the search reused")


def backbone_catalog() -> list[dict]:
    """One dict per registered backbone: where its weights come from, the normalisation it declares,
    and, for the named foundation models, the card's facts; whether the hub cache holds its files
    (no network)."""
    from wsolctl.backbones.foundation import NamedModel
    from wsolctl.backbones.weights import HubWeights
    from wsolctl.errors import InputError

    rows = []
    for name in sorted(plugins.registered("backbones")):
        cls = plugins.load("backbones", name)
        backbone = cls()
        card = cls.card if issubclass(cls, NamedModel) else None
        row = {"name": name, "weights": backbone.pretrained_name or None, "gated": bool(card and card.gated),
               "tokens": card.layout if card else None, "licence": card.licence if card else None,
               "usable": not (card and card.timm_reason), "note": card.timm_reason if card else None}
        try:
            row["normalize"] = backbone.info().normalize.model_dump(mode="json")
        except InputError:  # an hf-hub: model whose config.json is not cached: the card's, if any
            row["normalize"] = card.normalize.model_dump(mode="json") if card else None
        try:
            weights = HubWeights.of(row["weights"]) if row["weights"] else None
        except InputError:
            weights = None
        row["cached"] = _cached_state(weights)
        rows.append(row)
    return rows


def _cached_state(weights) -> str:
    """yes (every file it needs), config only (an hf-hub: model's architecture, not its weights), no, - (none)."""
    from wsolctl.backbones.weights import cached_file

    if weights is None:
        return "-"
    if weights.cached() is not None:
        return "yes"
    config = weights.config and cached_file(weights.repo_id, "config.json", weights.revision) is not None
    return "config only" if config else "no"


def print_backbones(rows: list[dict]) -> None:
    table = Table(title="wsolctl backbones (cached: in the Hugging Face cache, HF_HOME)")
    # the name one types is never cut; the other columns wrap (folding long hub ids), never with "…"
    table.add_column("name", no_wrap=True, min_width=max((len(row["name"]) for row in rows), default=4))
    for column in ("weights", "gated", "cached", "normalize", "tokens", "licence / note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        norm = row["normalize"]
        table.add_row(row["name"], row["weights"] or "-", "yes" if row["gated"] else "no", row["cached"],
                      _norm_text(norm),
                      row["tokens"] or "-", row["note"] or row["licence"] or "-")
    Console().print(table)


def _norm_text(norm: dict | None) -> str:
    from wsolctl.recipe.base import IMAGENET

    if norm is None:
        return "from config.json"
    if norm == IMAGENET.model_dump(mode="json"):
        return "ImageNet"
    return " / ".join(",".join(f"{v:g}" for v in norm[k]) for k in ("mean", "std"))


def normalization_lines(recipe) -> list[str]:
    """``wsolctl show``: what each backbone's images are normalised with, as YAML comments."""
    from wsolctl.errors import NotCached

    lines = ["# images are normalised per backbone with (backbones[].normalize overrides the backbone's own):"]
    for spec in recipe.backbones:
        try:
            norm = spec.normalization()
            where = "recipe" if spec.normalize else "the backbone's"
            text = f"mean {list(norm.mean)}, std {list(norm.std)} ({where})"
        except NotCached:
            text = "the backbone's config.json, not cached yet (wsolctl weights fetch RECIPE)"
        lines.append(f"#   {spec.name}: {text}")
    return lines

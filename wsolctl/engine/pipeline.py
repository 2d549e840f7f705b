"""The library API behind the CLI: ``run`` = ``train`` → ``select`` → ``report``.

Each step works on an output directory and can run alone (train on a GPU node, select and report
elsewhere)::

    OUT/recipe.resolved.yaml   the fully resolved recipe (select/report read it back)
    OUT/wsolctl.log            log of every command run on OUT
    OUT/runs/<run_id>/         spec.json, state.pt, ckpt/, done.json, test.json
    OUT/epochs.parquet, results.parquet, curves.parquet, report.md, figures/
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Optional, Union

import yaml

from wsolctl.recipe import Recipe, load_recipe
from wsolctl.results.io import write_text

RESOLVED = "recipe.resolved.yaml"
log = logging.getLogger("wsolctl")


def default_out(recipe: Recipe) -> Path:
    return Path("runs") / recipe.name


def resolve(recipe: Union[str, Path, Recipe], overrides: Iterable[str] = ()) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides)


def recipe_of(out: Path) -> Recipe:
    """The recipe a run directory was made with."""
    path = Path(out) / RESOLVED
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; is {out} a wsolctl output directory?")
    return load_recipe(path)


def train(recipe: Union[str, Path, Recipe], out: Optional[Path] = None, overrides: Iterable[str] = (),
          quiet: bool = False) -> Path:
    """Train every run of the recipe into ``out`` (resuming, skipping finished runs)."""
    from wsolctl.engine.build import build_data, resolve_device
    from wsolctl.engine.plan import plan_runs
    from wsolctl.engine.progress import Progress
    from wsolctl.engine.train import train_run

    recipe = resolve(recipe, overrides)
    out = Path(out) if out else default_out(recipe)
    device = resolve_device(recipe.device)  # fail before anything is written
    runs = plan_runs(recipe)
    data = build_data(recipe, device)  # generates synthetic data on first use
    _start(out, recipe, "train")
    with Progress(quiet=quiet) as progress:
        task = progress.task("runs", len(runs))
        for run in runs:
            labels = ", ".join(ref.label for ref in run.methods)
            progress.log(f"run {run.run_id}: {recipe.backbones[run.backbone_index].name} × {labels} on {device}")
            log.info("run %s: backbone=%s methods=%s device=%s", run.run_id,
                     recipe.backbones[run.backbone_index].name, labels, device)
            train_run(recipe, run, data, out / "runs" / run.run_id, device, progress)
            task.advance()
    return out


def select(out: Path, quiet: bool = False) -> Path:
    """Pick B-LOC / B-CL epochs of every finished run, score them on test, write the Parquet tables."""
    from wsolctl.engine.build import build_data, resolve_device
    from wsolctl.engine.plan import plan_runs
    from wsolctl.engine.progress import Progress
    from wsolctl.engine.select import select_run
    from wsolctl.results.tables import write_tables

    out = Path(out)
    recipe = recipe_of(out)
    device = resolve_device(recipe.device)
    runs = plan_runs(recipe)
    missing = [r.run_id for r in runs if not (out / "runs" / r.run_id / "done.json").is_file()]
    if missing:
        raise RuntimeError(f"{out}: runs not finished yet: {', '.join(missing)}; run `wsolctl train` first")
    _log_to(out, "select")
    with Progress(quiet=quiet) as progress:
        data = build_data(recipe, device)
        selected = {r.run_id: select_run(recipe, r, data, out / "runs" / r.run_id, device, progress) for r in runs}
    write_tables(out, recipe, runs, selected)
    return out


def report(out: Path) -> Path:
    from wsolctl.results.report import write_report

    _log_to(out, "report")
    return write_report(Path(out))


def run(recipe: Union[str, Path, Recipe], out: Optional[Path] = None, overrides: Iterable[str] = (),
        quiet: bool = False) -> Path:
    recipe = resolve(recipe, overrides)
    out = train(recipe, out, quiet=quiet)
    select(out, quiet=quiet)
    return report(out)


def _start(out: Path, recipe: Recipe, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / RESOLVED, yaml.safe_dump(recipe.resolved_dict(), sort_keys=False))
    _log_to(out, command)
    log.info("resolved recipe: %s", json.dumps(recipe.resolved_dict(), sort_keys=True))


def _log_to(out: Path, command: str) -> None:
    log.setLevel(logging.INFO)
    path = (Path(out) / "wsolctl.log").resolve()
    if not any(getattr(h, "baseFilename", None) == str(path) for h in log.handlers):
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
    log.info("wsolctl %s %s", command, out)

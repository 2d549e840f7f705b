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
from typing import Iterable, Optional, Sequence, Union

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
    """Train every run of the recipe into ``out``: the hyper-parameter search (if any), then the
    chosen configurations on every fold and seed. Finished runs are skipped, interrupted ones
    resume. Raises :class:`~wsolctl.errors.RunsFailed` after the others finished."""
    from wsolctl.engine import study
    from wsolctl.engine.build import resolve_device
    from wsolctl.engine.progress import Progress
    from wsolctl.engine.sweep import final_variants, search_variants
    from wsolctl.errors import RunsFailed

    recipe = resolve(recipe, overrides)
    out = Path(out) if out else default_out(recipe)
    resolve_device(recipe.device)  # fail before anything is written
    _weights_ready(recipe)
    search = study.plan(search_variants(recipe), "search")
    _start(out, recipe, "train")
    durations: dict[str, float] = {}
    ran: dict[str, study.Planned] = {}  # run id -> planned run, each run once, in execution order
    with Progress(quiet=quiet) as progress:
        failed = _execute_phase(recipe, search, ran, out, progress, durations)
        chosen = study.choose(search, out)
        final = study.plan(final_variants(recipe, study.chosen_variants(search, chosen)), "final")
        failed += _execute_phase(recipe, final, ran, out, progress, durations)
        study.save(out, list(ran.values()), chosen, durations)
    if failed:
        lines = [f"{r['run_id']}: {r['error']} (log: {study.run_dir(out, r['run_id']) / 'train.log'})" for r in failed]
        raise RunsFailed(f"{len(failed)} run(s) failed; the others finished:\n" + "\n".join(lines))
    return out


def _weights_ready(recipe: Recipe) -> None:
    """Hub weights and configs are cached (downloaded now if allowed), and the backbones they
    describe support the methods, before any run starts: a one-line error otherwise."""
    from wsolctl.models import weights
    from wsolctl.recipe.loader import check_support

    weights.ensure(recipe)
    check_support(recipe)


def _execute_phase(recipe: Recipe, planned: list, ran: dict, out: Path, progress, durations: dict) -> list[dict]:
    """The prerequisites of ``planned``, then ``planned``, skipping runs this study already ran."""
    from wsolctl.engine.study import prerequisites

    failed = []
    for batch in (prerequisites(planned), planned):
        todo = [p for p in batch if p.run.run_id not in ran]
        ran.update((p.run.run_id, p) for p in todo)
        failed += _execute(recipe, todo, out, progress, durations)
    # a study run that was trained early as another's prerequisite is still a study run
    ran.update((p.run.run_id, p) for p in planned if ran[p.run.run_id].phase == "prerequisite")
    return failed


def _execute(recipe: Recipe, planned: list, out: Path, progress, durations: dict) -> list[dict]:
    """Run planned runs with the recipe's executor; returns the failures."""
    from wsolctl.engine import study
    from wsolctl.engine.build import prepare_dataset
    from wsolctl.engine.executors import execute

    prepared = set()
    for p in planned:
        dataset = p.variant.recipe.dataset
        if (dataset.name, dataset.root, dataset.fold) not in prepared:  # here, so workers never race
            prepare_dataset(p.variant.recipe)
            prepared.add((dataset.name, dataset.root, dataset.fold))
        log.info("%s run %s: backbone=%s methods=%s config=%s fold=%s seed=%s", p.phase, p.run.run_id, p.backbone,
                 ",".join(r.label for r in p.run.methods), p.variant.swept, dataset.fold, p.variant.recipe.seed)
    results = execute([study.task(p, out) for p in planned], recipe.executor, recipe.device, progress)
    durations.update({r["run_id"]: r["duration_s"] for r in results})
    return [r for r in results if r["status"] == "failed"]


def select(out: Path, quiet: bool = False) -> Path:
    """Score the selected checkpoints (B-LOC / B-CL) of the study's final runs on test, keeping for
    each method the configuration chosen by the hyper-parameter search; write the Parquet tables."""
    from wsolctl.engine.build import build_data, resolve_device
    from wsolctl.engine.plan import plan_runs
    from wsolctl.engine.progress import Progress
    from wsolctl.engine.select import select_run
    from wsolctl.engine.study import run_dir
    from wsolctl.recipe.loader import validate_data
    from wsolctl.results.tables import write_tables

    out = Path(out)
    recipe_of(out)  # a clear error if OUT is not an output directory
    study_path = out / "study.json"
    if not study_path.is_file():
        raise FileNotFoundError(f"{study_path}: not found; run `wsolctl train` first")
    study = json.loads(study_path.read_text())
    finals = [r for r in study["runs"] if r["status"] == "done" and _is_final(r, study["chosen"])]
    if not finals:
        raise RuntimeError(f"{out}: no finished run to select from; run `wsolctl train` first")
    _log_to(out, "select")
    scored, datasets = [], {}
    with Progress(quiet=quiet) as progress:
        for entry in finals:
            directory = run_dir(out, entry["run_id"])
            recipe = validate_data(json.loads((directory / "recipe.json").read_text()))
            device = resolve_device(recipe.device)
            key = (recipe.dataset.name, recipe.dataset.root, recipe.dataset.fold, recipe.image_size)
            data = datasets[key] = datasets.get(key) or build_data(recipe, device)
            run = next(r for r in plan_runs(recipe) if r.run_id == entry["run_id"])
            selected = select_run(recipe, run, data, directory, device, progress)
            scored.append((recipe, run, _keep_chosen(selected, entry, study["chosen"])))
    write_tables(out, scored)
    return out


def _is_final(entry: dict, chosen: dict[str, str]) -> bool:
    return entry["config_id"] in set(chosen.values())


def _keep_chosen(selected: dict, entry: dict, chosen: dict[str, str]) -> dict:
    """Rows of (method, rule) pairs whose chosen configuration is this run's."""
    def keep(row: dict) -> bool:
        return chosen.get(f"{entry['backbone']}|{row['method']}|{row['selection']}") == entry["config_id"]

    return {"results": [r for r in selected["results"] if keep(r)], "curves": [c for c in selected["curves"] if keep(c)]}


def report(dirs: Union[Path, Sequence[Path]], out: Optional[Path] = None, fmt: str = "md") -> Path:
    """Write ``report.md`` (``fmt="html"``: one self-contained ``report.html``) and ``figures/`` from
    one or several output directories (or folders holding only ``results.parquet``), merged, into
    ``out`` (default: the only directory given)."""
    from wsolctl.results.report import write_report

    dirs = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    for directory in dirs:
        if (directory / RESOLVED).is_file():
            _log_to(directory, "report")
    return write_report(dirs, out, fmt)


def run(recipe: Union[str, Path, Recipe], out: Optional[Path] = None, overrides: Iterable[str] = (),
        quiet: bool = False) -> Path:
    """train → select → report. If some runs fail, the others are still selected and reported,
    then :class:`~wsolctl.errors.RunsFailed` is raised."""
    from wsolctl.errors import RunsFailed

    recipe = resolve(recipe, overrides)
    out = Path(out) if out else default_out(recipe)
    try:
        train(recipe, out, quiet=quiet)
    except RunsFailed:
        if (out / "study.json").is_file() and '"status": "done"' in (out / "study.json").read_text():
            select(out, quiet=quiet)
            report(out)
        raise
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

"""The library API behind the CLI: ``run`` = ``train`` → ``select`` → ``report``.

Each step works on an output directory and can run alone (train on a GPU node, select and report
elsewhere)::

    OUT/recipe.resolved.yaml   the fully resolved recipe (select/report read it back)
    OUT/wsolctl.log            log of every command run on OUT
    OUT/runs/<run_id>/         spec.json (the RunSpec), state.pt, ckpt/, done.json, test.json
    OUT/epochs.parquet, results.parquet, curves.parquet, report.md, figures/
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import yaml

from wsolctl.engine.plan import RunSpec
from wsolctl.io import write_text
from wsolctl.recipe import Recipe, load_recipe

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
    from wsolctl.engine.plan import study_runs
    from wsolctl.errors import RunsFailed
    from wsolctl.progress import Progress
    from wsolctl.recipe.sweep import final_variants, search_variants

    recipe = resolve(recipe, overrides)
    out = Path(out) if out else default_out(recipe)
    resolve_device(recipe.device)  # fail before anything is written
    _weights_ready(recipe)
    search = study_runs(search_variants(recipe))
    _start(out, recipe, "train")
    durations: dict[str, float] = {}
    ran: dict[str, RunSpec] = {}  # run id -> run, each run once, in execution order
    phases: dict[str, str] = {}  # run id -> the phase it ran in: prerequisite, search or final
    with Progress(quiet=quiet) as progress:
        failed = _execute_phase(recipe, search, "search", ran, phases, out, progress, durations)
        chosen = study.choose(search, out)
        final = study_runs(final_variants(recipe, study.chosen_variants(search, chosen)))
        failed += _execute_phase(recipe, final, "final", ran, phases, out, progress, durations)
        study.save(out, list(ran.values()), phases, chosen, durations)
    if failed:
        lines = [f"{r['run_id']}: {r['error']} (log: {study.run_dir(out, r['run_id']) / 'train.log'})" for r in failed]
        raise RunsFailed(f"{len(failed)} run(s) failed; the others finished:\n" + "\n".join(lines))
    return out


def _weights_ready(recipe: Recipe) -> None:
    """Hub weights and configs are cached (downloaded now if allowed), and the backbones they
    describe support the methods, before any run starts: a one-line error otherwise."""
    from wsolctl.errors import InputError
    from wsolctl.models import weights

    weights.ensure(recipe)
    for path, message in recipe.support_problems():  # hf-hub: backbones are known only now
        raise InputError(f"{'.'.join(map(str, path))}: {message}")


def _execute_phase(recipe: Recipe, runs: list[RunSpec], phase: str, ran: dict, phases: dict, out: Path, progress,
                   durations: dict) -> list[dict]:
    """The prerequisites of ``runs``, then ``runs``, skipping runs this study already ran."""
    from wsolctl.engine.study import prerequisites, run_dir

    failed = []
    for batch, batch_phase in ((prerequisites(runs), "prerequisite"), (runs, phase)):
        todo = list({r.run_id: r for r in batch if r.run_id not in ran}.values())
        ran.update((r.run_id, r) for r in todo)
        phases.update((r.run_id, batch_phase) for r in todo)
        failed += _execute(recipe, todo, batch_phase, out, progress, durations)
    # a study run that was trained early as another's prerequisite is still a study run (of its configuration)
    early = [r for r in runs if phases[r.run_id] == "prerequisite"]
    for run in early:
        run.save(run_dir(out, run.run_id))  # the same run id: its spec as a study run
    ran.update((r.run_id, r) for r in early)
    phases.update((r.run_id, phase) for r in early)
    return failed


def _execute(recipe: Recipe, runs: list[RunSpec], phase: str, out: Path, progress, durations: dict) -> list[dict]:
    """Run ``runs`` with the recipe's executor (each from its spec.json); returns the failures."""
    from wsolctl.engine import study
    from wsolctl.engine.build import prepare_dataset
    from wsolctl.engine.executors import execute

    prepared = set()
    for run in runs:
        dataset = run.recipe.dataset
        if (dataset.name, dataset.root, dataset.fold) not in prepared:  # here, so workers never race
            prepare_dataset(run.recipe)
            prepared.add((dataset.name, dataset.root, dataset.fold))
        run.save(study.run_dir(out, run.run_id))
        log.info("%s run %s: backbone=%s methods=%s config=%s fold=%s seed=%s", phase, run.run_id, run.backbone.name,
                 ",".join(run.labels), run.variant.swept, dataset.fold, run.recipe.seed)
    results = execute([study.run_dir(out, r.run_id) for r in runs], recipe.executor, recipe.device, progress)
    durations.update({r["run_id"]: r["duration_s"] for r in results})
    return [r for r in results if r["status"] == "failed"]


def select(out: Path, quiet: bool = False) -> Path:
    """Score the selected checkpoints (B-LOC / B-CL) of the study's final runs on test, keeping for
    each method the configuration chosen by the hyper-parameter search; write the Parquet tables."""
    from wsolctl.engine.build import build_data, resolve_device
    from wsolctl.engine.plan import test_settings, with_test_settings
    from wsolctl.engine.select import select_run
    from wsolctl.engine.study import run_dir
    from wsolctl.progress import Progress
    from wsolctl.results.tables import write_tables

    out = Path(out)
    test_only = test_settings(recipe_of(out))  # also a clear error if OUT is not an output directory
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
            # the study's current test-time settings (e.g. metrics added after training); same run id
            spec = with_test_settings(RunSpec.load(directory), test_only)
            recipe = spec.recipe
            device = resolve_device(recipe.device)
            key = (recipe.dataset.name, recipe.dataset.root, recipe.dataset.fold, recipe.image_size)
            data = datasets[key] = datasets.get(key) or build_data(spec, device)
            selected = select_run(spec, data, directory, device, progress)
            scored.append((spec, _keep_chosen(selected, entry, study["chosen"])))
    write_tables(out, scored)
    return out


def _is_final(entry: dict, chosen: dict[str, str]) -> bool:
    return entry["config_id"] in set(chosen.values())


def _keep_chosen(selected: dict, entry: dict, chosen: dict[str, str]) -> dict:
    """Rows of (method, rule) pairs whose chosen configuration is this run's."""
    def keep(row: dict) -> bool:
        return chosen.get(f"{entry['backbone']}|{row['method']}|{row['selection']}") == entry["config_id"]

    return {name: [r for r in selected.get(name, []) if keep(r)] for name in ("results", "curves", "checks")}


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

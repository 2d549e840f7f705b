"""The library API behind the CLI: ``run`` = ``train`` → ``select`` → ``report``.

Each step works on an output directory and can run alone (train on a GPU node, select and report
elsewhere)::

    OUT/recipe.resolved.yaml   the fully resolved recipe (select/report read it back)
    OUT/wsolctl.log            log of every command run on OUT
    OUT/runs/<run_id>/         one training run (wsolctl.engine.rundir.RunDir)
    OUT/epochs.parquet, results.parquet, curves.parquet, report.md, figures/
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Optional, Sequence, Union

import yaml

from wsolctl.engine.plan import RunSpec
from wsolctl.io import write_text
from wsolctl.recipe import Recipe, load_recipe
from wsolctl.tracking import track_files, track_runs

if TYPE_CHECKING:
    from wsolctl.engine.study import Study

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


def _closes_its_logs(function: Callable) -> Callable:
    """The log files a call opens (``OUT/wsolctl.log``) are closed and detached from the ``wsolctl``
    logger when it returns, so that a long-lived process does not collect handlers."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        before = list(log.handlers)
        try:
            return function(*args, **kwargs)
        finally:
            for handler in [h for h in log.handlers if h not in before]:
                log.removeHandler(handler)
                handler.close()

    return wrapper


@_closes_its_logs
def train(recipe: Union[str, Path, Recipe], out: Optional[Path] = None, overrides: Iterable[str] = (),
          quiet: bool = False) -> Path:
    """Train every run of the recipe into ``out``: the hyper-parameter search (if any), then the
    chosen configurations on every fold and seed. Finished runs are skipped, interrupted ones
    resume. Raises :class:`~wsolctl.errors.RunsFailed` after the others finished."""
    recipe = resolve(recipe, overrides)
    out = Path(out) if out else default_out(recipe)
    _raise_failures(out, _train(recipe, out, quiet))
    return out


def _train(recipe: Recipe, out: Path, quiet: bool) -> Study:
    """The study of ``recipe``, trained into ``out``, with its outcomes."""
    from wsolctl.engine.build import resolve_device
    from wsolctl.engine.study import Study
    from wsolctl.errors import InputError
    from wsolctl.progress import Progress

    resolve_device(recipe.device)  # fail before anything is written
    missing = recipe.dataset.missing()
    if missing:
        raise InputError(f"dataset.root: {missing}")
    _weights_ready(recipe)
    study = Study.plan(recipe)
    _start(out, recipe, "train")
    with Progress(quiet=quiet) as progress:
        study = study.execute(out, progress)
    specs = study.specs()
    track_runs(recipe, out, [(specs[o.run_id], o.phase) for o in study.outcomes])
    return study


def _raise_failures(out: Path, study: Study) -> None:
    from wsolctl.engine.rundir import RunDir
    from wsolctl.errors import RunsFailed

    failed = [o for o in study.outcomes if o.status == "failed"]
    if failed:
        lines = [f"{o.run_id}: {o.error} (log: {RunDir.of(out, o.run_id).log_file})" for o in failed]
        raise RunsFailed(f"{len(failed)} run(s) failed; the others finished:\n" + "\n".join(lines))


def _weights_ready(recipe: Recipe) -> None:
    """Hub weights and configs are cached (downloaded now if allowed), and the backbones they
    describe support the methods, before any run starts: a one-line error otherwise."""
    from wsolctl.backbones import weights
    from wsolctl.errors import InputError

    weights.ensure(recipe)
    for path, message in recipe.support_problems():  # hf-hub: backbones are known only now
        raise InputError(f"{'.'.join(map(str, path))}: {message}")


@_closes_its_logs
def select(out: Path, quiet: bool = False) -> Path:
    """Score the selected checkpoints (B-LOC / B-CL) of the study's final runs on test, keeping for
    each method the configuration chosen by the hyper-parameter search; write the Parquet tables."""
    return _select(Path(out), recipe_of(out), quiet)  # also a clear error if OUT is not an output directory


def _select(out: Path, recipe: Recipe, quiet: bool, known: Mapping[str, RunSpec] = MappingProxyType({})) -> Path:
    """:func:`select` with the study's recipe, and the runs already in memory (``known``, by run id;
    the others are read from their spec.json)."""
    from wsolctl import metrics as metric_plugins
    from wsolctl.engine.build import build_data, resolve_device
    from wsolctl.engine.final_test import select_run
    from wsolctl.engine.plan import test_settings, with_test_settings
    from wsolctl.engine.rundir import RunDir
    from wsolctl.engine.study import Record
    from wsolctl.progress import Progress
    from wsolctl.results.tables import write_tables

    test_only = test_settings(recipe)
    record = Record.load(out)
    finals = record.finals()
    if not finals:
        raise RuntimeError(f"{out}: no finished run to select from; run `wsolctl train` first")
    _log_to(out, "select")
    scored, datasets = [], {}
    with Progress(quiet=quiet) as progress:
        for outcome in finals:
            run = RunDir.of(out, outcome.run_id)
            # the study's current test-time settings (e.g. metrics added after training); same run id
            spec = with_test_settings(known.get(outcome.run_id) or run.spec(), test_only)
            dataset = spec.recipe.dataset
            device = resolve_device(spec.recipe.device)
            key = (dataset.name, dataset.root, dataset.fold, spec.recipe.image_size,
                   spec.backbone.normalization())
            data = datasets[key] = datasets.get(key) or build_data(spec, device)
            scores = select_run(spec, data, run, device, progress)
            scored.append((spec, scores.keep(lambda method, rule, o=outcome: record.chose(o, method, rule))))
    write_tables(out, scored, recipe.evaluation.bootstrap, metric_plugins.chosen(recipe.evaluation.metrics))
    track_files(recipe, out, [out / "results.parquet"])
    return out


@_closes_its_logs
def report(dirs: Union[Path, Sequence[Path]], out: Optional[Path] = None, fmt: str = "md") -> Path:
    """Write ``report.md`` (``fmt="html"``: ``report.html``, figures embedded) and ``figures/`` from
    one or several output directories (or folders holding only ``results.parquet``), merged, into
    ``out`` (default: the only directory given)."""
    from wsolctl.results.report import write_report

    dirs = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    for directory in dirs:
        if (directory / RESOLVED).is_file():
            _log_to(directory, "report")
    path = write_report(dirs, out, fmt)
    resolved = path.parent / RESOLVED
    # the report of a study with trackers: they keep it (the recipe is validated only then)
    if resolved.is_file() and (yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}).get("tracking"):
        track_files(recipe_of(path.parent), path.parent, [path, path.parent / "figures"])
    return path


@_closes_its_logs
def run(recipe: Union[str, Path, Recipe], out: Optional[Path] = None, overrides: Iterable[str] = (),
        quiet: bool = False) -> Path:
    """train → select → report. If some runs fail, the others are still selected and reported,
    then :class:`~wsolctl.errors.RunsFailed` is raised."""
    recipe = resolve(recipe, overrides)
    out = Path(out) if out else default_out(recipe)
    study = _train(recipe, out, quiet)
    if not any(o.status == "done" for o in study.outcomes):
        _raise_failures(out, study)  # nothing to select (without a failure, select says so)
    _select(out, recipe, quiet, {r.run_id: r for r in study.final.runs})  # the runs in memory: not read again
    path = report(out)
    _raise_failures(out, study)
    return path


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

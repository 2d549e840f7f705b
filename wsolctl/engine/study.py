"""A study = every run a recipe implies, planned once from the validated recipe: the hyper-parameter
search on one fold, then each method's chosen configuration on every fold and seed, each phase after
the runs it builds on (prerequisites, trained once). :class:`Study` is that plan, immutable;
:meth:`Study.execute` trains it and returns it with its choices and outcomes, which ``study.json``
and ``runs.parquet`` record (:class:`Record` reads ``study.json`` back)."""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, NamedTuple, Optional

from wsolctl.engine.plan import RunSpec, study_runs
from wsolctl.engine.rundir import RunDir
from wsolctl.errors import InputError
from wsolctl.progress import Progress
from wsolctl.recipe.schema import Recipe
from wsolctl.recipe.sweep import Variant, final_variants, search_variants
from wsolctl.selection import DEFAULT_RULES, RULES

STUDY = "study.json"
log = logging.getLogger("wsolctl")


class Choice(NamedTuple):
    """What a configuration is chosen for: a backbone, a method (its label) and a selection rule."""

    backbone: str
    method: str
    rule: str


@dataclass(frozen=True)
class Phase:
    name: str  # "search" or "final"
    runs: tuple[RunSpec, ...] = ()

    @property
    def prerequisites(self) -> tuple[RunSpec, ...]:
        """The runs this phase builds on (each once), trained before it."""
        out: dict[str, RunSpec] = {}
        for run in self.runs:
            if run.prerequisite is not None:
                out.setdefault(run.prerequisite.run_id, run.prerequisite)
        return tuple(out.values())


@dataclass(frozen=True)
class Outcome:
    """One run of the study as ``study.json`` records it, under the phase it counts in."""

    run_id: str
    phase: str  # prerequisite, search or final
    config_id: str
    backbone: str
    status: str  # done, failed or pending
    error: Optional[str] = None
    duration_s: Optional[float] = None


@dataclass(frozen=True)
class Record:
    """``study.json``: each run once with its outcome, and the configuration chosen per :class:`Choice`."""

    outcomes: tuple[Outcome, ...]
    chosen: Mapping[Choice, str]  # -> config_id

    def save(self, out: Path) -> None:
        from wsolctl.io import write_json

        write_json(Path(out) / STUDY, {"runs": [asdict(o) for o in self.outcomes],
                                       "chosen": [{**c._asdict(), "config_id": i} for c, i in self.chosen.items()]})

    @classmethod
    def load(cls, out: Path) -> Record:
        path = Path(out) / STUDY
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run `wsolctl train` first")
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("chosen"), list):
            raise InputError(f"{path}: written by an earlier wsolctl version; run `wsolctl train` on it again "
                             "(finished runs are skipped)")
        chosen = {Choice(c["backbone"], c["method"], c["rule"]): c["config_id"] for c in data["chosen"]}
        return cls(tuple(Outcome(**o) for o in data["runs"]), MappingProxyType(chosen))

    def finals(self) -> list[Outcome]:
        """The finished runs of chosen configurations, whose checkpoints are scored on test."""
        configs = set(self.chosen.values())
        return [o for o in self.outcomes if o.status == "done" and o.config_id in configs]

    def chose(self, outcome: Outcome, method: str, selection: str) -> bool:
        """Whether ``outcome``'s configuration is the one chosen for ``method`` under ``selection``."""
        return self.chosen.get(Choice(outcome.backbone, method, selection)) == outcome.config_id


@dataclass(frozen=True)
class Study:
    """The plan of a study. ``chosen`` and ``final`` are empty until the search is scored
    (:meth:`choose`); ``outcomes`` until it has run (:meth:`execute`)."""

    recipe: Recipe
    search: Phase
    chosen: Mapping[Choice, str] = field(default_factory=lambda: MappingProxyType({}))  # -> config_id
    final: Phase = Phase("final")
    outcomes: tuple[Outcome, ...] = ()

    @classmethod
    def plan(cls, recipe: Recipe) -> Study:
        return cls(recipe, Phase("search", tuple(study_runs(search_variants(recipe)))))

    def choose(self, out: Path) -> Study:
        """The study with the best configuration per :class:`Choice` on the search fold (ties: the
        first in expansion order), from the search runs' validation scores in ``out``, and the final
        phase that runs them on every fold and seed."""
        best: dict[Choice, tuple[float, str]] = {}
        rules = [rule for rule in RULES.values() if rule.name in DEFAULT_RULES or rule.name in self.recipe.selection]
        for run in self.search.runs:
            for method, scores in best_validation(out, run.run_id).items():
                for rule in rules:
                    key = Choice(run.backbone.name, method, rule.name)
                    if key not in best or scores[rule.metric] > best[key][0]:
                        best[key] = (scores[rule.metric], run.variant.config_id)
        chosen = MappingProxyType({key: config for key, (_, config) in best.items()})
        final = final_variants(self.recipe, _variants(self.search.runs, set(chosen.values())))
        return replace(self, chosen=chosen, final=Phase("final", tuple(study_runs(final))))

    def execute(self, out: Path, progress: Progress) -> Study:
        """Train the search (after its prerequisites), choose, train the final runs; skip what this
        study already ran, write ``study.json`` and ``runs.parquet``. Returns the study with its
        choices and outcomes."""
        ledger = _Ledger()
        ledger.run(self.search, self.recipe, out, progress)
        study = self.choose(out)
        ledger.run(study.final, self.recipe, out, progress)
        study = replace(study, outcomes=ledger.outcomes(out))
        study.record().save(out)
        study.save_table(out)
        return study

    def specs(self) -> dict[str, RunSpec]:
        """Every run of the plan (prerequisites included), by run id."""
        return {r.run_id: r for phase in (self.search, self.final) for r in (*phase.prerequisites, *phase.runs)}

    def record(self) -> Record:
        return Record(self.outcomes, self.chosen)

    def save_table(self, out: Path) -> None:
        """``runs.parquet``: one row per run × method of :attr:`outcomes`."""
        import polars as pl

        from wsolctl.io import write_parquet

        runs = self.specs()
        record, rows = self.record(), []
        for outcome in self.outcomes:
            run = runs[outcome.run_id]
            best = best_validation(out, run.run_id)
            for method in run.labels:
                flags = {name: record.chose(outcome, method, name) for name in RULES}
                rows.append({"run_id": run.run_id, "phase": outcome.phase, "config_id": outcome.config_id,
                             **{k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in run.variant.swept.items()},
                             "fold": run.recipe.dataset.fold, "seed": run.recipe.seed, "method": method,
                             "backbone": outcome.backbone, "status": outcome.status, "error": outcome.error,
                             "duration_s": outcome.duration_s,
                             **{rule.metric: _finite(best.get(method, {}).get(rule.metric)) for rule in RULES.values()},
                             **{f"chosen_{name.replace('-', '_')}": flag for name, flag in flags.items()},
                             "chosen": any(flags.values())})
        write_parquet(Path(out) / "runs.parquet", pl.DataFrame(rows, infer_schema_length=None))


class _Ledger:
    """The runs this study executed, each once, in execution order, with the phase each counts in
    and its duration."""

    def __init__(self) -> None:
        self.runs: dict[str, tuple[RunSpec, str]] = {}  # run id -> (run, phase)
        self.durations: dict[str, float] = {}

    def run(self, phase: Phase, recipe: Recipe, out: Path, progress: Progress) -> None:
        """The phase's prerequisites, then its runs, leaving out runs this study already ran."""
        for runs, name in ((phase.prerequisites, "prerequisite"), (phase.runs, phase.name)):
            todo = list({r.run_id: r for r in runs if r.run_id not in self.runs}.values())
            self.runs.update((r.run_id, (r, name)) for r in todo)
            self.durations.update(_execute(todo, name, recipe, out, progress))
        # a study run trained early as another's prerequisite is still a study run (of its configuration)
        for run in phase.runs:
            if self.runs[run.run_id][1] == "prerequisite":
                RunDir.of(out, run.run_id).write_spec(run)  # the same run id: its spec as a study run
                self.runs[run.run_id] = (run, phase.name)

    def outcomes(self, out: Path) -> tuple[Outcome, ...]:
        return tuple(Outcome(run.run_id, phase, run.variant.config_id, run.backbone.name,
                             **RunDir.of(out, run.run_id).status(), duration_s=self.durations.get(run.run_id))
                     for run, phase in self.runs.values())


def _execute(runs: list[RunSpec], phase: str, recipe: Recipe, out: Path, progress: Progress) -> dict[str, float]:
    """Run ``runs`` with the recipe's executor (each from its spec.json); returns their durations."""
    from wsolctl.engine.build import prepare_dataset
    from wsolctl.engine.executors import execute

    prepared = set()
    for run in runs:
        dataset = run.recipe.dataset
        if (dataset.name, dataset.root, dataset.fold) not in prepared:  # here, so workers never race
            prepare_dataset(run.recipe)
            prepared.add((dataset.name, dataset.root, dataset.fold))
        RunDir.of(out, run.run_id).write_spec(run)
        log.info("%s run %s: backbone=%s methods=%s config=%s fold=%s seed=%s", phase, run.run_id, run.backbone.name,
                 ",".join(run.labels), run.variant.swept, dataset.fold, run.recipe.seed)
    results = execute([RunDir.of(out, r.run_id).path for r in runs], recipe.executor, recipe.device, progress)
    return {r["run_id"]: r["duration_s"] for r in results}


def best_validation(out: Path, run_id: str) -> dict[str, dict[str, float]]:
    """Per method: the best value over epochs of each rule's validation metric (empty if not trained)."""
    run = RunDir.of(out, run_id)
    if not run.is_done:
        return {}
    best: dict[str, dict[str, float]] = {}
    for row in run.epochs():
        entry = best.setdefault(row["method"], {rule.metric: -math.inf for rule in RULES.values()})
        for metric in entry:
            value = row.get(metric)  # b-pseudo's valpx_pseudo_pxap: only with an annotator
            if value is not None and math.isfinite(value):
                entry[metric] = max(entry[metric], value)
    return best


def _variants(search: tuple[RunSpec, ...], configs: set[str]) -> list[Variant]:
    """The variants of ``configs`` (config ids), each once, in expansion order."""
    out: dict[str, Variant] = {}
    for run in search:
        if run.variant.config_id in configs:
            out.setdefault(run.variant.config_id, run.variant)
    return list(out.values())


def _finite(value):
    return value if value is not None and math.isfinite(value) else None

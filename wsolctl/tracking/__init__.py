"""Experiment tracking: the recipe's ``tracking`` trackers (plugins of the ``wsolctl.trackers`` group)
are handed each finished training run once training is over, and the study's result files once they
are written. Tracking never changes a number or a run id, and never fails a study: a tracker that
raises is warned about once, then left out for the rest of the command.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from wsolctl.errors import TrackerWarning
from wsolctl.plugins import name_of
from wsolctl.tracking.base import TrackedRun, Tracker

log = logging.getLogger("wsolctl")


class Trackers:
    """The recipe's trackers on one output directory, each guarded: its first failure is warned about
    (and logged to wsolctl.log) and it is not called again."""

    def __init__(self, recipe, out: Path):
        self.out = Path(out)
        self.active: list[Tracker] = []
        for spec in recipe.tracking:
            self._guard(spec.name, lambda spec=spec: self.active.append(spec.plugin(spec.params, self.out, recipe.name)))

    def _guard(self, name: str, call) -> None:
        try:
            call()
        except Exception as exc:  # a tracker must never fail the study
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            message = f"tracker {name!r} failed ({type(exc).__name__}: {cause}); the study goes on without it"
            log.warning(message)
            warnings.warn(message, TrackerWarning, stacklevel=3)
            self.active = [t for t in self.active if name_of(t) != name]

    def each(self, method: str, *args: Any) -> None:
        for tracker in list(self.active):
            self._guard(name_of(tracker), lambda tracker=tracker: getattr(tracker, method)(*args))

    def close(self) -> None:
        self.each("close")


def track_runs(recipe, out: Path, runs: Iterable) -> None:
    """Log the finished runs among ``runs`` (RunSpec, phase) of a study trained into ``out``."""
    if not recipe.tracking:
        return
    trackers = Trackers(recipe, out)
    for spec, phase in runs:
        tracked = tracked_run(out, spec, phase)
        if tracked is not None:
            trackers.each("log_run", tracked)
    trackers.close()


def track_files(recipe, out: Path, paths: Sequence[Path]) -> None:
    """Hand the study's result files to its trackers (those that exist)."""
    if recipe.tracking:
        trackers = Trackers(recipe, out)
        trackers.each("log_files", [Path(p) for p in paths if Path(p).exists()])
        trackers.close()


def tracked_run(out: Path, spec, phase: str) -> Optional[TrackedRun]:
    """``spec``'s run as trackers see it, or None when it has not finished."""
    from wsolctl.engine.rundir import RunDir

    run = RunDir.of(out, spec.run_id)
    if not run.is_done:
        return None
    epochs = run.epochs()
    name = (f"{spec.backbone.name} {','.join(spec.labels)} fold {spec.recipe.dataset.fold} "
            f"seed {spec.recipe.seed}")
    params = {"run_id": spec.run_id, "phase": phase, "methods": ",".join(spec.labels),
              **{f"swept.{k}": v for k, v in flatten(spec.variant.swept).items()}, **flatten(spec.identity())}
    return TrackedRun(spec.run_id, name, phase, params, epochs)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts and lists as ``{"a.b.0": "value"}`` (trackers take flat string params)."""
    if isinstance(value, dict) and value:
        return {k: v for key, item in value.items() for k, v in flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)) and value and any(isinstance(v, (dict, list, tuple)) for v in value):
        return {k: v for i, item in enumerate(value) for k, v in flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)}


def epoch_values(run: TrackedRun) -> list[tuple[str, float, int]]:
    """(key, value, epoch) of every finite numeric value of the run's epochs: ``<method>/<column>``."""
    out = []
    for row in run.epochs:
        for key, value in row.items():
            if key not in ("epoch", "method") and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                out.append((f"{row['method']}/{key}", float(value), int(row["epoch"])))
    return out

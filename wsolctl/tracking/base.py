"""What an experiment tracker declares: the members of a ``wsolctl.trackers`` plugin.

A tracker is a small class registered under its recipe name in the ``wsolctl.trackers`` entry-point
group (the built-ins ``mlflow`` and ``tensorboard`` in wsolctl's own ``pyproject.toml``, like third
parties). The engine hands it finished training runs (:class:`TrackedRun`) and result files; it never
names a tracker. Kept free of torch and of the trackers' own packages at import: a tracker imports its
library when it first logs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Sequence

from pydantic import BaseModel

from wsolctl.plugins import TRACKER_API_VERSION as API_VERSION, NoParams, Plugin

__all__ = ["API_VERSION", "TrackedRun", "Tracker", "NoParams"]


@dataclass(frozen=True)
class TrackedRun:
    """One finished training run, as a tracker sees it."""

    run_id: str
    name: str  # e.g. "resnet50-wsol cam,gradcam fold 0 seed 0"
    phase: str  # prerequisite, search or final
    params: dict[str, str]  # the run's spec, flattened to dotted keys (RunSpec.identity())
    epochs: list[dict[str, Any]]  # epochs.json: one row per (epoch, method), validation values included


class Tracker(Plugin):
    """Logs a study to an experiment tracker. ``log_run`` may be called again for a run already
    logged (a resumed study): the tracker then logs nothing new."""

    api_version: ClassVar[int] = API_VERSION

    def __init__(self, params: BaseModel, out: Path, study: str):
        self.params, self.out, self.study = params, Path(out), study

    def log_run(self, run: TrackedRun) -> None:
        raise NotImplementedError

    def log_files(self, paths: Sequence[Path]) -> None:
        """Study-level files (results.parquet, the report and its figures folder); default: none kept."""

    def close(self) -> None:
        """Flush and release what the tracker holds."""

"""One training run's directory, ``OUT/runs/<run_id>/``: the only place that knows its file names.

::

    spec.json         the RunSpec (:meth:`RunDir.spec`)         state.pt      resume state
    epochs.json       per-epoch validation rows                 ckpt/epoch-NNNN.pt   selected epochs
    done.json         :class:`Done` (finished runs)              failed.json / train.log   a failure
    test.json         :class:`TestScores` (the final test)       examples/, checks/   maps for figures
    per-image/<method>__<rule>.npz   each selected model's per-image test statistics (bootstrap)

Training, the final test, annotators, the report and ``predict`` read and write these files through
:class:`RunDir`; nothing else spells a file name of a run. Torch-free at import (checkpoints load
torch on use).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from wsolctl.errors import InputError
from wsolctl.io import atomic_path, torch_save, write_json
from wsolctl.selection import REFERENCE

if TYPE_CHECKING:
    import torch

    from wsolctl.engine.model import WSOLModel
    from wsolctl.engine.plan import RunSpec

RUNS = "runs"  # OUT/runs/<run_id>


@dataclass(frozen=True)
class Done:
    """``done.json``: the epochs trained, the data's classes (name -> index, from its encoding.yaml)
    and per method label the epoch each selection rule picked."""

    epochs: int
    classes: dict[str, int]
    best: dict[str, dict[str, int]]


@dataclass(frozen=True)
class MethodInfo:
    """What the report needs to know of a method plugin, recorded when its run is tested (so that a
    report renders the same without the plugin installed)."""

    kind: str  # bottom-up | top-down | fully-supervised
    in_survey: bool


@dataclass(frozen=True)
class TestScores:
    """``test.json``: the final test of a run's selected models. ``results``, ``curves`` and
    ``checks`` are rows keyed by ``method`` and ``selection`` (results.parquet, curves.parquet,
    checks.parquet); ``settings``: the test-time settings they were scored with (a cache key);
    ``methods``: per method label its :class:`MethodInfo` (absent in files of earlier versions)."""

    results: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, MethodInfo] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> TestScores:
        return cls(data.get("results", []), data.get("curves", []), data.get("checks", []), data.get("settings", {}),
                   {label: MethodInfo(**info) for label, info in data.get("methods", {}).items()})

    def to_json(self) -> dict:
        out = asdict(self)
        if not self.methods:  # the format of earlier versions, byte for byte
            del out["methods"]
        return out

    def keep(self, chosen: Callable[[str, str], bool]) -> TestScores:
        """The rows of the (method, selection) pairs ``chosen`` accepts."""
        def rows(part: list[dict]) -> list[dict]:
            return [row for row in part if chosen(row["method"], row["selection"])]

        return TestScores(rows(self.results), rows(self.curves), rows(self.checks), self.settings, self.methods)


@dataclass(frozen=True)
class RunDir:
    """The directory of one training run (see the module docstring for its files)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of(cls, out: Union[str, Path], run_id: str) -> RunDir:
        """The run ``run_id`` of the study output directory ``out``."""
        return cls(Path(out) / RUNS / run_id)

    @property
    def run_id(self) -> str:
        return self.path.name

    def sibling(self, run_id: str) -> RunDir:
        """Another run of the same study (e.g. a prerequisite)."""
        return RunDir(self.path.parent / run_id)

    # ------------------------------------------------------------------ files
    @property
    def spec_file(self) -> Path:
        return self.path / "spec.json"

    @property
    def state_file(self) -> Path:
        return self.path / "state.pt"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    def checkpoint(self, epoch: int) -> Path:
        return self.path / "ckpt" / f"epoch-{epoch:04d}.pt"

    def example_images(self) -> Path:
        """``examples/images.npz``: the test images whose maps the report draws."""
        return self.path / "examples" / "images.npz"

    def example_maps(self, method: str, selection: str) -> Path:
        """The maps of ``method``'s ``selection`` model on :meth:`example_images`."""
        return self.path / "examples" / f"{method}__{selection}.npz"

    def check_maps(self, method: str, selection: str) -> Path:
        """The maps per randomised depth of the model-randomisation check."""
        return self.path / "checks" / f"{method}__{selection}.npz"

    def test_images_file(self, method: str, selection: str) -> Path:
        """The per-image test statistics of ``method``'s ``selection`` model."""
        return self.path / "per-image" / f"{method}__{selection}.npz"

    def write_test_images(self, method: str, selection: str, images: dict, statistics: dict) -> None:
        """One selected model's per-image test statistics: ``images`` (``labels``, ``correct``: one
        value per test image) and, per resampled metric, its statistics (:mod:`wsolctl.metrics.base`),
        compressed, int64 counts stored as int32 (a count is at most an image's pixels)."""
        import numpy as np

        arrays = {**images, **{f"metric/{name}": value.astype(np.int32) if value.dtype == np.int64 else value
                               for name, value in statistics.items()}}
        with atomic_path(self.test_images_file(method, selection)) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, **arrays)

    def test_images(self, method: str, selection: str) -> Optional[tuple[dict, dict]]:
        """(images, statistics) as :meth:`write_test_images` wrote them, or None (a run scored by an
        earlier version: no intervals)."""
        import numpy as np

        path = self.test_images_file(method, selection)
        if not path.is_file():
            return None
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
        statistics = {name.split("/", 1)[1]: value for name, value in arrays.items() if name.startswith("metric/")}
        return {name: value for name, value in arrays.items() if not name.startswith("metric/")}, statistics

    # ------------------------------------------------------------------ the spec
    def spec(self) -> RunSpec:
        """The run's :class:`~wsolctl.engine.plan.RunSpec` (its prerequisite read from its own directory)."""
        from wsolctl.engine.plan import RunSpec

        path = self.spec_file
        if not path.is_file():
            raise InputError(f"{path}: not found; is {self.path} a wsolctl run directory (OUT/runs/<id>)?")
        data = json.loads(path.read_text(encoding="utf-8"))
        return RunSpec.from_json(data, path, lambda run_id: self.sibling(run_id).spec())

    def write_spec(self, spec: RunSpec) -> None:
        """Write ``spec.json`` (a prerequisite's own spec sits in its run directory)."""
        write_json(self.spec_file, spec.to_json())

    # ------------------------------------------------------------------ status
    @property
    def is_done(self) -> bool:
        return (self.path / "done.json").is_file()

    def done(self) -> Done:
        """``done.json`` (:class:`InputError` if the run has not finished)."""
        path = self.path / "done.json"
        if not path.is_file():
            raise InputError(f"{self.path}: the run has not finished (no done.json)")
        data = json.loads(path.read_text(encoding="utf-8"))
        return Done(data.get("epochs", 0), data.get("classes") or {}, data.get("best", {}))

    def classes(self) -> dict[str, int]:
        """The finished run's classes (:class:`InputError` for a run that did not record them)."""
        classes = self.done().classes
        if not classes:
            raise InputError(f"{self.path / 'done.json'}: no class names (written by an earlier wsolctl version)")
        return classes

    def write_done(self, done: Done) -> None:
        write_json(self.path / "done.json", asdict(done))

    def failure(self) -> Optional[str]:
        """The error of a failed run (``failed.json``), or None."""
        path = self.path / "failed.json"
        return json.loads(path.read_text(encoding="utf-8"))["error"] if path.is_file() else None

    def write_failure(self, error: str, log: Optional[str] = None) -> None:
        """Record a failure (``log``: the traceback, kept in ``train.log``)."""
        if log is not None:
            self.log_file.write_text(log)
            write_json(self.path / "failed.json", {"error": error, "log": str(self.log_file)})
        else:
            write_json(self.path / "failed.json", {"error": error})

    def clear_failure(self) -> None:
        (self.path / "failed.json").unlink(missing_ok=True)

    def status(self) -> dict:
        """``{"status": done | failed | pending, "error": ...}``."""
        if self.is_done:
            return {"status": "done", "error": None}
        error = self.failure()
        return {"status": "failed", "error": error} if error is not None else {"status": "pending", "error": None}

    # ------------------------------------------------------------------ epochs and scores
    def epochs(self) -> list[dict]:
        """The per-epoch validation rows (``epochs.json``)."""
        return json.loads((self.path / "epochs.json").read_text(encoding="utf-8"))

    def write_epochs(self, history: list[dict]) -> None:
        write_json(self.path / "epochs.json", history)

    def test_scores(self) -> Optional[TestScores]:
        """The cached final test (``test.json``), or None."""
        path = self.path / "test.json"
        return TestScores.from_json(json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None

    def write_test_scores(self, scores: TestScores) -> None:
        write_json(self.path / "test.json", scores.to_json())

    # ------------------------------------------------------------------ checkpoints and models
    def save_checkpoint(self, epoch: int, state: dict) -> None:
        torch_save(self.checkpoint(epoch), state)

    def drop_checkpoints(self, keep: set[int]) -> None:
        """Delete the checkpoints of the epochs not in ``keep``."""
        for path in (self.path / "ckpt").glob("epoch-*.pt"):
            if int(path.stem.split("-")[1]) not in keep:
                path.unlink()

    def epoch_of(self, method: Optional[str] = None, selection: str = REFERENCE) -> int:
        """The epoch that selection rule ``selection`` picked for ``method`` (a label of the run; default its first)."""
        best = self.done().best
        method = method or next(iter(best), "")
        if method not in best or selection not in best[method]:
            raise InputError(f"{self.path}: no {selection} checkpoint of method {method!r}; the run has {sorted(best)}")
        return best[method][selection]

    def state(self, epoch: int, device: Union[str, torch.device] = "cpu") -> dict:
        """The state dict saved at ``epoch`` (``weights_only``)."""
        import torch

        checkpoint = self.checkpoint(epoch)
        if not checkpoint.is_file():
            raise InputError(f"{checkpoint}: not found; this output directory holds no trained checkpoints: "
                             "`wsolctl train RECIPE --out OUT` must run first (then `wsolctl select OUT`)")
        return torch.load(checkpoint, map_location=device, weights_only=True)

    def load_model(self, method: Optional[str] = None, selection: str = REFERENCE, epoch: Optional[int] = None,
                   device: Union[str, torch.device] = "cpu") -> tuple[WSOLModel, RunSpec]:
        """The trained model of this finished run, in eval mode on ``device``: the checkpoint of
        ``epoch``, or else the one selection rule ``selection`` chose for ``method`` (default: the run's first
        method). ``spec.methods`` / ``spec.labels`` give the methods whose maps it explains."""
        from wsolctl.engine.build import build_model

        spec = self.spec()
        if epoch is None:
            epoch = self.epoch_of(method or spec.labels[0], selection)
        model = build_model(spec, len(self.classes()), pretrained=False)  # the checkpoint holds every weight
        model.load_state_dict(self.state(epoch))
        return model.to(device).eval(), spec

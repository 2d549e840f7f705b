"""TensorBoard: one event-file folder per training run, ``OUT/tensorboard/<run_id>/``, holding every
per-epoch value of epochs.json as a scalar ``<method>/<column>`` (step = epoch) and the run's spec as
text. Needs the ``tensorboard`` extra; ``tensorboard --logdir OUT/tensorboard`` shows it."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from wsolctl.tracking import epoch_values
from wsolctl.tracking.base import TrackedRun, Tracker


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    log_dir: Optional[str] = Field(None, description="folder of the runs' event folders (default: OUT/tensorboard)")


class TensorBoard(Tracker):
    """TensorBoard event files, one folder per training run."""

    Params = Params

    def __init__(self, params: Params, out: Path, study: str):
        super().__init__(params, out, study)
        import tensorboard  # noqa: F401  (fail now, with the real cause, when the extra is missing)

        self.root = Path(params.log_dir) if params.log_dir else self.out / "tensorboard"

    def log_run(self, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        directory = self.root / run.run_id
        if directory.is_dir() and any(directory.iterdir()):  # logged by an earlier command
            return
        writer = SummaryWriter(log_dir=str(directory))
        try:
            for key, value, step in epoch_values(run):
                writer.add_scalar(key, value, step)
            writer.add_text("spec", "\n".join(f"    {k} = {v}" for k, v in run.params.items()))
        finally:
            writer.close()

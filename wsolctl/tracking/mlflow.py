"""MLflow: a parent run per study (per output directory), a child run per training run with its spec
as params and every per-epoch value of epochs.json as a metric (step = epoch), and the study's result
files as the parent's artifacts. Needs the ``mlflow`` extra (``pip install 'wsolctl[mlflow]'``).

Default store: ``sqlite:///OUT/mlflow.db`` with artifacts in ``OUT/mlartifacts`` (MLflow's own default
is a database; its file store is in maintenance mode); ``mlflow ui --backend-store-uri
sqlite:///OUT/mlflow.db`` shows it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field

from wsolctl.tracking import epoch_values
from wsolctl.tracking.base import TrackedRun, Tracker

OUT_TAG, RUN_TAG, PARENT_TAG = "wsolctl.out", "wsolctl.run_id", "mlflow.parentRunId"
BATCH = 100  # MLflow takes at most 100 params per call (1000 metrics)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI (a server, a database); default: "
                                        "sqlite:///OUT/mlflow.db, artifacts in OUT/mlartifacts")
    experiment: Optional[str] = Field(None, description="experiment name (default: the recipe's name)")


class MLflow(Tracker):
    """MLflow experiment tracking (parent run per study, child run per training run)."""

    Params = Params

    def __init__(self, params: Params, out: Path, study: str):
        super().__init__(params, out, study)
        from mlflow.tracking import MlflowClient

        local = params.tracking_uri is None
        self.client = MlflowClient(f"sqlite:///{self.out.resolve() / 'mlflow.db'}" if local else params.tracking_uri)
        name = params.experiment or study
        found = self.client.get_experiment_by_name(name)
        self.experiment = found.experiment_id if found else self.client.create_experiment(
            name, artifact_location=(self.out.resolve() / "mlartifacts").as_uri() if local else None)
        self.parent = self._run(f"tags.`{OUT_TAG}` = '{self.out.resolve()}'", {OUT_TAG: str(self.out.resolve())},
                                study)

    def _run(self, query: str, tags: dict[str, str], name: str) -> tuple[str, bool]:
        """(run id, whether it is new) of the run with ``tags``, created when absent."""
        found = self.client.search_runs([self.experiment], query, max_results=1)
        if found:
            return found[0].info.run_id, False
        return self.client.create_run(self.experiment, tags=tags, run_name=name).info.run_id, True

    def log_run(self, run: TrackedRun) -> None:
        from mlflow.entities import Metric, Param

        parent, _ = self.parent
        child, new = self._run(f"tags.`{RUN_TAG}` = '{run.run_id}' and tags.`{PARENT_TAG}` = '{parent}'",
                               {RUN_TAG: run.run_id, PARENT_TAG: parent, "wsolctl.phase": run.phase}, run.name)
        if not new:  # logged by an earlier command on this output directory
            return
        params = [Param(k[:250], v[:6000]) for k, v in run.params.items()]
        metrics = [Metric(key, value, 0, step) for key, value, step in epoch_values(run)]
        for i in range(0, max(len(params), len(metrics)), BATCH):
            self.client.log_batch(child, metrics=metrics[i:i + BATCH], params=params[i:i + BATCH])
        self.client.set_terminated(child)

    def log_files(self, paths: Sequence[Path]) -> None:
        parent, _ = self.parent
        for path in paths:
            if path.is_dir():
                self.client.log_artifacts(parent, str(path), artifact_path=path.name)
            else:
                self.client.log_artifact(parent, str(path))

    def close(self) -> None:
        self.client.set_terminated(self.parent[0])  # finished for now; a later command logs to it again

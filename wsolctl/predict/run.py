"""``wsolctl predict``: apply a trained model to whole slides and image files.

Per input, in ``out/<name>/`` (written into a temporary folder renamed into place when complete)::

    heatmap.tif      tiled pyramidal uint8 TIFF (map × 255) of the whole slide at heatmap.json's downsample
    heatmap.json     downsample, slide size, method, run id, selection rule, normalisation, threshold,
                     the tiles' input normalisation (the backbone's mean / std)
    overlay.png      thumbnail with the heatmap blended in and a colour bar
    regions.geojson  polygons (level-0 pixels) where the map ≥ threshold, as QuPath annotations
    regions.xml      the same polygons as ASAP XML (group _0, holes _2)
    tiles.parquet    per tile: x, y (level 0), tissue fraction, class probability, map max and mean
    tiles.geojson    the tiles as QuPath detections with those measurements (QuPath's measurement maps)
    result.json      this input's row of predictions.parquet and the settings it was made with

Image inputs (png, jpg, plain tif) get ``cam.png`` (the map, 0–255, at the image's size) and
``overlay.png``. ``out/predictions.parquet`` has one row per input; with annotations,
``out/scores.md`` summarises PxAP and Dice. A rerun skips inputs already predicted with the same
settings; failed inputs are recorded and retried on the next run.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

from wsolctl.errors import InputError
from wsolctl.predict.image import predict_image
from wsolctl.predict.inputs import Job, PredictOptions, annotation_of, discover_inputs
from wsolctl.predict.scores import settings, write_predictions, write_scores
from wsolctl.predict.slides import predict_slide
from wsolctl.wsi.fingerprint import fingerprint, stable_key

RESULT = "result.json"
FORMAT = 1


@dataclass(frozen=True)
class Predictions:
    rows: list[dict]
    path: Path  # predictions.parquet
    scores: Optional[str]  # the Markdown summary with annotations

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]


# per process: model arguments -> LoadedModel, the most recently used last; at most MAX_MODELS kept
# (a long-lived process predicting with many models does not hold them all)
_MODELS: OrderedDict = OrderedDict()


MAX_MODELS = 2


def _init_worker(run_dir: Path, args: tuple, threads: Optional[int] = None) -> None:
    """Load the model once per process (pool and Ray workers; idempotent)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    key = (str(run_dir), args)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return
    from wsolctl.predict.model import load_selected

    method, backbone, selection, device, run = args
    _MODELS[key] = load_selected(run_dir, method, backbone, selection, device, run)
    while len(_MODELS) > MAX_MODELS:
        _MODELS.popitem(last=False)


def _loaded(run_dir: Path, options: PredictOptions):
    _init_worker(run_dir, options.model_args())
    return _MODELS[(str(run_dir), options.model_args())]


def predict_input(job: Job, progress=None) -> dict:
    """Predict one input into ``job.folder`` (atomically); never raises for a failing input."""
    from wsolctl.io import atomic_directory, write_json

    began = time.perf_counter()
    base = {"slide": job.input.name, "path": str(job.input.path), "kind": job.input.kind}
    try:
        loaded = _loaded(job.run_dir, job.options)
        with atomic_directory(job.folder) as tmp:
            predict_one = predict_slide if job.input.kind == "slide" else predict_image
            row = {**base, "status": "ok", "error": None,
                   **predict_one(loaded, job.input.path, tmp, job.options, job.xml, progress)}
            row["duration_s"] = time.perf_counter() - began
            write_json(tmp / RESULT, {"key": job.key, "row": row})
        return row
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad input must not stop the others
        message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        return {**base, "status": "failed", "error": message, "duration_s": time.perf_counter() - began}


def _warn_if_nothing(loaded, _class_index: int, threshold: float) -> None:
    """Maps lie in [0, 1]: a τ above 1 (τ* = 2, "predicting nothing scored best") draws no region."""
    if threshold > 1:
        import warnings

        from wsolctl.errors import PredictsNothingWarning

        warnings.warn(f"{loaded.method_label} ({loaded.selection}, run {loaded.run_id}): threshold τ* = {threshold:g} "
                      "predicts nothing (on its test masks an empty prediction scored the best mIoU), so no region "
                      "will be drawn; heatmaps are still written. Pass --threshold to draw regions.",
                      PredictsNothingWarning, stacklevel=3)


def predict(run_dir: Path, inputs: list[Path], out: Path, options: Optional[PredictOptions] = None,
            quiet: bool = False) -> Predictions:
    """Predict every input into ``out``; writes ``out/predictions.parquet`` (and ``scores.md`` with
    annotations). Failing inputs are rows with status ``failed``; the others finish."""
    from wsolctl.executors import WorkerDied, WorkerPool, backend, threads_per_worker
    from wsolctl.predict.resolution import with_study_mpp
    from wsolctl.progress import Progress

    options = options or PredictOptions()
    run_dir, out = Path(run_dir), Path(out)
    if options.annotations is not None and not Path(options.annotations).is_dir():
        raise InputError(f"--annotations {options.annotations}: folder not found")
    loaded = _loaded(run_dir, options)  # a wrong model choice fails here, before any work
    options = options.model_copy(update={"selection": loaded.selection})  # the study's rule, when left out
    _MODELS[(str(run_dir), options.model_args())] = loaded
    options = with_study_mpp(options, run_dir, loaded.run_id)
    _warn_if_nothing(loaded, *settings(loaded, options))
    found = discover_inputs(inputs)
    identity = {"format": FORMAT, "run_dir": str(run_dir.resolve()), "run_id": loaded.run_id,
                "method": loaded.method_label, "options": options.model_dump(mode="json", exclude={"workers", "executor", "readers"})}
    jobs = [Job(item, out / item.name, stable_key(identity, fingerprint(item.path), fingerprint(xml)), xml, run_dir, options)
            for item in found for xml in [annotation_of(options.annotations, item.name)]]
    rows: dict[int, dict] = {}
    todo = []
    for index, job in enumerate(jobs):
        previous = _finished(job)
        if previous is not None:
            rows[index] = previous
        else:
            todo.append(index)
    threads = None if backend(options.executor).in_process(options.workers) else threads_per_worker(options.workers)
    pool = WorkerPool(options.workers, options.executor, _init_worker, (run_dir, options.model_args(), threads))
    with Progress(quiet=quiet) as progress, pool:
        bar = progress.task("inputs", len(jobs))
        bar.advance(len(jobs) - len(todo))
        work = partial(predict_input, progress=progress) if pool.sequential else predict_input
        for position, result in pool.map(work, [jobs[i] for i in todo]):
            index = todo[position]
            if isinstance(result, WorkerDied):
                item = jobs[index].input
                result = {"slide": item.name, "path": str(item.path), "kind": item.kind, "status": "failed",
                          "error": str(result), "duration_s": None}
            rows[index] = result
            bar.describe(f"inputs ({sum(r['status'] == 'failed' for r in rows.values())} failed)")
            bar.advance()
    ordered = [rows[i] for i in range(len(jobs))]
    return Predictions(ordered, write_predictions(out, ordered), write_scores(out, ordered, options))


def _finished(job: Job) -> Optional[dict]:
    path = job.folder / RESULT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data["row"] if data.get("key") == job.key else None


"""Model selection and the final test: load each method's B-LOC / B-CL checkpoint of a finished
run, score it on ``test`` once, and keep the rows (cached per run, so reruns are cheap)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from wsolctl.engine.build import Data, build_model
from wsolctl.engine.evaluate import evaluate
from wsolctl.engine.plan import Run, instantiate
from wsolctl.engine.progress import Progress
from wsolctl.engine.train import best_epochs
from wsolctl.metrics import LocalizationMeter
from wsolctl.recipe.schema import Recipe
from wsolctl.results.io import write_json


def select_run(recipe: Recipe, run: Run, data: Data, run_dir: Path, device: torch.device,
               progress: Progress) -> dict:
    """Return ``{"results": [...], "curves": [...]}`` for one finished run (cached in test.json)."""
    cache = run_dir / "test.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    done = json.loads((run_dir / "done.json").read_text())
    model = build_model(recipe, run, len(data.classes)).to(device)
    baseline = trivial_pxap(data, recipe.evaluation.thresholds)
    out: dict = {"results": [], "curves": []}
    by_epoch: dict[int, list[tuple[str, str]]] = {}
    for ref in run.methods:
        for rule, epoch in done["best"][ref.label].items():
            if rule in recipe.selection:
                by_epoch.setdefault(epoch, []).append((ref.label, rule))
    for epoch, picks in sorted(by_epoch.items()):
        state = torch.load(run_dir / "ckpt" / f"epoch-{epoch:04d}.pt", map_location=device, weights_only=True)
        model.load_state_dict(state)
        labels = {label for label, _ in picks}
        methods = {ref.label: instantiate(recipe, ref.index) for ref in run.methods if ref.label in labels}
        scores = evaluate(model, methods, data.test, device, accuracy=True, localize=True,
                          thresholds=recipe.evaluation.thresholds, cam_target=recipe.evaluation.cam_target,
                          progress=progress, description=f"run {run.run_id}: test @ epoch {epoch}")
        for label, rule in picks:
            result = scores.localization[label]
            out["results"].append({"method": label, "selection": rule, "epoch": epoch, **result.as_dict(),
                                   "cl_acc": scores.accuracy, "baseline_pxap": baseline})
            curves = {k: [float(x) for x in v] for k, v in result.curves.items()}
            out["curves"].append({"method": label, "selection": rule, **curves})
    write_json(cache, out)
    return out


def trivial_pxap(data: Data, thresholds: int) -> float:
    """PxAP of an all-foreground (constant) map on the test set: the fraction of ROI pixels, in %."""
    meter = LocalizationMeter(thresholds)
    for _, _, masks in data.test:
        meter.update(torch.zeros(masks.shape), masks)
    return meter.compute().pxap

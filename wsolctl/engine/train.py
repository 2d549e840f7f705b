"""Train one run, evaluating every epoch (epoch 0 included, before any update).

Per epoch: accuracy on ``valcl`` and, for every method of the run, PxAP on ``valpx``. The
checkpoints that B-LOC / B-CL would pick so far are kept on disk (ties go to the later epoch), with
epoch 0's (the untrained reference of the final test), and
its resume state holds what is needed to resume. A finished run is skipped (files:
:class:`~wsolctl.engine.rundir.RunDir`).
"""
from __future__ import annotations

import json
import math
import time
from typing import Optional

import torch

from wsolctl.engine import features
from wsolctl.engine.build import Data, build_model, build_optimizer, build_scheduler, seed_everything
from wsolctl.engine.evaluate import evaluate
from wsolctl.engine.plan import RunSpec
from wsolctl.engine.pseudo import WithMasks, pseudo_masks
from wsolctl.engine.rundir import Done, RunDir
from wsolctl.errors import NonFiniteLoss
from wsolctl.io import torch_save
from wsolctl.methods.base import Batch
from wsolctl.progress import Progress
from wsolctl.recipe.evaluation import Evaluation
from wsolctl.selection import RULES


def best_epochs(history: list[dict], label: str) -> dict[str, int]:
    """Epoch chosen by each selection rule for one method; ties go to the later epoch."""
    rows = [r for r in history if r["method"] == label]
    measured = {name: rule for name, rule in RULES.items() if any(rule.metric in r for r in rows)}

    def key(row: dict, metric: str) -> tuple[float, int]:
        value = row.get(metric)
        return (value if value is not None and math.isfinite(value) else -math.inf, row["epoch"])

    return {name: max(rows, key=lambda r: key(r, rule.metric))["epoch"] for name, rule in measured.items()}


def selected_state(run: RunDir, selection: str, device: torch.device) -> dict:
    """State dict of a finished run's checkpoint chosen by ``selection`` (its only method's)."""
    if not run.is_done:
        raise RuntimeError(f"prerequisite run {run.run_id} has not finished")
    (label,) = run.spec().labels
    return run.state(run.epoch_of(label, selection), device)


def train_run(spec: RunSpec, data: Data, run: RunDir, device: torch.device, progress: Progress) -> None:
    if run.is_done:
        return
    recipe, train = spec.recipe, spec.train
    run.path.mkdir(parents=True, exist_ok=True)
    seed_everything(recipe.seed)  # model initialisation
    model = build_model(spec, len(data.classes)).to(device)
    if spec.prerequisite is not None:
        model.method.load_prerequisite(model, selected_state(run.sibling(spec.prerequisite.run_id),
                                                             model.method.prerequisite_rule, device))
    optimizer = build_optimizer(train, model)
    scheduler = build_scheduler(train, optimizer)
    methods = {label: method.instantiate() for label, method in zip(spec.labels, spec.methods)}
    history, start = _resume(run, model, optimizer, scheduler, device)
    pseudo = _pseudo_valpx(recipe.evaluation, data, device, spec.backbone.normalization())
    cache = features.prepare(spec, data, model, device, progress)  # None unless train.feature_cache
    trainee = features.OnFeatures(model) if cache else model  # heads learn on stored outputs
    use_amp = device.type == "cuda" if train.amp == "auto" else bool(train.amp)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and device.type == "cuda")

    epochs = progress.task(f"run {spec.run_id}: epochs", train.epochs + 1)
    epochs.advance(start)
    for epoch in range(start, train.epochs + 1):
        began = time.perf_counter()
        for method in (model.method, *methods.values()):
            method.set_epoch(epoch)
        loss = float("nan")
        if epoch > 0:
            seed_everything(recipe.seed, epoch)  # shuffling and augmentation depend on (seed, epoch) only
            loss = _train_epoch(trainee, cache.loader(epoch) if cache else data.train, optimizer, scaler, device,
                                use_amp, progress)
            scheduler.step()
        rows = _evaluate_epoch(recipe.evaluation, model, methods, data, device, progress, epoch, pseudo, cache)
        for row in rows:
            row.update(train_loss=loss, lr=optimizer.param_groups[0]["lr"], duration_s=time.perf_counter() - began)
        history += rows
        _save(run, model, optimizer, scheduler, history, epoch, methods)
        epochs.advance()
    epochs.close()
    run.write_done(Done(train.epochs, data.classes, {m: best_epochs(history, m) for m in methods}))


def _train_epoch(model, loader, optimizer, scaler, device, use_amp: bool, progress) -> float:
    model.train()
    total, count = 0.0, 0
    batches = progress.task("train", len(loader))
    for images, labels, masks in loader:
        batch = Batch(images.to(device, non_blocking=True), labels.to(device, non_blocking=True),
                      masks.to(device, non_blocking=True) if model.method.needs_masks else None)
        total += train_step(model, batch, optimizer, scaler, use_amp) * len(labels)
        count += len(labels)
        batches.advance()
    batches.close()
    return total / max(count, 1)


def train_step(model, batch: Batch, optimizer, scaler, use_amp: bool) -> float:
    """One optimisation step of the method's loss; returns the loss value."""
    batch = model.method.augment(batch)
    with torch.autocast(batch.images.device.type, enabled=use_amp):
        output = model(batch.images, batch.labels)
        loss = model.method.loss(output, batch)
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLoss(f"training loss became {value}; lower train.lr or check the data")
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return value


def _pseudo_valpx(ev: Evaluation, data: Data, device, normalize=None):
    """valpx with its images' pseudo-masks (``evaluation.annotator``), or None; ``normalize``: the
    backbone's mean / std of the valpx images (default ImageNet's)."""
    if ev.annotator is None:
        return None
    annotator = ev.annotator.instantiate()
    if normalize is not None:
        annotator.normalize = normalize
    return WithMasks(data.valpx, pseudo_masks(annotator, data.valpx, device))


def _evaluate_epoch(ev: Evaluation, model, methods, data: Data, device, progress, epoch: int,
                    pseudo=None, cache: Optional[features.FeatureCache] = None) -> list[dict]:
    """Per method: valcl accuracy (from the stored encoder outputs with ``cache``) and, for each
    split with masks a selection rule reads, PxAP and τ* (``<split>_pxap``, ``<split>_threshold``):
    valpx against its true masks and, with ``pseudo`` (valpx with pseudo-masks), against the
    pseudo-masks (``valpx_pseudo_*``: ``b-pseudo``, ``val-pseudo``)."""
    valcl = evaluate(features.OnFeatures(model) if cache else model, {}, cache.valcl() if cache else data.valcl,
                     device, accuracy=True, localize=False, progress=progress, description=f"epoch {epoch}: valcl")
    splits = {rule.scores: pseudo if rule.needs == "annotator" else getattr(data, rule.split)
              for rule in RULES.values() if rule.needs == "masks" or (rule.needs == "annotator" and pseudo is not None)}
    rows = {label: {"method": label, "epoch": epoch, "valcl_acc": valcl.accuracy} for label in methods}
    for name, loader in splits.items():
        scores = evaluate(model, methods, loader, device, accuracy=False, localize=True, thresholds=ev.thresholds,
                          cam_target=ev.cam_target, progress=progress, description=f"epoch {epoch}: {name}")
        for label, result in scores.localization.items():
            rows[label].update({f"{name}_pxap": result.pxap, f"{name}_threshold": result.threshold})
    return list(rows.values())


def _resume(run: RunDir, model, optimizer, scheduler, device) -> tuple[list[dict], int]:
    path = run.state_file
    if not path.is_file():
        return [], 0
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    history = json.loads(state["history"])
    return history, state["epoch"] + 1


def _save(run: RunDir, model, optimizer, scheduler, history: list[dict], epoch: int, methods) -> None:
    """Keep the checkpoints of epoch 0 and of the epochs currently selected by some rule, then the resume state,
    then drop checkpoints no rule points at any more (in that order, so a crash loses nothing)."""
    # epoch 0 (the seeded, unfitted model) is kept too: select scores it as the untrained reference
    keep = {0} | {e for label in methods for e in best_epochs(history, label).values()}
    if epoch in keep:
        run.save_checkpoint(epoch, model.state_dict())
    torch_save(run.state_file, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                      "scheduler": scheduler.state_dict(), "epoch": epoch,
                                      "history": json.dumps(history)})
    run.write_epochs(history)
    run.drop_checkpoints(keep)

"""Score a model on one split: top-1 accuracy and, per method, the streaming localization metric."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch.utils.data import DataLoader

from wsolctl.engine.model import WSOLModel
from wsolctl.engine.progress import Progress
from wsolctl.methods.base import Method
from wsolctl.metrics import LocalizationMeter, LocalizationResult, prepare_cams


@dataclass
class Scores:
    accuracy: Optional[float] = None  # %
    localization: dict[str, LocalizationResult] = field(default_factory=dict)


def evaluate(model: WSOLModel, methods: dict[str, Method], loader: DataLoader, device: torch.device, *,
             accuracy: bool, localize: bool, thresholds: int = 1000, cam_target: str = "ground-truth",
             progress: Optional[Progress] = None, description: str = "evaluate") -> Scores:
    model.eval()
    meters = {label: LocalizationMeter(thresholds) for label in methods} if localize else {}
    correct = total = 0
    task = progress.task(description, len(loader)) if progress else None
    needs_prediction = accuracy or cam_target == "predicted"  # valpx with ground-truth targets: no
    for images, labels, masks in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        targets = labels
        if needs_prediction:
            with torch.no_grad():
                predicted = model(images).logits.argmax(dim=1)
            correct += int((predicted == labels).sum())
            total += len(labels)
            targets = labels if cam_target == "ground-truth" else predicted
        for label, method in methods.items():
            if localize:
                with torch.no_grad():
                    cams = method.cams(model, images, targets)
                meters[label].update(prepare_cams(cams, masks.shape[-2:], method.map_kind), masks.to(device))
        if task:
            task.advance()
    if task:
        task.close()
    return Scores(100.0 * correct / max(total, 1) if accuracy else None,
                  {label: meter.compute() for label, meter in meters.items()})

"""Score a model on one split: top-1 accuracy and, per method, the streaming localization metrics."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader

from wsolctl.engine.model import WSOLModel
from wsolctl.methods.base import Method
from wsolctl.metrics import LocalizationMeter, LocalizationResult, prepare_cams
from wsolctl.metrics_extra import FaithfulnessMeter, MapMeter, MaxBoxAccV2Meter, PointingGameMeter, RoadMeter
from wsolctl.progress import Progress
from wsolctl.recipe.schema import Evaluation

# Columns of LocalizationResult that belong to the `dice` metric; PxAP's are always kept (B-LOC).
DICE_COLUMNS = ("dice_fg", "dice_bg", "iou_fg")


@dataclass
class Scores:
    accuracy: Optional[float] = None  # %
    localization: dict[str, LocalizationResult] = field(default_factory=dict)
    extra: dict[str, dict[str, float]] = field(default_factory=dict)  # per method: metrics_extra columns


def extra_meters(settings: Evaluation, model: WSOLModel) -> list[MapMeter]:
    """Fresh meters for the recipe's metrics that LocalizationMeter does not give."""
    factories = {
        "maxboxacc-v2": lambda: MaxBoxAccV2Meter(settings.box_thresholds),
        "pointing-game": PointingGameMeter,
        "deletion": lambda: FaithfulnessMeter(model, "deletion", settings.faithfulness_steps, settings.batch_size),
        "insertion": lambda: FaithfulnessMeter(model, "insertion", settings.faithfulness_steps, settings.batch_size),
        "road": lambda: RoadMeter(model, settings.road_percentiles, settings.batch_size),
    }
    return [factories[name]() for name in settings.metrics if name in factories]


def evaluate(model: WSOLModel, methods: dict[str, Method], loader: DataLoader, device: torch.device, *,
             accuracy: bool, localize: bool, thresholds: int = 1000, cam_target: str = "ground-truth",
             progress: Optional[Progress] = None, description: str = "evaluate",
             extra: Callable[[], list[MapMeter]] = list) -> Scores:
    """``extra`` makes each method's meters beyond PxAP (used only if ``localize``)."""
    model.eval()
    meters = {label: LocalizationMeter(thresholds) for label in methods} if localize else {}
    others = {label: extra() for label in meters}
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
                maps, fg = prepare_cams(cams, masks.shape[-2:], method.map_kind), masks.to(device)
                meters[label].update(maps, fg)
                for meter in others[label]:
                    meter.update(maps, fg, images, targets)
        if task:
            task.advance()
    if task:
        task.close()
    return Scores(100.0 * correct / max(total, 1) if accuracy else None,
                  {label: meter.compute() for label, meter in meters.items()},
                  {label: {k: v for m in ms for k, v in m.compute().items()} for label, ms in others.items()})

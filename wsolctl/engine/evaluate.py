"""Score a model on one split: top-1 accuracy and, per method, the streaming localization metrics:
the always-on PxAP meter and a meter of each metric plugin asked for."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from wsolctl.engine.model import WSOLModel
from wsolctl.errors import UnknownPlugin
from wsolctl.methods.base import Method
from wsolctl.metrics import LocalizationMeter, LocalizationResult, MapMeter, MeterContext, Metric, PxAP, prepare_cams
from wsolctl.plugins import name_of
from wsolctl.progress import Progress


@dataclass
class Scores:
    accuracy: Optional[float] = None  # %
    localization: dict[str, LocalizationResult] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # per method: the metric plugins' columns
    # with ``per_image``: each image's class ("labels") and, with accuracy, correctness ("correct")
    images: dict[str, np.ndarray] = field(default_factory=dict)
    # with ``per_image``: per method, each resampled metric's per-image statistics ("pxap": the histograms)
    statistics: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def evaluate(model: WSOLModel, methods: dict[str, Method], loader: DataLoader, device: torch.device, *,
             accuracy: bool, localize: bool, thresholds: int = 1000, cam_target: str = "ground-truth",
             progress: Optional[Progress] = None, description: str = "evaluate",
             metrics: Sequence[type[Metric]] = (), settings: Any = None, per_image: bool = False) -> Scores:
    """``metrics``: plugins scored besides PxAP (only if ``localize``), their meters built with the
    recipe's ``evaluation`` section ``settings``. ``per_image``: also keep the per-image statistics
    that bootstrap intervals resample (:mod:`wsolctl.metrics.base`)."""
    model.eval()
    meters = {label: LocalizationMeter(thresholds, per_image) for label in methods} if localize else {}
    others = {label: _meters(metrics, settings, model, meter) for label, meter in meters.items()}
    correct = total = 0
    seen: dict[str, list] = {"labels": [], "correct": []}
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
            seen["correct"].append((predicted == labels).cpu())
            targets = labels if cam_target == "ground-truth" else predicted
        seen["labels"].append(labels.cpu())
        for label, method in methods.items():
            if localize:
                with torch.no_grad():
                    cams = method.cams(model, images, targets)
                maps, fg = prepare_cams(cams, masks.shape[-2:], method.map_kind), masks.to(device)
                meters[label].update(maps, fg)
                for meter in others[label].values():
                    meter.update(maps, fg, images, targets)
        if task:
            task.advance()
    if task:
        task.close()
    return Scores(100.0 * correct / max(total, 1) if accuracy else None,
                  {label: meter.compute() for label, meter in meters.items()},
                  {label: {k: v for metric, m in ms.items() for k, v in _computed(metric, m).items()}
                   for label, ms in others.items()},
                  {k: torch.cat(v).numpy() for k, v in seen.items() if v} if per_image else {},
                  {label: {PxAP.name: meters[label].per_image(), **_statistics(others[label])} for label in meters}
                  if per_image else {})


def _statistics(meters: dict[type[Metric], MapMeter]) -> dict[str, np.ndarray]:
    """The per-image statistics of the meters whose metric declares a resampling and keeps them."""
    return {name_of(metric): np.asarray(meter.per_image()) for metric, meter in meters.items()
            if metric.resampling and hasattr(meter, "per_image")}


def _meters(metrics: Sequence[type[Metric]], settings: Any, model: WSOLModel,
            localization: LocalizationMeter) -> dict[type[Metric], MapMeter]:
    """Fresh meters of one method's maps; only metrics that declare forward passes see the model."""
    given = getattr(settings, "metric_params", {})
    return {metric: metric.meter(MeterContext(settings, model if metric.forward_passes else None, localization,
                                              metric.Params.model_validate(given.get(name_of(metric), {}))))
            for metric in metrics}


def _computed(metric: type[Metric], meter: MapMeter) -> dict[str, float]:
    """The meter's values, which must be exactly the columns its metric declares."""
    values = meter.compute()
    declared = [c.name for c in metric.columns]
    if sorted(values) != sorted(declared):
        raise UnknownPlugin(f"metric {name_of(metric)!r} computed columns {sorted(values)}, but declares {declared}")
    return {name: float(values[name]) for name in declared}

"""Selection and thresholds without pixel annotations (issue 19).

* ``b-pseudo``: B-LOC's rule (the epoch with the best validation PxAP) with the valpx images'
  pseudo-masks (:mod:`wsolctl.annotators`) in place of the true masks. The pseudo-masks do
  not depend on the epoch: they are drawn once per run (:func:`pseudo_masks`).
* Threshold rules (which rule set a row's ``threshold``: ``results.parquet`` column
  ``threshold_rule``):

  - ``test-masks``: τ* = best mIoU on the test set's true masks (the survey's protocol; an oracle);
  - ``val-masks``: τ* on the valpx true masks at the selected epoch (WACV 2025 with manual masks);
  - ``val-pseudo``: τ* on the valpx pseudo-masks at the selected epoch (WACV 2025's realistic rule);
  - ``otsu``: per image, Otsu's threshold on the min-max normalised map (no validation at all).

  A global τ gives Dice and IoU on test from the test curves (the same pixel micro-average as
  Dice@τ*); Otsu's per-image thresholds are scored by :class:`OtsuMeter` with the same counts.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch

from wsolctl.annotators import otsu_thresholds
from wsolctl.engine.rundir import RunDir
from wsolctl.metrics.base import Column, MeterContext, Metric


def load_explainer(run: str, method: Optional[str], selection: str, device) -> tuple[torch.nn.Module, object]:
    """The trained model that ``selection`` picked for ``method`` (default: the run's first) in the
    finished run directory ``run``, in eval mode on ``device``, and that method's plugin, which
    explains it: the model loader the engine gives annotators (:meth:`Annotator.bind`)."""
    model, spec = RunDir(run).load_model(method, selection, device=device)
    label = method or spec.labels[0]
    return model, spec.methods[spec.labels.index(label)].instantiate()


def pseudo_masks(annotator, loader, device: torch.device) -> list[torch.Tensor]:
    """The annotator's masks of every batch of ``loader`` (unshuffled), on the CPU, once."""
    annotator.bind(device, load_explainer)
    out = []
    for images, labels, masks in loader:
        truth = masks if annotator.reads_masks else None  # declared: only those that need them see them
        out.append(annotator.masks(images.to(device), labels.to(device), truth).bool().cpu())
    return out


class WithMasks:
    """``loader`` with each batch's masks replaced by ``masks`` (e.g. pseudo-masks): what
    :func:`wsolctl.engine.evaluate.evaluate` scores against."""

    def __init__(self, loader, masks: list[torch.Tensor]):
        self.loader, self.masks = loader, masks

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for (images, labels, _), masks in zip(self.loader, self.masks, strict=True):
            yield images, labels, masks


def at_threshold(curves: dict, threshold: float, column: str = "dice_fg") -> float:
    """A test curve's value at a grid threshold (NaN threshold: NaN)."""
    if threshold is None or not np.isfinite(threshold):
        return float("nan")
    grid = np.asarray(curves["threshold"])
    return float(np.asarray(curves[column])[int(np.argmin(np.abs(grid - threshold)))])


class OtsuMeter:
    """Foreground Dice and IoU (%) with Otsu's threshold per map, pixel counts summed over the split
    (as Dice@τ*). Maps must be those scored, in [0, 1]."""

    def __init__(self):
        self._counts: list[torch.Tensor] = []  # per image: TP, FP, FN pixels

    def update(self, maps, masks, images=None, targets=None) -> None:
        predicted = maps > otsu_thresholds(maps).view(-1, 1, 1)
        fg = masks.to(maps.device).bool()
        self._counts.append(torch.stack([(predicted & fg).sum((1, 2)), (predicted & ~fg).sum((1, 2)),
                                         (~predicted & fg).sum((1, 2))], dim=1).cpu())

    def per_image(self) -> np.ndarray:
        """(N, 3) int64: each image's TP, FP, FN pixel counts."""
        return torch.cat(self._counts).numpy() if self._counts else np.zeros((0, 3), np.int64)

    def compute(self) -> dict[str, float]:
        return {k: float(v[0]) for k, v in Otsu.resampled({Otsu.name: self.per_image().sum(0)[None]}).items()}


OTSU_COLUMNS = ("dice_fg_otsu", "iou_fg_otsu")


class Otsu(Metric):
    """Internal metric (not registered): Dice / IoU with Otsu's threshold per map, appended by the
    selection to the recipe's metrics so the ``otsu`` threshold rule can be scored."""

    name = "otsu-threshold"
    description = "foreground Dice and IoU with Otsu's threshold per map"
    columns = tuple(Column(c, c) for c in OTSU_COLUMNS)
    resampling = "sums"

    @classmethod
    def resampled(cls, sums):
        tp, fp, fn = np.moveaxis(np.asarray(sums[cls.name], dtype=np.float64), -1, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"dice_fg_otsu": np.where(tp + fn > 0, 100.0 * 2 * tp / (2 * tp + fp + fn), np.nan),
                    "iou_fg_otsu": np.where(tp + fn > 0, 100.0 * tp / (tp + fp + fn), np.nan)}

    @classmethod
    def meter(cls, context: MeterContext) -> "OtsuMeter":
        return OtsuMeter()


def threshold_columns(result, otsu: dict[str, float], history_row: dict) -> dict[str, float]:
    """Per threshold rule: the threshold (NaN for per-image Otsu) and test Dice / IoU, from the test
    result of the selected model and the validation row of its epoch."""
    out = {"threshold_test_masks": result.threshold, "dice_fg_test_masks": result.dice_fg,
           "iou_fg_test_masks": result.iou_fg,
           "dice_fg_otsu": otsu.get("dice_fg_otsu", float("nan")), "iou_fg_otsu": otsu.get("iou_fg_otsu", float("nan"))}
    for rule, key in (("val_masks", "valpx_threshold"), ("val_pseudo", "valpx_pseudo_threshold")):
        tau = history_row.get(key)
        tau = float("nan") if tau is None else float(tau)
        out[f"threshold_{rule}"] = tau
        out[f"dice_fg_{rule}"] = at_threshold(result.curves, tau, "dice_fg")
        out[f"iou_fg_{rule}"] = at_threshold(result.curves, tau, "iou_fg")
    return out


AT_THRESHOLD = {"miou": "miou", "tp_at_threshold": "tp", "fn_at_threshold": "fn", "fp_at_threshold": "fp",
                "tn_at_threshold": "tn", "dice_fg": "dice_fg", "dice_bg": "dice_bg", "iou_fg": "iou_fg"}


def at_rule(result, rule: str, columns: dict[str, float]) -> dict[str, float]:
    """The test result's at-threshold columns (``threshold``, mIoU, Dice, …) under threshold ``rule``,
    given its :func:`threshold_columns`."""
    if rule == "test-masks":
        return {}
    if rule == "otsu":
        return {"threshold": float("nan"), **{k: float("nan") for k in AT_THRESHOLD},
                "dice_fg": columns["dice_fg_otsu"], "iou_fg": columns["iou_fg_otsu"]}
    tau = columns[f"threshold_{rule.replace('-', '_')}"]
    return {"threshold": tau, **{k: at_threshold(result.curves, tau, curve) for k, curve in AT_THRESHOLD.items()}}

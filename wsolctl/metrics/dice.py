"""Foreground Dice and IoU at τ*, a ``wsolctl.metrics`` plugin (``dice``).

At τ*, the test threshold of best mIoU (:mod:`wsolctl.metrics.pixel`), in pixel counts pooled over
the split: ``Dice_fg = 2TP / (2TP + FN + FP)``, ``Dice_bg = 2TN / (2TN + FN + FP)`` and
``IoU_fg = TP / (TP + FN + FP)``, in %. They are read from the always-on PxAP meter's histogram, so
they cost nothing beyond it.
"""
from __future__ import annotations

from wsolctl.metrics.base import Column, MeterContext, Metric, ReportTable


class Dice(Metric):
    """Dice and IoU of the foreground (and Dice of the background) at τ*."""

    description = "Dice and IoU of the foreground at τ*, the test threshold of best mIoU"
    # fields of LocalizationResult
    columns = (Column("dice_fg", "Dice@τ*"), Column("dice_bg", ""), Column("iou_fg", "IoU@τ*"))
    tables = (ReportTable("dice_fg", "Foreground Dice at τ*",
                          "Dice = 2TP / (2TP + FN + FP) of the foreground at τ*, the test threshold of best mIoU (%)"),
              ReportTable("iou_fg", "Foreground IoU at τ*", "IoU = TP / (TP + FN + FP) of the foreground at τ* (%)"))
    prominent = True
    survey_rank = 10
    resampling = "sums"  # from the always-on PxAP meter's per-image histograms

    @classmethod
    def resampled(cls, sums):
        from wsolctl.metrics.pxap import PxAP

        found = PxAP.resampled(sums)
        return {column.name: found[column.name] for column in cls.columns}

    @classmethod
    def meter(cls, context: MeterContext) -> "AtBestThreshold":
        return AtBestThreshold(context.localization)


class AtBestThreshold:
    """Reads the Dice / IoU fields of a :class:`~wsolctl.metrics.LocalizationMeter` fed elsewhere."""

    def __init__(self, localization):
        self.localization = localization

    def update(self, maps, masks, images, targets) -> None:
        """Nothing to add: the shared meter sees the same maps."""

    def compute(self) -> dict[str, float]:
        result = self.localization.compute()
        return {column.name: getattr(result, column.name) for column in Dice.columns}

"""PxAP and the survey's confusion components: the always-on metric (Rony et al., eqs. 15-24).

Scored for every method on every split with masks (validation included: B-LOC selects by it), by
the shared :class:`~wsolctl.metrics.pixel.LocalizationMeter`, whose histograms the other metrics
may reuse (``MeterContext.localization``). Its columns are declared here once; ``results.parquet``,
the report's tables, ``wsolctl compare`` and the terminal summary read them from :class:`PxAP`.
Torch-free at import.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from wsolctl.metrics.base import Column, MeterContext, Metric

if TYPE_CHECKING:
    from wsolctl.metrics.pixel import LocalizationMeter


class PxAP(Metric):
    """PxAP, TP*/FN*/FP*/TN* marginalised over the thresholds, τ* (best mIoU on test) and the
    values at τ*. Always on: ``evaluation.metrics`` may list it; it cannot be left out."""

    name = "pxap"
    description = "PxAP and the survey's TP*/FN*/FP*/TN*, with τ* and mIoU"
    columns = (
        Column("pxap", "PxAP", tolerance=0.5),
        Column("tp", "TP*", tolerance=1.0),
        Column("fn", "FN*", lower_is_better=True, tolerance=1.0),
        Column("fp", "FP*", lower_is_better=True, tolerance=1.0),
        Column("tn", "TN*", tolerance=1.0),
        Column("threshold", "τ*", unit="[0, 1], or 2 = predict nothing", digits=3),  # 2: predicting nothing scored best
        Column("miou", "mIoU@τ*", tolerance=1.0),
        *(Column(f"{c}_at_threshold", "") for c in ("tp", "fn", "fp", "tn")),  # in results.parquet only
    )
    confusion: ClassVar[tuple[str, ...]] = ("tp", "fn", "fp", "tn")  # the survey's Tables 2-3
    summary: ClassVar[tuple[str, ...]] = ("pxap", "tp", "fp")  # printed after `wsolctl run` (FN* = 100 − TP*...)
    survey_rank = 0
    resampling = "sums"  # the meter's per-image (background, foreground) histograms

    @classmethod
    def meter(cls, context: MeterContext) -> LocalizationMeter:
        """The shared meter itself (evaluation feeds it; its result has every column as a field)."""
        return context.localization

    @classmethod
    def resampled(cls, sums):
        """Every field of :class:`~wsolctl.metrics.pixel.LocalizationResult` from the summed
        histograms: its columns, and those of ``dice`` (fields of the same histograms; a metric
        whose columns are all computed already is not resampled again)."""
        from wsolctl.metrics.pixel import localization_columns

        histograms = sums[cls.name]
        return localization_columns(histograms, histograms.shape[-1] - 2)


# Top-1 accuracy on test: not a localization metric, a results column all the same.
ACCURACY = Column("cl_acc", "accuracy", tolerance=1.0)
# The reference values of a results row, the report's reference rows (in no average, no ranking):
# PxAP of the all-foreground map and of the run's untrained (epoch-0) model.
REFERENCE_COLUMNS = (Column("baseline_pxap", "reference: all-foreground map"),
                     Column("untrained_pxap", "reference: untrained model (epoch 0)"))
BASELINE, UNTRAINED = REFERENCE_COLUMNS

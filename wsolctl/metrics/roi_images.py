"""PxAP on the images that hold a region of interest, FP* on those that hold none: a ``wsolctl.metrics``
plugin (``roi-images``).

The survey's PxAP (:mod:`wsolctl.metrics.pixel`) pools the pixels of every test image, and scores
every image's map of its ground-truth class (``evaluation.cam_target``). On a cohort where some
images hold no region of interest (CAMELYON16's normal patches: empty masks), their maps add only
background pixels, so the pooled PxAP mixes two questions: *where* a map points inside an image with
a ROI, and *how hot* the maps of the ROI-free images are (their class's map, min-max normalised per
image like every CAM, spans [0, 1] on pure background). A model can improve on the first and lose
on the second; B-LOC, which selects by pooled PxAP, then prefers the epoch whose ROI-free maps are
coldest. This metric reports the two apart:

* ``pxap_roi_images``: PxAP (the same definition, eq. 16) over the pixels of the images whose mask
  has foreground only;
* ``fp_roi_free_images``: FP* (eq. 23) over the pixels of the images whose mask is empty, i.e. the
  mean of their map values (the area under FP(τ) over τ ∈ (0, 1]), in %.

Neither is in the survey; on a cohort where every image holds a ROI (GlaS) the first equals PxAP and
the second is NaN. Both come from one (background, foreground) histogram per image, kept in three
rows: background and foreground of an image with a ROI, background of an image without (the other
rows zero), so that sums over any resample of images split the same way.
"""
from __future__ import annotations

from wsolctl.metrics.base import Column, MeterContext, Metric, ReportTable

WITH_ROI = Column("pxap_roi_images", "PxAP, images with a ROI", tolerance=0.5)
ROI_FREE = Column("fp_roi_free_images", "FP*, ROI-free images", lower_is_better=True, tolerance=1.0)


class RoiImages(Metric):
    """PxAP over the images with a region of interest; FP* over the images without one."""

    description = "PxAP over the images whose mask has foreground; FP* (mean map value) over those whose mask is empty"
    columns = (WITH_ROI, ROI_FREE)
    tables = (ReportTable(WITH_ROI.name, "PxAP on the images with a region of interest",
                          "PxAP over the pixels of the test images whose mask has foreground only (%)"),
              ReportTable(ROI_FREE.name, "FP* on the images without a region of interest",
                          "FP* over the pixels of the test images whose mask is empty: their mean map value (%)"))
    survey_rank = 20
    resampling = "sums"

    @classmethod
    def meter(cls, context: MeterContext) -> "RoiImagesMeter":
        return RoiImagesMeter(context.localization.n_thresholds)

    @classmethod
    def resampled(cls, sums):
        return _columns(sums[cls.name])


class RoiImagesMeter:
    """Per-image histograms (:class:`~wsolctl.metrics.pixel.LocalizationMeter`) split by whether the
    image's mask has foreground. Its own meter, not the shared one's histograms: those are kept per
    image only when intervals are asked for, and the split needs them always (one more binning pass
    per test image, on an opt-in metric)."""

    def __init__(self, n_thresholds: int):
        from wsolctl.metrics.pixel import LocalizationMeter

        self._meter = LocalizationMeter(n_thresholds, per_image=True)

    def update(self, maps, masks, images=None, targets=None) -> None:
        self._meter.update(maps, masks)

    def per_image(self):
        """(N, 3, n + 2) int64: an image's background and foreground histograms in rows 0 and 1 if its
        mask has foreground, else its background histogram in row 2."""
        import numpy as np

        hist = self._meter.per_image()
        has_roi = hist[:, 1].sum(-1) > 0
        out = np.zeros((len(hist), 3, hist.shape[-1]), np.int64)
        out[has_roi, :2] = hist[has_roi]
        out[~has_roi, 2] = hist[~has_roi, 0]
        return out

    def compute(self) -> dict[str, float]:
        return {name: float(value[0]) for name, value in _columns(self.per_image().sum(0)[None]).items()}


def _columns(split):
    """Both columns, ``(B,)`` each, from split histograms summed over images ``(B, 3, n + 2)``."""
    import numpy as np

    from wsolctl.metrics.pixel import localization_columns

    n_thresholds = split.shape[-1] - 2
    with_roi = localization_columns(split[:, :2], n_thresholds)
    roi_free = localization_columns(np.stack([split[:, 2], np.zeros_like(split[:, 2])], axis=1), n_thresholds)
    return {WITH_ROI.name: with_roi["pxap"], ROI_FREE.name: roi_free["fp"]}

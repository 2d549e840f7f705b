"""MaxBoxAccV2, a ``wsolctl.metrics`` plugin (``maxboxacc-v2``).

**MaxBoxAccV2** (Choe et al., CVPR 2020, §4.1; wsolevaluation ``BoxEvaluator`` with
``multi_contour_eval=True``). For an image and a threshold τ, the map is quantised as
``s8 = uint8(255·s)`` (truncation) and binarised as ``s8 > int(τ·max(s8))`` (so τ is relative to
the map's maximum, as in ``cv2.threshold`` there). Every contour of the binary map gives a
candidate box: cv2's ``findContours(RETR_TREE)`` finds one outer contour per 8-connected
foreground component and one hole contour per 4-connected background component enclosed by
foreground; a hole contour runs over the foreground pixels around the hole, i.e. the hole's
extent grown by one pixel. A contour with pixel extent ``[x0, x1]`` becomes ``cv2.boundingRect``'s
``(x0, x0 + w)`` with ``w = x1 − x0 + 1``, clipped to ``W − 1`` (wsolevaluation's convention: one
pixel wider than the extent unless clipped); no contour gives the box ``(0, 0, 0, 0)``. IoU counts
inclusive pixels, ``(x1 − x0 + 1)·(y1 − y0 + 1)``. The image is correct at (τ, δ) when the best IoU
of any candidate box with any ground-truth box is ≥ δ. ``BoxAcc(τ, δ)`` = % of images correct,
``MaxBoxAcc(δ) = max_τ BoxAcc(τ, δ)`` (one τ per split, chosen on the scored split itself, as in
wsolevaluation), ``MaxBoxAccV2`` = mean over δ ∈ {30, 50, 70} %. Deviations:

* Ground-truth boxes come from the masks (histology has no box annotations): one box per
  8-connected mask component, built exactly like a predicted outer-contour box. So a map equal to
  the mask reproduces the ground-truth boxes and scores 100.
* Only images whose mask has foreground count (negative images have no box to find).
* Contours come from connected-component labelling (scipy.ndimage), not from cv2's border
  following; on the contour definition above the boxes are identical (checked against OpenCV in
  the tests when it is installed).
* The τ grid has ``n_thresholds`` values ``np.arange(0, 1, 1/n)``; default 100, the step 0.01 of
  wsolevaluation's standalone ``evaluation.py``, for speed: each distinct level ``int(τ·max(s8))``
  costs a labelling pass. Its training-time default, step 0.001, reaches all 256 levels of ``s8``;
  100 thresholds visit 100 of them, so MaxBoxAcc(δ) can only be lower or equal (when the best
  level is skipped). On 20 random CAM-like maps: 15.0 with 100 thresholds, 16.7 with 1000.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy import ndimage

from wsolctl._lazy import torch
from wsolctl.metrics.base import Column, MeterContext, Metric, NoParams, ReportTable
from wsolctl.plugins import name_of

__all__ = ["MaxBoxAccV2", "MaxBoxAccV2Meter", "contour_boxes", "mask_boxes", "box_iou"]

IOU_THRESHOLDS = (30, 50, 70)  # δ in %, wsolevaluation's V2
# Labelling structures acting inside each (H, W) slice of a (T, H, W) stack only.
_EIGHT = np.zeros((3, 3, 3), dtype=bool)
_EIGHT[1] = True
_FOUR = np.zeros((3, 3, 3), dtype=bool)
_FOUR[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


class MaxBoxAccV2(Metric):
    """wsolevaluation's MaxBoxAccV2 on boxes of the mask's components."""

    description = "MaxBoxAccV2: % of images whose best contour box has IoU ≥ δ, mean over δ = 30, 50, 70 %"
    columns = (Column("maxboxacc_v2", "MaxBoxAccV2"),
               *(Column(f"maxboxacc_v2_iou{d}", "") for d in IOU_THRESHOLDS))
    tables = (ReportTable("maxboxacc_v2", "MaxBoxAccV2",
                          "wsolevaluation's MaxBoxAccV2: % of images with foreground whose best contour box has "
                          "IoU ≥ δ with a ground-truth box (boxes of the mask's components), best threshold, mean "
                          "over δ = 30, 50, 70 %"),)
    survey_rank = 20
    legacy_settings = {"box_thresholds": "thresholds"}

    class Params(NoParams):
        thresholds: int = Field(100, ge=2, le=1000, description="threshold grid (wsolevaluation CLI: 100)")

    resampling = "sums"

    @classmethod
    def resampled(cls, sums):
        """From per-image ``[counted, correct(δ, τ)...]`` summed: the best τ per δ of the resample."""
        stats = sums[name_of(cls)]
        count = stats[..., 0]
        correct = stats[..., 1:].reshape(*stats.shape[:-1], len(IOU_THRESHOLDS), -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_delta = 100.0 * correct.max(axis=-1) / count[..., None]
        return {"maxboxacc_v2": per_delta.mean(axis=-1),
                **{f"maxboxacc_v2_iou{d}": per_delta[..., i] for i, d in enumerate(IOU_THRESHOLDS)}}

    @classmethod
    def meter(cls, context: MeterContext) -> "MaxBoxAccV2Meter":
        return MaxBoxAccV2Meter(context.params.thresholds)


def _cv2_box(lo: np.ndarray, hi: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2.boundingRect of a pixel extent [lo, hi] as wsolevaluation uses it: (x, min(x + w, limit))."""
    return lo, np.minimum(hi + 1, limit)


def _boxes_from_slices(slices: list, offset: int, grow: int, height: int, width: int):
    """(slice index, boxes x0 y0 x1 y1) of ndimage.find_objects slices (None entries skipped);
    ``offset`` undoes padding, ``grow`` widens each extent (hole contours)."""
    found = [s for s in slices if s is not None]
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.int64)
    ext = np.array([[s[0].start, s[1].start, s[1].stop - 1, s[2].start, s[2].stop - 1] for s in found])
    y0, y1 = ext[:, 1] - offset - grow, ext[:, 2] - offset + grow
    x0, x1 = ext[:, 3] - offset - grow, ext[:, 4] - offset + grow
    x0, x1 = _cv2_box(x0, x1, width - 1)
    y0, y1 = _cv2_box(y0, y1, height - 1)
    return ext[:, 0], np.stack([x0, y0, x1, y1], axis=1)


def contour_boxes(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of every contour (``findContours(RETR_TREE)``) of each slice of a (T, H, W) bool stack:
    ``(slice index (K,), boxes (K, 4) x0 y0 x1 y1)`` in wsolevaluation's box convention."""
    _, height, width = binary.shape
    labels, _ = ndimage.label(binary, _EIGHT)
    outer = _boxes_from_slices(ndimage.find_objects(labels), 0, 0, height, width)
    # Holes: background components (4-connected) that do not reach the frame of a padded copy.
    background, _ = ndimage.label(np.pad(~binary, ((0, 0), (1, 1), (1, 1)), constant_values=True), _FOUR)
    slices = ndimage.find_objects(background)
    for label in np.unique(background[:, 0, 0]):
        slices[label - 1] = None
    holes = _boxes_from_slices(slices, 1, 1, height, width)
    return np.concatenate([outer[0], holes[0]]), np.concatenate([outer[1], holes[1]])


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """Ground-truth boxes of a (H, W) bool mask: one per 8-connected component, (G, 4)."""
    labels, _ = ndimage.label(mask[None], _EIGHT)
    return _boxes_from_slices(ndimage.find_objects(labels), 0, 0, *mask.shape)[1]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, G) IoU of x0 y0 x1 y1 boxes counting inclusive pixels (wsolevaluation)."""
    a, b = a[:, None, :], b[None, :, :]
    inter = (np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
             * np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1))
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    return inter / (area_a + area_b - inter)


class MaxBoxAccV2Meter:
    """Streamed MaxBoxAccV2: per (τ, δ) counts of correct images; state size independent of N."""

    def __init__(self, n_thresholds: int = 100, iou_thresholds: tuple[int, ...] = IOU_THRESHOLDS):
        self.thresholds = np.arange(0, 1, 1 / n_thresholds)[:n_thresholds]
        self.iou_thresholds = tuple(iou_thresholds)
        self._correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)), dtype=np.int64)
        self._count = 0
        self._per_image: list[np.ndarray] = []  # [counted, correct (δ, τ) flattened] per image

    def update(self, maps, masks, images=None, targets=None) -> None:
        maps = maps.detach().cpu().double().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, float)
        masks = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        empty = np.zeros(1 + self._correct.size, dtype=np.int64)
        for score, mask in zip(maps, masks != 0):
            if not mask.any():
                self._per_image.append(empty)
                continue
            best = self.best_iou_per_threshold(score, mask_boxes(mask))
            correct = best[None, :] >= np.array(self.iou_thresholds)[:, None] / 100
            self._correct += correct
            self._count += 1
            self._per_image.append(np.concatenate([[1], correct.ravel()]).astype(np.int64))

    def per_image(self) -> np.ndarray:
        """(N, 1 + δ·τ): 1 if the image counts (has foreground), then whether it is correct at each
        (δ, τ); they add up to the meter's state."""
        return np.stack(self._per_image) if self._per_image else np.zeros((0, 1 + self._correct.size), np.int64)

    def best_iou_per_threshold(self, score: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
        """(T,) best IoU of any contour box with any ground-truth box, per threshold."""
        s8 = (score * 255).astype(np.uint8)
        levels = (self.thresholds * s8.max()).astype(np.int64)  # int(τ·max), truncation
        distinct, index = np.unique(levels, return_inverse=True)
        which, boxes = contour_boxes(s8[None] > distinct[:, None, None])
        best = np.full(len(distinct), box_iou(np.zeros((1, 4), dtype=np.int64), gt_boxes).max())  # no contour
        if len(which):
            found = np.full(len(distinct), -1.0)
            np.maximum.at(found, which, box_iou(boxes, gt_boxes).max(axis=1))
            best = np.where(found >= 0, found, best)
        return best[index]

    def compute(self) -> dict[str, float]:
        if self._count == 0:
            per_delta = [float("nan")] * len(self.iou_thresholds)
        else:
            per_delta = [float(100.0 * row.max() / self._count) for row in self._correct]
        out = {f"maxboxacc_v2_iou{d}": v for d, v in zip(self.iou_thresholds, per_delta)}
        return {"maxboxacc_v2": float(np.mean(per_delta)), **out}


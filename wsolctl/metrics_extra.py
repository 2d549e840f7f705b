"""Localization metrics beyond PxAP: MaxBoxAccV2, the pointing game, deletion / insertion AUC.

Every meter streams over a split like :class:`wsolctl.metrics.LocalizationMeter`: ``update`` takes
one batch of score maps already prepared for scoring (``(N, H, W)`` in [0, 1], e.g. from
:func:`wsolctl.metrics.prepare_cams`), the ground-truth masks and the images with their target
classes; ``compute`` returns a dict of result columns in %. No meter keeps the maps of a split.
Foreground Dice and IoU at τ* come from ``LocalizationMeter`` (``dice_fg``, ``iou_fg``).

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

**Pointing game** (Zhang et al., ECCV 2016, "Top-down neural attention by excitation backprop"):
a hit when the map's maximum lies in the ground-truth mask; the score is the % of hits over images
whose mask has foreground. Ties: when several pixels share the maximum, the image counts
``|argmax ∩ mask| / |argmax|`` (the expected hit under a uniformly random choice of the maximum);
so a constant map scores that image's ROI fraction. No tolerance margin (TorchRay uses 15 px).

**Deletion / insertion** (Petsiuk et al., BMVC 2018, RISE, §4.1, and its ``CausalMetric`` code).
Pixels are ranked by the map (descending; ties in row-major order), at the map's resolution (the
input's; bilinear resize otherwise). For ``k`` steps, at fraction ``f_j = j/k`` (j = 0..k) the top
``round(f_j·H·W)`` pixels are removed (deletion: replaced by the substrate) or added (insertion:
copied onto the substrate), and ``p_j`` = softmax probability of the target class. The image's AUC
is the trapezoid area under ``p_j`` over ``f_j ∈ [0, 1]`` (RISE's ``auc``); the score is the mean
over all images (with or without foreground: the map explains the target class), in %. Lower
deletion and higher insertion mean a more faithful map. Substrates as in RISE: deletion uses zeros
of the normalised input (the per-channel dataset mean colour), insertion starts from the image
blurred with a Gaussian of size 11 and σ 5. The ``N·(k+1)`` perturbed images are built and scored
in chunks of ``batch_size``: ``k + 1`` forward passes per image and metric. Deviations from RISE's
code:

* ``k`` equal steps instead of a fixed number of pixels per step (RISE: 224 per step at 224², i.e.
  k = 224; wsolctl's default k = 16 keeps the cost at 17 forwards per image and metric).
* The class is the evaluation's target (``evaluation.cam_target``: ground truth by default, the
  class the map explains) rather than the top-1 prediction.
* The blur is torchvision's ``gaussian_blur`` (reflect padding). RISE filters a delta with
  ``scipy.ndimage.gaussian_filter`` in an 11×11 window as its kernel and convolves with zero
  padding, which also darkens the borders towards the mean colour.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["MapMeter", "MaxBoxAccV2Meter", "PointingGameMeter", "FaithfulnessMeter", "RoadMeter", "contour_boxes",
           "mask_boxes", "box_iou", "blurred", "linear_impute"]

IOU_THRESHOLDS = (30, 50, 70)  # δ in %, wsolevaluation's V2
# Labelling structures acting inside each (H, W) slice of a (T, H, W) stack only.
_EIGHT = np.zeros((3, 3, 3), dtype=bool)
_EIGHT[1] = True
_FOUR = np.zeros((3, 3, 3), dtype=bool)
_FOUR[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion substrate


class MapMeter(Protocol):
    """A streamed metric over a split."""

    def update(self, maps: torch.Tensor, masks: torch.Tensor, images: torch.Tensor,
               targets: torch.Tensor) -> None:
        """``maps`` (N, H, W) in [0, 1]; ``masks`` (N, H, W) bool; ``images`` (N, C, H', W') as fed
        to the model; ``targets`` (N,) the class each map explains."""

    def compute(self) -> dict[str, float]:
        """Result columns (in %) of everything seen so far; NaN where no image counted."""


# ----------------------------------------------------------------------------- MaxBoxAccV2
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

    def update(self, maps, masks, images=None, targets=None) -> None:
        maps = maps.detach().cpu().double().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, float)
        masks = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        for score, mask in zip(maps, masks != 0):
            if mask.any():
                best = self.best_iou_per_threshold(score, mask_boxes(mask))
                self._correct += best[None, :] >= np.array(self.iou_thresholds)[:, None] / 100
                self._count += 1

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


# ----------------------------------------------------------------------------- pointing game
class PointingGameMeter:
    """Streamed pointing game (ties at the maximum count fractionally, see the module docstring)."""

    def __init__(self):
        self._hits = 0.0
        self._count = 0

    def update(self, maps, masks, images=None, targets=None) -> None:
        maps, masks = torch.as_tensor(maps).detach(), torch.as_tensor(masks).detach().to(maps.device) != 0
        flat, fg = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
        at_max = flat == flat.amax(dim=1, keepdim=True)
        hit = (at_max & fg).sum(dim=1).double() / at_max.sum(dim=1).double()
        counted = fg.any(dim=1)
        self._hits += float(hit[counted].sum())
        self._count += int(counted.sum())

    def compute(self) -> dict[str, float]:
        return {"pointing_game": 100.0 * self._hits / self._count if self._count else float("nan")}


# ----------------------------------------------------------------------------- deletion / insertion
class FaithfulnessMeter:
    """RISE deletion (``mode="deletion"``) or insertion AUC of the maps for ``model``'s softmax
    probability of the target class (``model(x).logits``)."""

    def __init__(self, model: torch.nn.Module, mode: str, steps: int = 16, batch_size: int = 32):
        if mode not in ("deletion", "insertion"):
            raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
        if steps < 1 or batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        self.model, self.mode, self.steps, self.batch_size = model, mode, int(steps), int(batch_size)
        self._sum = 0.0
        self._count = 0

    def update(self, maps, masks, images, targets) -> None:
        images = images.detach()
        maps = torch.as_tensor(maps).detach().to(images.device).float()
        if maps.shape[-2:] != images.shape[-2:]:
            maps = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        self._sum += float(_trapezoid_auc(self.curves(maps, images, targets.to(images.device))).sum())
        self._count += len(images)

    def curves(self, maps: torch.Tensor, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N, k + 1) target-class probabilities at fractions j/k of the ranked pixels changed."""
        n, pixels = len(images), images.shape[-2] * images.shape[-1]
        order = torch.argsort(maps.reshape(n, -1), dim=1, descending=True, stable=True)
        rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=order.device).expand(n, -1))
        rank = rank.view(n, 1, *images.shape[-2:])
        changed = torch.round(torch.arange(self.steps + 1, device=images.device) * pixels / self.steps).long()
        if self.mode == "deletion":  # start: the image; the top pixels turn into the mean colour
            start, end = images, torch.zeros_like(images)
        else:  # start: the blurred image; the top pixels are put back
            start, end = blurred(images), images
        pairs = torch.cartesian_prod(torch.arange(n, device=images.device), torch.arange(self.steps + 1, device=images.device))
        probs = torch.empty(len(pairs), device=images.device)
        with torch.no_grad():
            for lo in range(0, len(pairs), self.batch_size):
                i, j = pairs[lo:lo + self.batch_size].unbind(1)
                x = torch.where(rank[i] < changed[j].view(-1, 1, 1, 1), end[i], start[i])
                probs[lo:lo + len(i)] = self.model(x).logits.float().softmax(dim=1)[torch.arange(len(i)), targets[i]]
        return probs.view(n, self.steps + 1).cpu().double()

    def compute(self) -> dict[str, float]:
        return {f"{self.mode}_auc": 100.0 * self._sum / self._count if self._count else float("nan")}


def blurred(images: torch.Tensor) -> torch.Tensor:
    """RISE's insertion start: Gaussian blur, kernel 11 and σ 5 (reflect padding; the kernel shrinks
    to the largest odd size the padding allows on images under 6 pixels)."""
    from torchvision.transforms.v2.functional import gaussian_blur

    kernel = min(BLUR_KERNEL, 2 * min(images.shape[-2:]) - 1)
    return gaussian_blur(images, [kernel] * 2, [BLUR_SIGMA] * 2)


def _trapezoid_auc(curves: torch.Tensor) -> torch.Tensor:
    """Per-row trapezoid area of values at equally spaced fractions 0, 1/k, …, 1."""
    return (curves[:, 1:] + curves[:, :-1]).sum(dim=1) / (2 * (curves.shape[1] - 1))


# ----------------------------------------------------------------------------- ROAD
# Noisy linear imputation (Rong et al., ICML 2022, §4): each removed pixel is the weighted mean of
# its 8 neighbours (edge neighbours 1/6, corner neighbours 1/12, normalised over the neighbours
# inside the image), solved jointly for all removed pixels, plus Gaussian noise of this std (in
# the model's input units).
ROAD_NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6),
                   (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))
ROAD_NOISE = 0.01


def linear_impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``image`` (C, H, W) with the ``removed`` (H, W) pixels replaced by the solution of
    ``Σ_j w_ij (x_j − x_i) = 0`` over each removed pixel's neighbours j inside the image (no noise)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    channels, height, width = image.shape
    flat = image.reshape(channels, -1).astype(np.float64)
    unknown = np.flatnonzero(removed.ravel())
    if not len(unknown):
        return image.copy()
    index = np.full(height * width, -1)
    index[unknown] = np.arange(len(unknown))
    ys, xs = np.divmod(unknown, width)
    rows, cols, vals = [], [], []
    diagonal = np.zeros(len(unknown))
    rhs = np.zeros((len(unknown), channels))
    for dy, dx, weight in ROAD_NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        me, neighbour = np.flatnonzero(inside), (ny * width + nx)[inside]
        diagonal[me] += weight
        known = index[neighbour] < 0
        rhs[me[known]] += weight * flat[:, neighbour[known]].T
        rows.append(me[~known])
        cols.append(index[neighbour[~known]])
        vals.append(np.full((~known).sum(), -weight))
    rows.append(np.arange(len(unknown)))
    cols.append(np.arange(len(unknown)))
    vals.append(diagonal)
    system = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                        shape=(len(unknown), len(unknown))).tocsc()
    solution = spsolve(system, rhs).reshape(len(unknown), channels)
    out = flat.copy()
    out[:, unknown] = solution.T
    return out.reshape(image.shape).astype(image.dtype)


def road_removed(cam: np.ndarray, percentile: float, order: str) -> np.ndarray:
    """The pixels ROAD imputes at ``percentile`` (pytorch-grad-cam's convention): MoRF those at or
    above the map's percentile (the top ≈ 100 − p %), LeRF those of ``1 − map`` at or above its
    percentile (the bottom ≈ 100 − p %)."""
    values = cam if order == "morf" else 1 - cam
    return values >= np.percentile(values, percentile)


class RoadMeter:
    """ROAD (Rong et al., ICML 2022, "A consistent and efficient evaluation strategy for attribution
    methods"), MoRF and LeRF, as pytorch-grad-cam's ``ROADMostRelevantFirstAverage`` /
    ``ROADLeastRelevantFirstAverage`` / ``ROADCombined``: for each percentile p the removed pixels are
    imputed (noisy linear imputation) and the change of the target class's softmax probability from
    the intact image is recorded; each image's score is the mean over percentiles, the split's the
    mean over images, in % (points of probability). Lower ``road_morf`` (a larger drop when the most
    relevant pixels go) and higher ``road_lerf`` mean a more faithful map; ``road_combined`` =
    (LeRF − MoRF) / 2. The maps are the scored maps resized to the input (bilinear), as float32.
    The imputation runs on the CPU (scipy sparse solve, one per image and percentile and order); the
    ``2·len(percentiles) + 1`` forward passes per image are batched in chunks of ``batch_size``. The
    noise is drawn from a generator seeded with ``seed`` (pytorch-grad-cam uses torch's global one)."""

    def __init__(self, model: torch.nn.Module, percentiles=(10, 20, 30, 40, 50, 60, 70, 80, 90),
                 batch_size: int = 32, noise: float = ROAD_NOISE, seed: int = 0):
        self.model, self.percentiles, self.batch_size, self.noise = model, tuple(percentiles), int(batch_size), noise
        self.generator = torch.Generator().manual_seed(seed)
        self._sums = {"morf": 0.0, "lerf": 0.0}
        self._count = 0

    def imputed(self, image: torch.Tensor, cam: np.ndarray, percentile: float, order: str) -> torch.Tensor:
        """One image (C, H, W) after ROAD's imputation at ``percentile`` (``order``: morf or lerf)."""
        removed = road_removed(cam, percentile, order)
        filled = torch.from_numpy(linear_impute(image.cpu().numpy(), removed))
        noise = self.noise * torch.randn(filled.shape, generator=self.generator)
        return torch.where(torch.from_numpy(removed), filled + noise, filled).to(image.device, image.dtype)

    def update(self, maps, masks, images, targets) -> None:
        images = images.detach()
        maps = torch.as_tensor(maps).detach().to(images.device).float()
        if maps.shape[-2:] != images.shape[-2:]:
            maps = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        cams = maps.cpu().numpy()
        jobs = [(i, order, p) for i in range(len(images)) for order in ("morf", "lerf") for p in self.percentiles]
        before = self._probabilities(images, targets)
        after = torch.empty(len(jobs), dtype=torch.float64)
        for lo in range(0, len(jobs), self.batch_size):
            chunk = jobs[lo:lo + self.batch_size]
            batch = torch.stack([self.imputed(images[i], cams[i], p, order) for i, order, p in chunk])
            after[lo:lo + len(chunk)] = self._probabilities(batch, targets[[i for i, _, _ in chunk]])
        change = (after.view(len(images), 2, len(self.percentiles)) - before.view(-1, 1, 1)).mean(dim=2)
        self._sums["morf"] += float(change[:, 0].sum())
        self._sums["lerf"] += float(change[:, 1].sum())
        self._count += len(images)

    def _probabilities(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(images).logits.float()
        return logits.softmax(dim=1)[torch.arange(len(images)), targets.to(logits.device)].double().cpu()

    def compute(self) -> dict[str, float]:
        if not self._count:
            return {"road_morf": float("nan"), "road_lerf": float("nan"), "road_combined": float("nan")}
        morf, lerf = (100.0 * self._sums[k] / self._count for k in ("morf", "lerf"))
        return {"road_morf": morf, "road_lerf": lerf, "road_combined": (lerf - morf) / 2}

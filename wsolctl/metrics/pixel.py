"""Pixel-level localization metrics: PxAP and the threshold-marginalised confusion matrix.

Definitions follow wsolevaluation's ``MaskEvaluator`` (Choe et al., CVPR 2020) and the histology
survey (Rony et al., MELBA 2023, eqs. 13-24):

* Threshold grid ``τ_l = np.arange(0, 1, 1/n)`` (``n = 1000`` → step 0.001). Histogram edges are the
  grid plus ``[1, 2, 3]``, i.e. ``n + 2`` bins with ``np.histogram`` semantics (``[e_k, e_k+1)``, the
  last bin closed). The scores on ground-truth foreground and background pixels are histogrammed
  and **summed over the whole split** (pixel micro-average, no per-image averaging).
* PxAP = 100·Σ precision_i·(recall_i − recall_{i−1}) over descending thresholds ``≥ 2, ≥ 1, ≥ 0.999,
  …, ≥ 0``; steps with no predicted pixel (precision 0/0) are skipped; no interpolation.
* Per threshold (eqs. 17-20): ``TP(τ) = |s ≥ τ ∧ fg| / |fg|``, ``FN = 1 − TP``,
  ``FP(τ) = |s ≥ τ ∧ bg| / |bg|``, ``TN = 1 − FP``. Marginalised (eqs. 21-24):
  ``TP* = 100·Σ_l TP(τ_l)·(τ_l − τ_{l−1})`` over ``τ_l = l/n``, ``l = 1 .. n``, i.e. the window
  ``τ ∈ (0, 1]`` (0.001 … 1.0), so ``TP* + FN* = FP* + TN* = 100``. This is the reference code's
  window (``MaskEvaluator._area`` sums ``v[1:idx_1 + 1]``, ``idx_1`` = the edge 1.0) and what the
  eqs. read literally (the first term needs ``τ_{l−1}``, so ``τ_0 = 0`` itself is not summed). The
  window one step lower, ``[0, 1)`` (this tool before issue 10), adds ``TP(0) = 1`` and drops
  ``TP(1)`` (the pixels at exactly 1): each area differs by ``100/n·(TP(0) − TP(1))``, at most
  ``100/n`` = 0.1. With this window a perfect binary map gets TP* = TN* = 100 exactly. Measured
  (2026-11-30) on ``recipes/ci-regression.yaml`` (CAM, Grad-CAM; B-LOC and B-CL): TP* −0.100 and FN*
  +0.100 exactly, FP* −0.0999…−0.100 and TN* the opposite (a few background pixels score exactly 1),
  PxAP, τ*, mIoU and Dice bit-identical; on the synthetic study's NEGEV / U-Net rows: ±0.100 exactly.
* Operating points: the reference code's ``n + 2`` ones, ``s ≥ τ`` for ``τ`` in the grid plus
  ``1`` and ``2`` (the histogram's lower edges); ``τ = 2`` predicts nothing on maps in [0, 1]. The
  curves (``LocalizationResult.curves``) hold one value per operating point, ascending.
  ``τ*`` = argmax over them of ``mIoU = ½(IoU_fg + IoU_bg)`` with ``IoU_fg = TP/(TP+FN+FP)`` and
  ``IoU_bg = TN/(TN+FN+FP)`` in pixel counts; ties go to the highest threshold, the same operating
  point the reference code picks (its ``np.argmax`` over the descending points takes the first,
  i.e. highest, of a tie; tested against a transcription of it, an anti-correlated map included,
  where "predict nothing" wins). ``τ*`` is reported as the real threshold value (2.0 for "predict
  nothing"); the survey's code reports it mirrored (ascending edges indexed with a descending
  index). Foreground Dice ``2TP/(2TP+FN+FP)`` and ``IoU_fg`` are reported at ``τ*``. Before issue 16
  the search left out ``τ = 1`` and ``τ = 2``, so a map that does best by predicting nothing (or only
  its pixels at exactly 1) got a worse operating point than the reference's.

Degenerate splits do not raise: without foreground pixels PxAP and the TP/FN components are NaN,
without background pixels the FP/TN components are NaN.

Speed: :meth:`LocalizationMeter.update` bins on the scores' own device with one ``bincount`` over
``bin + (n + 2)·is_fg``; its counts are identical to per-image ``np.histogram`` (see
:func:`_float32_quantisation_is_exact` for why the fast float32 path is exact).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LocalizationMeter", "LocalizationResult", "localization_columns", "prepare_cams", "prepare_masks"]

ArrayLike = Union[torch.Tensor, np.ndarray]

# Pixels binned per step. On CPU: scratch buffers (2 MiB float64 + 1 MiB int32) reused across
# chunks stay in cache, ~7x faster here than whole-batch temporaries. Elsewhere: a memory cap.
_CPU_CHUNK = 1 << 18
_DEVICE_CHUNK = 1 << 24
# Dtypes that convert exactly to float32 and so can take the quantisation fast path.
_FLOAT32_EXACT = (torch.float16, torch.bfloat16, torch.float32)


@dataclass(frozen=True, eq=False)
class LocalizationResult:
    """Localization scores of one split. Percentages unless noted."""

    pxap: float
    tp: float  # TP*, marginalised over the threshold grid
    fn: float  # FN*
    fp: float  # FP*
    tn: float  # TN*
    threshold: float  # τ*: the operating point (grid, 1 or 2 = predict nothing) with the best mIoU
    miou: float  # at τ*
    tp_at_threshold: float
    fn_at_threshold: float
    fp_at_threshold: float
    tn_at_threshold: float
    dice_fg: float  # at τ*
    dice_bg: float  # at τ*
    iou_fg: float  # at τ*: TP / (TP + FN + FP) in pixel counts
    # One value per grid threshold: 'threshold'; 'precision' and 'recall' as fractions
    # (precision NaN where nothing is predicted); 'tp', 'fn', 'fp', 'tn', 'miou', 'dice_fg',
    # 'dice_bg', 'iou_fg' in %.
    curves: dict[str, np.ndarray]

    def as_dict(self) -> dict[str, float]:
        """All scalar fields (everything but ``curves``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "curves"}


class LocalizationMeter:
    """Streaming PxAP / confusion-matrix meter over a split.

    The state is two int64 histograms of ``n_thresholds + 2`` bins (foreground, background):
    its size does not depend on the number of images, and meters (e.g. one per process) combine
    exactly with :meth:`merge` or by summing ``state_dict()['histogram']``. With ``per_image=True`` it
    also keeps each image's two histograms (:meth:`per_image`), the sufficient statistics of a
    bootstrap over images (their sum over any multiset of images is that multiset's state).
    """

    def __init__(self, n_thresholds: int = 1000, per_image: bool = False):
        if int(n_thresholds) < 1:
            raise ValueError(f"n_thresholds must be >= 1, got {n_thresholds}")
        self.n_thresholds = int(n_thresholds)
        # np.arange, as in wsolevaluation, so that edges are bit-identical to the reference; the
        # slice drops the extra value arange yields for some n (e.g. 49) through rounding.
        self.thresholds = np.arange(0, 1, 1 / self.n_thresholds)[: self.n_thresholds]
        self._edges = np.concatenate([self.thresholds, [1.0, 2.0, 3.0]])
        self._nbins = self.n_thresholds + 2
        self.operating_points = self._edges[: self._nbins]  # s ≥ τ: the grid, 1, 2 (predict nothing)
        self._fast = _float32_quantisation_is_exact(self._edges, self.n_thresholds)
        self._hist = torch.zeros(2, self._nbins, dtype=torch.int64)  # rows: background, foreground
        self._images: Optional[list[torch.Tensor]] = [] if per_image else None

    def reset(self) -> None:
        """Forget all accumulated pixels."""
        self._hist.zero_()
        if self._images is not None:
            self._images.clear()

    def per_image(self) -> np.ndarray:
        """(N, 2, n + 2) int64: each image's background / foreground histogram, in the order fed
        (needs ``per_image=True``)."""
        if self._images is None:
            raise RuntimeError("LocalizationMeter(per_image=True) keeps per-image histograms")
        return torch.cat(self._images).numpy() if self._images else np.zeros((0, 2, self._nbins), np.int64)

    def update(self, cams: ArrayLike, masks: ArrayLike) -> None:
        """Add a batch of score maps and their ground truth.

        ``cams``: (N, H, W) floating scores in [0, 1] (torch tensor on any device, or numpy), e.g.
        from :func:`prepare_cams`; any shape works as long as ``masks`` matches it. ``masks``:
        same shape, bool (any other dtype: non-zero = foreground). Raises ``ValueError`` on a shape
        mismatch or on scores outside [0, 1] (NaN included), like wsolevaluation's validity check.
        """
        scores, fg = _as_tensor(cams).detach(), _as_tensor(masks).detach()
        if scores.shape != fg.shape:
            raise ValueError(f"cams {tuple(scores.shape)} and masks {tuple(fg.shape)} differ in shape")
        if not scores.is_floating_point():
            raise TypeError(f"cams must be floating point, got {scores.dtype}")
        if scores.numel() == 0:
            return
        _check_unit_range(scores)
        scores = scores.reshape(-1)
        fg = fg.to(scores.device).reshape(-1)
        fg = fg if fg.dtype == torch.bool else fg != 0
        if self._images is None:
            self._hist += self._count(scores, fg).view(2, self._nbins).cpu()
            return
        images = len(cams)  # each image's pixels are contiguous
        counts = torch.stack([self._count(s, f) for s, f in zip(scores.view(images, -1), fg.view(images, -1))])
        counts = counts.view(images, 2, self._nbins).cpu()
        self._hist += counts.sum(dim=0)
        self._images.append(counts)

    def _count(self, scores: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
        """Joint histogram of (is_fg, bin) as a flat (2·nbins,) int64 tensor on the scores' device."""
        chunk = min(scores.numel(), _CPU_CHUNK if scores.device.type == "cpu" else _DEVICE_CHUNK)
        as_f64 = torch.empty(chunk, dtype=torch.float64, device=scores.device)
        index = torch.empty(chunk, dtype=torch.int32, device=scores.device)
        counts = torch.zeros(2 * self._nbins, dtype=torch.int64, device=scores.device)
        fast = self._fast and scores.dtype in _FLOAT32_EXACT
        edges = None if fast else torch.as_tensor(self._edges, device=scores.device)
        for start in range(0, scores.numel(), chunk):
            x, is_fg = scores[start:start + chunk], fg[start:start + chunk]
            x64, idx = as_f64[: x.numel()].copy_(x), index[: x.numel()]
            if fast:  # floor(x·n): exact product, exact bins (see _float32_quantisation_is_exact)
                idx.copy_(x64.mul_(self.n_thresholds))  # float → int truncates: floor for x ≥ 0
            else:  # float64 scores (or an inexact n): search the float64 edges as np.histogram does
                torch.bucketize(x64, edges, right=True, out_int32=True, out=idx).sub_(1)
            counts += torch.bincount(idx.add_(is_fg, alpha=self._nbins), minlength=2 * self._nbins)
        return counts

    def merge(self, other: "LocalizationMeter") -> None:
        """Add the pixels accumulated by ``other`` (same ``n_thresholds``) to this meter."""
        self._check_compatible(other.n_thresholds)
        self._hist += other._hist

    def state_dict(self) -> dict:
        """A copy of the state: ``{'n_thresholds': int, 'histogram': (2, n+2) int64 CPU tensor}``."""
        return {"n_thresholds": self.n_thresholds, "histogram": self._hist.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (same ``n_thresholds``)."""
        self._check_compatible(int(state["n_thresholds"]))
        self._hist.copy_(torch.as_tensor(state["histogram"], dtype=torch.int64))

    def _check_compatible(self, n_thresholds: int) -> None:
        if n_thresholds != self.n_thresholds:
            raise ValueError(f"n_thresholds differ: {n_thresholds} != {self.n_thresholds}")

    def compute(self) -> LocalizationResult:
        """Scores of all pixels seen since construction or the last :meth:`reset`."""
        bg, fg = self._hist.numpy()
        # Pixel counts with score >= edge k, k = 0 .. n+1, ascending thresholds.
        tp, fp = _at_or_above(fg), _at_or_above(bg)
        n_fg, n_bg = tp[0], fp[0]
        pxap = _average_precision(tp[::-1], fp[::-1], n_fg)
        areas = _areas(tp, fp, self.n_thresholds)
        fn, tn = n_fg - tp, n_bg - fp
        curves = _curves(self.operating_points, tp, fn, fp, tn)
        best = _best_index(curves["miou"])

        def at_best(name: str) -> float:
            return float("nan") if best is None else float(curves[name][best])

        return LocalizationResult(
            pxap=pxap, **areas,
            threshold=at_best("threshold"), miou=at_best("miou"),
            tp_at_threshold=at_best("tp"), fn_at_threshold=at_best("fn"),
            fp_at_threshold=at_best("fp"), tn_at_threshold=at_best("tn"),
            dice_fg=at_best("dice_fg"), dice_bg=at_best("dice_bg"), iou_fg=at_best("iou_fg"), curves=curves)


def localization_columns(histograms: np.ndarray, n_thresholds: int) -> dict[str, np.ndarray]:
    """Every scalar field of :class:`LocalizationResult` from summed (background, foreground)
    histograms ``(..., 2, n + 2)``, vectorised over the leading axes (e.g. bootstrap resamples).

    The same definitions as :meth:`LocalizationMeter.compute` (equal to ~1e-12: sums run in another
    order); that stays the reference path, bit-identical to the published numbers."""
    hist = np.asarray(histograms, dtype=np.float64)
    tp, fp = (np.flip(np.flip(hist[..., k, :], -1).cumsum(-1), -1) for k in (1, 0))
    n_fg, n_bg = tp[..., :1], fp[..., :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpd, fpd = tp[..., ::-1], fp[..., ::-1]  # descending thresholds
        predicted = tpd + fpd
        gain = tpd[..., 1:] / predicted[..., 1:] * np.diff(tpd / n_fg, axis=-1)
        pxap = 100.0 * np.where(predicted[..., 1:] > 0, gain, 0.0).sum(-1)
        window = slice(1, n_thresholds + 1)
        tp_area = 100 * tp[..., window].sum(-1) / (n_fg[..., 0] * n_thresholds)
        fp_area = 100 * fp[..., window].sum(-1) / (n_bg[..., 0] * n_thresholds)
    fn, tn = n_fg - tp, n_bg - fp
    with np.errstate(invalid="ignore", divide="ignore"):  # only mIoU over every threshold: it picks τ*
        miou = (tp / (tp + fn + fp) + tn / (tn + fn + fp)) / 2
    empty = np.isnan(miou).all(-1)
    best = (miou.shape[-1] - 1 - np.argmax(np.where(np.isnan(miou), -np.inf, miou)[..., ::-1], axis=-1))[..., None]
    edges = np.concatenate([np.arange(0, 1, 1 / n_thresholds)[:n_thresholds], [1.0, 2.0]])
    at = _curves(edges[best], *(np.take_along_axis(v, best, -1) for v in (tp, fn, fp, tn)))
    found = {k: np.where(empty, np.nan, v[..., 0]) for k, v in at.items()}
    return {"pxap": np.where(n_fg[..., 0] > 0, pxap, np.nan), "tp": tp_area, "fn": 100 - tp_area,
            "fp": fp_area, "tn": 100 - fp_area, "threshold": found["threshold"], "miou": found["miou"],
            **{f"{k}_at_threshold": found[k] for k in ("tp", "fn", "fp", "tn")},
            **{k: found[k] for k in ("dice_fg", "dice_bg", "iou_fg")}}


def _at_or_above(hist: np.ndarray) -> np.ndarray:
    """Reverse cumulative sum: number of pixels whose score is >= each lower bin edge."""
    return hist[::-1].cumsum()[::-1]


def _average_precision(tp: np.ndarray, fp: np.ndarray, n_fg: int) -> float:
    """wsolevaluation's PxAP from counts at descending thresholds (no interpolation), in %."""
    if n_fg == 0:
        return float("nan")
    predicted = tp + fp
    with np.errstate(invalid="ignore"):
        precision = tp / predicted
    recall = tp / n_fg
    steps = predicted[1:] > 0
    return float(100.0 * np.sum((precision[1:] * np.diff(recall))[steps]))


def _areas(tp: np.ndarray, fp: np.ndarray, n: int) -> dict[str, float]:
    """TP*/FN*/FP*/TN* in % (eqs. 21-24) from counts at or above each edge (ascending, ``n + 2``):
    the rates summed over the reference code's window ``τ = 1/n, 2/n, …, 1`` (edges 1..n) times the
    step ``1/n``. NaN for the fg (bg) pair when the split has no fg (bg) pixel."""
    window = slice(1, n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tp_area = 100 * tp[window].sum() / (tp[0] * n)
        fp_area = 100 * fp[window].sum() / (fp[0] * n)
    return {"tp": float(tp_area), "fn": float(100 - tp_area), "fp": float(fp_area), "tn": float(100 - fp_area)}


def _curves(thresholds: np.ndarray, tp, fn, fp, tn) -> dict[str, np.ndarray]:
    """Per-threshold curves from pixel counts; 0/0 gives NaN (e.g. FP/TN of a split without bg)."""
    tp, fn, fp, tn = (np.asarray(v, dtype=np.float64) for v in (tp, fn, fp, tn))
    with np.errstate(invalid="ignore", divide="ignore"):
        iou_fg, iou_bg = tp / (tp + fn + fp), tn / (tn + fn + fp)
        return {
            "threshold": thresholds.copy(),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "tp": 100 * tp / (tp + fn), "fn": 100 * fn / (tp + fn),
            "fp": 100 * fp / (fp + tn), "tn": 100 * tn / (fp + tn),
            "miou": 100 * (iou_fg + iou_bg) / 2,
            "dice_fg": 100 * 2 * tp / (2 * tp + fn + fp),
            "dice_bg": 100 * 2 * tn / (2 * tn + fn + fp),
            "iou_fg": 100 * iou_fg,
        }


def _best_index(miou: np.ndarray) -> int | None:
    """Index of the best mIoU, the highest threshold among ties; None if mIoU is NaN everywhere."""
    if np.all(np.isnan(miou)):
        return None
    return len(miou) - 1 - int(np.nanargmax(miou[::-1]))


def _float32_quantisation_is_exact(edges: np.ndarray, n: int) -> bool:
    """Whether ``floor(float64(x)·n)`` is the ``np.histogram`` bin of every float32 ``x`` in [0, 1].

    ``float64(x)·n`` is exact for n < 2**29 (24 + 29 significand bits ≤ 53), so the quantised value
    is ``floor(x·n)`` in real arithmetic. It and the histogram bin are both non-decreasing step
    functions of ``x`` with values 0..n, so they agree on every float32 iff they agree around each
    step of the histogram: for k = 1..n, the first float32 ``>= e_k`` must quantise to ``>= k`` and
    the float32 just below it to ``<= k - 1``. Checked exhaustively on those 2n values (holds for
    n = 1000 and 100; the meter falls back to an exact edge search when it does not).
    """
    if n >= 2**29:
        return False
    step_edges = edges[1:n + 1]  # e_1 .. e_n (= 1.0)
    first = step_edges.astype(np.float32)
    first = np.where(first < step_edges, np.nextafter(first, np.float32(np.inf)), first)
    below = np.nextafter(first, np.float32(-np.inf))
    k = np.arange(1, n + 1)
    return bool(np.all(np.floor(first.astype(np.float64) * n) >= k)
                and np.all(np.floor(below.astype(np.float64) * n) <= k - 1))


def _as_tensor(values: ArrayLike) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))


def _check_unit_range(scores: torch.Tensor) -> None:
    low, high = torch.aminmax(scores)  # NaN propagates and fails both comparisons
    if not (low.item() >= 0 and high.item() <= 1):
        raise ValueError(f"cams must lie in [0, 1] without NaN, got min {low.item()}, max {high.item()}")


def prepare_cams(cams: ArrayLike, size: tuple[int, int],
                 kind: Literal["cam", "probability"] = "cam") -> torch.Tensor:
    """Score maps as the survey evaluates them, by kind of map, then bilinear resize.

    ``cams``: (N, h, w). ``kind="cam"`` (CAM-type activations, any scale): each map is min-max
    normalised at its native resolution; a map whose normalisation is undefined becomes all zeros:
    a constant map, and any map containing NaN (min and max propagate NaN, as wsolevaluation's
    ``np.isnan(cam).any()`` → zeros and the survey's ``nan_to_num``) or ±inf.
    ``kind="probability"`` (foreground probabilities, e.g. NEGEV, U-Net): kept as they are, as the
    survey's reference code does (``CAMComputer.normalizecam`` returns them unchanged); only NaN → 0,
    +inf → 1 and a clamp to [0, 1]. The two differ in PxAP because PxAP pools the pixels of all
    images under shared thresholds: min-max stretches a normal image's near-zero probabilities up
    to 1. Then bilinear (``align_corners=False``) resize to ``size`` = (H, W).
    Returns (N, H, W) float32 in [0, 1] on the input's device.
    """
    maps = _as_tensor(cams).detach().float()
    if kind == "cam":
        flat = maps.reshape(maps.shape[0], -1)
        low, high = flat.amin(dim=1, keepdim=True), flat.amax(dim=1, keepdim=True)
        scaled = torch.nan_to_num((flat - low) / (high - low), nan=0.0, posinf=0.0, neginf=0.0)
    elif kind == "probability":
        scaled = torch.nan_to_num(maps, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    else:
        raise ValueError(f"kind must be 'cam' or 'probability', got {kind!r}")
    resized = F.interpolate(scaled.view(maps.shape).unsqueeze(1), size=tuple(size), mode="bilinear",
                            align_corners=False).squeeze(1)
    # Bilinear weights sum to 1 only up to float32 rounding; keep the meter's [0, 1] contract.
    return resized.clamp_(0.0, 1.0)


def prepare_masks(masks: ArrayLike, size: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) masks (bool or integer; non-zero = foreground), nearest-resized to ``size``, as bool."""
    fg = (_as_tensor(masks) != 0).to(torch.uint8).unsqueeze(1)
    return F.interpolate(fg, size=tuple(size), mode="nearest").squeeze(1).bool()

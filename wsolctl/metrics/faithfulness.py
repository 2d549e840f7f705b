"""Deletion and insertion AUC, two ``wsolctl.metrics`` plugins (``deletion``, ``insertion``).

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

from pydantic import Field

from wsolctl._lazy import F, torch
from wsolctl.metrics.base import Column, MeterContext, Metric, NoParams, ReportTable

__all__ = ["Deletion", "Insertion", "FaithfulnessMeter", "blurred"]

BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion substrate


class Deletion(Metric):
    """RISE deletion AUC (lower is better)."""

    mode = "deletion"  # of FaithfulnessMeter
    description = "RISE deletion AUC: target-class probability as the top pixels turn into the mean colour"
    columns = (Column("deletion_auc", "deletion AUC", lower_is_better=True),)
    forward_passes = True
    resampling = "values"
    tables = (ReportTable("deletion_auc", "Deletion AUC",
                          "RISE deletion: area under the target-class probability as the top-ranked pixels are "
                          "replaced by the mean colour (%); lower is better"),)
    survey_rank = 40
    legacy_settings = {"faithfulness_steps": "steps"}  # and Insertion's

    class Params(NoParams):
        steps: int = Field(16, ge=1, le=1024, description="steps k (RISE); k + 1 forward passes per image")

    @classmethod
    def meter(cls, context: MeterContext) -> "FaithfulnessMeter":
        return FaithfulnessMeter(context.model, cls.mode, context.params.steps, context.settings.batch_size)


class Insertion(Deletion):
    """RISE insertion AUC (higher is better)."""

    mode = "insertion"
    description = "RISE insertion AUC: target-class probability as the top pixels return onto a blurred image"
    columns = (Column("insertion_auc", "insertion AUC"),)
    tables = (ReportTable("insertion_auc", "Insertion AUC",
                          "RISE insertion: area under the target-class probability as the top-ranked pixels are "
                          "put back onto a blurred image (%); higher is better"),)
    survey_rank = 50


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
        self._per_image: list = []

    def update(self, maps, masks, images, targets) -> None:
        images = images.detach()
        maps = torch.as_tensor(maps).detach().to(images.device).float()
        if maps.shape[-2:] != images.shape[-2:]:
            maps = F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        auc = _trapezoid_auc(self.curves(maps, images, targets.to(images.device)))
        self._sum += float(auc.sum())
        self._count += len(images)
        self._per_image.append(100.0 * auc)

    def per_image(self):
        """(N, 1): each image's AUC in %."""
        return torch.cat(self._per_image).numpy()[:, None] if self._per_image else torch.zeros(0, 1).numpy()

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


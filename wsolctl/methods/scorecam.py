"""Confidence-based top-down methods (no gradients). A = activations of the target layer (Captum
LayerActivation), M_k = min-max(bilinear-upsample(A_k)) to the input size (Captum
LayerAttribution.interpolate), y(x) = target logit, map = ReLU(Σ_k w_k A_k).

- Score-CAM (Wang et al., 2020): w = softmax_k(y(X ⊙ M_k)).
- SS-CAM (Wang, Naidu et al., 2020): w = softmax_k((1/n) Σ_j y(X ⊙ (M_k + ε_j))), ε_j ~ N(0, σ²) per
  pixel (noise on the masks, the paper's first variant). ε_j is shared by the channels of an image
  (common random numbers), which lowers the variance of the channel comparison.
- IS-CAM (Naidu et al., 2020): w = softmax_k(Σ_{j=1..n} y(X ⊙ (j/n)·M_k)) (accumulated, as torchcam).
- Ablation-CAM (Desai and Ramaswamy, 2020): w_k = (y − y_k) / y, y_k = logit with channel k set to 0
  (Captum LayerFeatureAblation); w = 0 where y = 0.

Cost: one forward per distinct mask of an image (× n for SS-/IS-CAM). Upsampling is linear and keeps
constants, and min-max removes scale and offset, so two channels whose layer-resolution maps are equal
after min-max have equal masks and equal scores: each such pattern is scored once per image (exact,
not an approximation). Constant channels all give the zero pattern (M_k = 0, as pytorch-grad-cam's
eps-guarded division gives); post-ReLU channels with a single non-zero position give one-hot patterns.
At ResNet-50's layer4 on 64-px inputs (2×2 maps) that leaves 56% of the (image, channel) pairs to
score. The masked images of several images are batched together, built per chunk under
``torch.inference_mode`` and passed in channels-last layout, so no forward sees more than
``chunk_size`` images (memory bound).
For Ablation-CAM, channels that are zero in every image of the batch are ablated as one group (exact:
zeroing a zero channel changes nothing, so their weight is 0).
"""
from __future__ import annotations

from pydantic import Field

from wsolctl._lazy import torch
from wsolctl.methods.topdown import LayerParams, TopDownMethod, activations, safe_div, upsample, weighted_sum


class ScoreParams(LayerParams):
    chunk_size: int = Field(32, ge=1, description="max masked images per forward (memory bound)")


class SSCAMParams(ScoreParams):
    n: int = Field(35, ge=1, description="noise samples per mask (paper / torchcam: 35)")
    sigma: float = Field(2.0, ge=0, description="std of the Gaussian noise added to the [0, 1] masks (paper / torchcam: 2)")


class ISCAMParams(ScoreParams):
    n: int = Field(10, ge=1, description="integration steps (torchcam: 10)")


def minmax_rows(flat: "torch.Tensor") -> "torch.Tensor":
    """Min-max of each row of (..., L) to [0, 1]; 0 for a constant row."""
    low, high = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    return safe_div(flat - low, (high - low).expand_as(flat))


def channel_masks(a: "torch.Tensor", size) -> "torch.Tensor":
    """(B, h, w) activations → (B, 1, H, W) bilinear-upsampled, min-maxed masks (0 for a constant one)."""
    up = upsample(a[:, None], size)
    return minmax_rows(up.flatten(1)).view_as(up)


def channels_last(x: "torch.Tensor") -> "torch.Tensor":
    """NHWC layout: oneDNN/cuDNN convolutions run faster on it for these many-image batches (measured
    in benchmarks/README.md); the values are the same."""
    return x.contiguous(memory_format=torch.channels_last)


def distinct_patterns(a: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """(N, C, h, w) activations → (patterns (J, h, w), their image (J,), index (N, C) into patterns):
    the distinct min-maxed layer maps of each image, which determine the Score-CAM masks."""
    n, c, h, w = a.shape
    rows = minmax_rows(a.flatten(2))
    patterns, owner, index, offset = [], [], [], 0
    for i in range(n):
        unique, inverse = torch.unique(rows[i], dim=0, return_inverse=True)
        patterns.append(unique)
        owner.append(torch.full((len(unique),), i, dtype=torch.long, device=a.device))
        index.append(inverse + offset)
        offset += len(unique)
    return torch.cat(patterns).view(-1, h, w), torch.cat(owner), torch.stack(index)


class ScoreCAM(TopDownMethod):
    survey_rank = 6
    Params = ScoreParams

    def transforms(self, images):
        """[(f_j, weight_j)]: the score of channel k is Σ_j weight_j · y(X ⊙ f_j(M_k, image index))."""
        return [(lambda m, idx: m, 1.0)]

    def compute(self, forward_func, layers, images, targets):
        a = activations(forward_func, layers[0], images)
        patterns, img, index = distinct_patterns(a)
        steps = self.transforms(images)
        size, chunk = images.shape[-2:], self.params.chunk_size
        scores = []
        with torch.inference_mode():
            for start in range(0, len(img), chunk):
                i = img[start:start + chunk]
                masks = channel_masks(patterns[start:start + chunk], size)
                x, rows = images[i], torch.arange(len(i), device=i.device)
                scores.append(sum(weight * forward_func(channels_last(x * transform(masks, i)))[rows, targets[i]]
                                  .to(a.dtype) for transform, weight in steps))
        scores = torch.cat(scores).clone()  # a normal tensor again, outside inference mode
        return weighted_sum(torch.softmax(scores[index], dim=1), a)


class SSCAM(ScoreCAM):
    survey_rank = 7
    Params = SSCAMParams

    def transforms(self, images):
        p = self.params
        n_img, size = len(images), images.shape[-2:]
        noise = torch.randn(p.n, n_img, 1, *size, device=images.device, dtype=images.dtype) * p.sigma
        return [(lambda m, idx, j=j: m + noise[j, idx], 1.0 / p.n) for j in range(p.n)]


class ISCAM(ScoreCAM):
    survey_rank = 8
    Params = ISCAMParams

    def transforms(self, images):
        n = self.params.n
        return [(lambda m, idx, s=(j + 1) / n: m * s, 1.0) for j in range(n)]


class AblationCAM(TopDownMethod):
    survey_rank = 9
    Params = ScoreParams

    def compute(self, forward_func, layers, images, targets):
        from captum.attr import LayerFeatureAblation

        a = activations(forward_func, layers[0], images)
        n, c = a.shape[:2]
        with torch.no_grad():
            y = forward_func(images)[torch.arange(n), targets].to(a.dtype)
            zero = a.abs().amax(dim=(0, 2, 3)) == 0  # channels that are 0 everywhere: one group
            group = torch.cumsum(~zero, 0) - 1
            group = torch.where(zero, (~zero).sum(), group)
            layer_mask = group.reshape(1, c, 1, 1)
            # Captum 0.9's LayerFeatureAblation does not expand a per-image target when it evaluates
            # several ablations per forward (AssertionError), so the forward selects the target
            # logit itself: the batch it sees is the images repeated, in order.
            def target_logit(x):
                return forward_func(x)[torch.arange(len(x)), targets.repeat(len(x) // n)]

            diff = LayerFeatureAblation(target_logit, layers[0]).attribute(
                images, layer_baselines=0.0, layer_mask=layer_mask,
                perturbations_per_eval=max(1, self.params.chunk_size // n))
        return weighted_sum(safe_div(diff[:, :, 0, 0].to(a.dtype), y[:, None]), a)

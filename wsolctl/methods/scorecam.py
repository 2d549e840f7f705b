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

Cost: one forward per channel (× n for SS-/IS-CAM). The masked images are built per chunk, so no
forward sees more than ``chunk_size`` images (memory bound). Channels whose activation is constant
give an all-zero mask M_k = 0, hence the same masked input: it is scored once per image (exact).
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


def channel_masks(a: "torch.Tensor", size) -> "torch.Tensor":
    """(B, h, w) activations → (B, 1, H, W) bilinear-upsampled, min-maxed masks (0 for a constant one)."""
    up = upsample(a[:, None], size)
    flat = up.flatten(1)
    low, high = flat.amin(1)[:, None, None, None], flat.amax(1)[:, None, None, None]
    return safe_div(up - low, (high - low).expand_as(up))


class ScoreCAM(TopDownMethod):
    survey_rank = 6
    Params = ScoreParams

    def transforms(self, images):
        """[(f_j, weight_j)]: the score of channel k is Σ_j weight_j · y(X ⊙ f_j(M_k, image index))."""
        return [(lambda m, idx: m, 1.0)]

    def compute(self, forward_func, layers, images, targets):
        a = activations(forward_func, layers[0], images)
        n, c = a.shape[:2]
        flat = a.flatten(2)
        live = flat.amax(2) > flat.amin(2)  # (N, C); constant channels → mask 0
        # jobs: every live (image, channel) + one "zero mask" job per image that has a constant channel
        img, ch = live.nonzero(as_tuple=True)
        dead_imgs = (~live).any(1).nonzero(as_tuple=True)[0]
        img = torch.cat([img, dead_imgs])
        ch = torch.cat([ch, torch.full_like(dead_imgs, -1)])
        steps = self.transforms(images)
        job_scores = torch.zeros(len(img), dtype=a.dtype, device=a.device)
        size = images.shape[-2:]
        with torch.no_grad():
            for start in range(0, len(img), self.params.chunk_size):
                i, k = img[start:start + self.params.chunk_size], ch[start:start + self.params.chunk_size]
                sel = a[i, k.clamp_min(0)] * (k >= 0)[:, None, None]
                masks = channel_masks(sel, size)
                x, t = images[i], targets[i]
                for transform, weight in steps:
                    out = forward_func(x * transform(masks, i))
                    job_scores[start:start + len(i)] += weight * out[torch.arange(len(i)), t].to(a.dtype)
        scores = torch.empty(n, c, dtype=a.dtype, device=a.device)
        is_live = ch >= 0
        scores[img[is_live], ch[is_live]] = job_scores[is_live]
        zero = torch.zeros(n, dtype=a.dtype, device=a.device)
        zero[img[~is_live]] = job_scores[~is_live]
        scores = torch.where(live, scores, zero[:, None])
        return weighted_sum(torch.softmax(scores, dim=1), a)


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

"""Gradient-based top-down methods, assembled from Captum primitives. Notation: A = activations of the
target layer (N, C, h, w), g = d(logit_target)/dA, Σ = sum over space, every map = ReLU(Σ_k w_k A_k)
unless said otherwise. Formulas are the published ones (docs/methods/top-down.md lists the deviations
of the survey's reference code).

- GradCAM (Selvaraju et al., 2017): w_k = mean(g_k). Captum LayerGradCam.
- GradCAM++ (Chattopadhay et al., 2018, eq. 19): α = g² / (2g² + ΣA·g³) (α = 0 where the
  denominator is 0, e.g. g = 0), w_k = Σ α·ReLU(g).
- Smooth-GradCAM++ (Omeiza et al., 2019): g², g³ (and g) averaged over ``n`` noisy copies of the
  input (Gaussian, std ``sigma`` in input units) via Captum NoiseTunnel; ΣA from the clean input.
- XGradCAM (Fu et al., 2020): w_k = Σ(g·A) / ΣA (0 where ΣA = 0).
- LayerCAM (Jiang et al., 2021): map = ReLU(Σ_k ReLU(g)⊙A) (element-wise weights); with several
  ``layers`` each map is scaled by tanh(2·M/max M), resized to the largest map and fused by max.
"""
from __future__ import annotations

from pydantic import Field

from wsolctl._lazy import torch
from wsolctl.methods.topdown import (
    GradientMethod,
    LayerParams,
    activations,
    gradients_and_activations,
    safe_div,
    upsample,
    weighted_sum,
)


class GradCAM(GradientMethod):
    survey_rank = 1
    in_survey = True

    def compute(self, forward_func, layers, images, targets):
        from captum.attr import LayerGradCam

        maps = LayerGradCam(forward_func, layers[0]).attribute(images, target=targets, relu_attributions=True)
        return maps[:, 0]

    def weights(self, g, a):  # what LayerGradCam computes (used by the tests' oracle)
        return g.mean(dim=(2, 3))


def gradcampp_weights(g, g2, g3, a, g_for_relu):
    """Σ_ij α·ReLU(g) with α = g² / (2g² + ΣA·g³), α = 0 where the denominator is 0."""
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    alpha = safe_div(g2, 2 * g2 + sum_a * g3)
    return (alpha * g_for_relu.clamp_min(0)).sum(dim=(2, 3))


class GradCAMPP(GradientMethod):
    survey_rank = 2
    in_survey = True

    def weights(self, g, a):
        return gradcampp_weights(g, g * g, g * g * g, a, g)


class SmoothParams(LayerParams):
    n: int = Field(4, ge=1, description="noisy copies of the input (survey / torchcam: 4)")
    sigma: float = Field(0.3, ge=0, description="std of the Gaussian input noise, in input units (survey: 0.3)")
    batch: int = Field(32, ge=1, description="max noisy images per forward+backward (memory bound)")


_POWERS = None


def _gradient_powers_class():
    """A Captum attribution returning [g, g², g³] on the channel axis, so that NoiseTunnel averages the
    powers (the Smooth-GradCAM++ formula) instead of averaging finished maps. Built lazily: Captum
    imports torch."""
    global _POWERS
    if _POWERS is None:
        from captum.attr import GradientAttribution, LayerAttribution
        from captum.log import log_usage

        class GradientPowers(LayerAttribution, GradientAttribution):
            def __init__(self, forward_func, layer):
                LayerAttribution.__init__(self, forward_func, layer)
                GradientAttribution.__init__(self, forward_func)

            @log_usage()
            def attribute(self, inputs, target=None):
                (g, _), = gradients_and_activations(self.forward_func, [self.layer], inputs, target)
                return torch.cat([g, g * g, g * g * g], dim=1)

        _POWERS = GradientPowers
    return _POWERS


class SmoothGradCAMPP(GradientMethod):
    survey_rank = 3
    in_survey = True
    Params = SmoothParams

    def compute(self, forward_func, layers, images, targets):
        from captum.attr import NoiseTunnel

        p = self.params
        a = activations(forward_func, layers[0], images)
        tunnel = NoiseTunnel(_gradient_powers_class()(forward_func, layers[0]))
        per_eval = max(1, p.batch // len(images))
        mean = tunnel.attribute(images, nt_type="smoothgrad", nt_samples=p.n, stdevs=p.sigma,
                                nt_samples_batch_size=per_eval, target=targets)
        g, g2, g3 = mean.chunk(3, dim=1)
        return weighted_sum(gradcampp_weights(g, g2, g3, a, g), a)


class XGradCAM(GradientMethod):
    survey_rank = 4
    in_survey = True

    def weights(self, g, a):
        return safe_div((g * a).sum(dim=(2, 3)), a.sum(dim=(2, 3)))


class LayerCAMParams(LayerParams):
    layers: list[str] = Field(default_factory=list, description=(
        "several layers to fuse (LayerCAM paper): each map scaled by tanh(2·M/max M), resized to the "
        "largest one, fused by element-wise max; empty: only `layer`"))


class LayerCAM(GradientMethod):
    survey_rank = 5
    in_survey = True
    Params = LayerCAMParams
    multi_layer = True

    def weights(self, g, a):
        return g.clamp_min(0)

    def compute(self, forward_func, layers, images, targets):
        maps = [weighted_sum(self.weights(g, a), a)
                for g, a in gradients_and_activations(forward_func, layers, images, targets)]
        if len(maps) == 1:
            return maps[0]
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        fused = []
        for m in maps:
            peak = m.amax(dim=(1, 2), keepdim=True)
            m = torch.tanh(2 * safe_div(m, peak))
            fused.append(upsample(m[:, None], size)[:, 0])
        return torch.stack(fused).amax(dim=0)

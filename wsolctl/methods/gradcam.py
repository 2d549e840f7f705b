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

Not in the survey (pytorch-grad-cam's other gradient methods):

- HiResCAM (Draelos and Carin, 2020): map = ReLU(Σ_k g⊙A) (element-wise weights w = g).
- GradCAMElementWise (pytorch-grad-cam): map = Σ_k ReLU(g⊙A), i.e. w = g where g·A > 0, else 0.
- ShapleyCAM (Cai, 2025): w_k = mean(g_k − ½·(H·A)_k), H = ∂²y/∂A² (a Hessian-vector product, one
  more backward). H = 0 where the network is piecewise linear after the layer (ReLU CNNs, and the
  GAP + linear head at ``cam_layer``): then ShapleyCAM = GradCAM. On a ViT the attention runs
  timm's explicit path for the call (CPU's fused kernel has no second derivative).
- Finer-CAM (Zhang et al., 2025): GradCAM of the score S = Σ_j p_j (y_c − α·y_j) / Σ_j p_j over the
  ``comparisons`` classes j ≠ c whose logits are closest to y_c (p = softmax of the logits). With two
  classes the only comparison is the other class: S = y_c − α·y_other, i.e. (α = 1) GradCAM of the
  log-odds, which for a linear head is GradCAM with the weight difference w_c − w_other.
- FullGrad (Srinivas and Fleuret, 2019): |x ⊙ ∂y/∂x| plus, for every Conv2d / BatchNorm2d with a bias
  under ``layer`` (default: the whole model), |b ⊙ ∂y/∂z| (z: the layer's output); each term min-max
  normalised per image over all its channels and positions (the authors' code), summed over channels,
  bilinearly upsampled (align_corners=True) to the input size, and added. ``variant:
  pytorch-grad-cam`` min-maxes each channel instead and upsamples with align_corners=False.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from wsolctl._lazy import F, nn, torch
from wsolctl.methods.scorecam import minmax_rows
from wsolctl.methods.topdown import (
    GradientMethod,
    LayerParams,
    TopDownMethod,
    activations,
    as_targets,
    gradients_and_activations,
    safe_div,
    unfused_attention,
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


# ---- not in the survey: pytorch-grad-cam's other gradient methods --------------------------------
class HiResCAM(GradientMethod):
    def weights(self, g, a):
        return g


class GradCAMElementWise(GradientMethod):
    def weights(self, g, a):  # w·A = ReLU(g·A): the positive products only
        return g * (g * a > 0)


def gradient_and_hessian_product(forward_func, layer, images, targets):
    """(g, H·A, A) at ``layer``: g = ∂y/∂A keeping its graph, then H·A = ∂(g·A)/∂A with A held fixed
    (one more backward). A is taken as a leaf, so neither backward goes below the layer; the network
    sees a clone, so later in-place ops cannot change it."""
    store = {}

    def hook(module, args, out):
        store["a"] = out.detach().requires_grad_()
        return store["a"].clone()

    handle = layer.register_forward_hook(hook)
    try:
        logits = forward_func(images)
    finally:
        handle.remove()
    a = store["a"]
    g, = torch.autograd.grad(logits[torch.arange(len(images)), targets].sum(), a, create_graph=True)
    hvp = None
    if g.requires_grad:  # else y is linear in A after the layer: H = 0
        hvp, = torch.autograd.grad(g, a, grad_outputs=a.detach(), allow_unused=True)
    return g.detach(), (torch.zeros_like(a) if hvp is None else hvp), a.detach()


class ShapleyCAM(GradientMethod):
    def explain(self, forward_func, layers, images, targets, tokens=None):
        with unfused_attention(tokens):  # the fused attention kernel has no second derivative on CPU
            return super().explain(forward_func, layers, images, targets, tokens)

    def compute(self, forward_func, layers, images, targets):
        g, hvp, a = gradient_and_hessian_product(forward_func, layers[0], images, targets)
        return weighted_sum((g - 0.5 * hvp).mean(dim=(2, 3)), a)


class FinerParams(LayerParams):
    alpha: float = Field(1.0, ge=0, description="weight of the compared classes' logits (Finer-CAM / pytorch-grad-cam: 1)")
    comparisons: int = Field(3, ge=1, description=(
        "compared classes: the ones whose logits are closest to the target's (pytorch-grad-cam: 3; "
        "at most num_classes − 1, so 1 for a binary task)"))


def finer_score(logits, targets, alpha: float, comparisons: int):
    """S = Σ_j p_j (y_c − α·y_j) / Σ_j p_j over the classes j ≠ c closest to y_c (p = softmax)."""
    y_c = logits.gather(1, targets[:, None])
    gap = (logits - y_c).abs().detach().scatter(1, targets[:, None], float("inf"))
    others = gap.topk(min(comparisons, logits.shape[1] - 1), dim=1, largest=False).indices
    p = torch.softmax(logits, dim=1).gather(1, others)
    return (p * (y_c - alpha * logits.gather(1, others))).sum(1) / p.sum(1)


class FinerCAM(GradientMethod):
    Params = FinerParams
    weights = GradCAM.weights

    def compute(self, forward_func, layers, images, targets):
        p = self.params

        def score(x):  # one output column: the score is the target
            return finer_score(forward_func(x), targets, p.alpha, p.comparisons)[:, None]

        return super().compute(score, layers, images, torch.zeros_like(targets))


class FullGradParams(LayerParams):
    layer: Optional[str] = Field(None, description=(
        "dotted module name whose Conv2d / BatchNorm2d biases are used; default: the whole model"))
    variant: Literal["paper", "pytorch-grad-cam"] = Field("paper", description=(
        "paper: each term min-maxed per image over all its channels, upsampled with align_corners=True "
        "(the authors' code); pytorch-grad-cam: min-maxed per channel, align_corners=False"))


def effective_bias(module):
    """The bias a Conv2d / BatchNorm2d adds to its output (BatchNorm in eval: β − μγ/√(σ² + ε)), or
    None. Exact types, as pytorch-grad-cam: a BatchNorm subclass that fuses an activation (timm's
    BatchNormAct2d) does not output ``BN(x)``."""
    if type(module) is nn.Conv2d and module.bias is not None:
        return module.bias.detach()
    if type(module) is nn.BatchNorm2d and module.bias is not None and module.running_mean is not None:
        scale = module.weight / torch.sqrt(module.running_var + module.eps)
        return (module.bias - module.running_mean * scale).detach()
    return None


def image_minmax(x):
    """Min-max of each image over all its channels and positions (FullGrad's rescale)."""
    return minmax_rows(x.flatten(1)).view_as(x)


def channel_minmax(x):
    """Min-max of each channel of each image (pytorch-grad-cam's FullGrad rescale)."""
    return minmax_rows(x.flatten(2)).view_as(x)


class FullGrad(TopDownMethod):
    Params = FullGradParams

    def layer_names(self, default):
        return [self.params.layer or ""]  # "" is the model itself

    def explain(self, forward_func, layers, images, targets, tokens=None):
        """At the input's resolution. No token rerouting: the terms are maps already (Conv2d/BN)."""
        targets = as_targets(targets, len(images), images.device)
        biased = [(m, b) for m in layers[0].modules() if (b := effective_bias(m)) is not None]
        pixels = nn.Identity()  # a layer whose gradient is ∂y/∂x
        with torch.enable_grad():
            found = gradients_and_activations(lambda x: forward_func(pixels(x)), [pixels] + [m for m, _ in biased],
                                              images, targets)
        (gx, x), bias_grads = found[0], [g for g, _ in found[1:]]
        paper = self.params.variant == "paper"
        rescale = image_minmax if paper else channel_minmax
        by_size = {}  # terms of one resolution are summed before one upsampling (linear, so exact)
        for g, (_, b) in zip(bias_grads, biased):
            term = rescale((g * b[None, :, None, None]).abs()).sum(1, keepdim=True)
            key = tuple(term.shape[-2:])
            by_size[key] = by_size[key] + term if key in by_size else term
        total = rescale((gx * x).abs()).sum(1)
        for term in by_size.values():
            total = total + F.interpolate(term, size=images.shape[-2:], mode="bilinear", align_corners=paper)[:, 0]
        return total.detach()

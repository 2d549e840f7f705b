"""Shared base of top-down methods: train the CAM classifier (GAP + linear) once, explain it afterwards
at a backbone layer with Captum primitives. A subclass only says how it turns the layer's activations
(and gradients, or confidence scores) into maps, in :meth:`TopDownMethod.compute`.

The same ``compute`` serves the plugin (``TopDownMethod.cams``, called by the engine) and the public
API :func:`wsolctl.explain.cams` (any torch classifier), so there is one implementation.

This module is torch-free at import (``wsolctl._lazy``); Captum is imported inside functions.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import nn, torch
from wsolctl.backbones.timm_any import token_model
from wsolctl.methods.cam import CAM

if TYPE_CHECKING:
    from torch import Tensor, nn

ForwardFunc = Callable[["Tensor"], "Tensor"]


class LayerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: Optional[str] = Field(None, description="dotted module name in the backbone; default: the backbone's CAM layer")


# --------------------------------------------------------------------------------------------------
# helpers shared by every top-down method and by wsolctl.explain
# --------------------------------------------------------------------------------------------------
def logits_of(output: Any) -> "Tensor":
    """Logits from a model output: a tensor, an object with ``.logits`` (WSOLModel's Output, HF
    outputs), or a tuple/list whose first element is the logits."""
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def forward_func_of(model: "nn.Module") -> ForwardFunc:
    def forward_func(x):
        return logits_of(model(x))

    return forward_func


def resolve_layer(model: "nn.Module", layer: Union[str, "nn.Module"]) -> "nn.Module":
    """A module, or a dotted name looked up in ``model`` and then in ``model.backbone`` (WSOLModel)."""
    if not isinstance(layer, str):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        backbone = getattr(model, "backbone", None)
        if backbone is not None:
            try:
                return backbone.get_submodule(layer)
            except AttributeError:
                pass
    names = [n for n, _ in model.named_modules() if n][-8:]
    raise ValueError(f"layer {layer!r} not found in {type(model).__name__} (last modules: {', '.join(names)})")


def as_targets(targets: Any, n: int, device) -> "Tensor":
    """An int, a sequence or a tensor of class indices → a (n,) long tensor."""
    t = torch.as_tensor(targets, device=device, dtype=torch.long).reshape(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n)
    if t.numel() != n:
        raise ValueError(f"{t.numel()} targets for {n} images")
    return t


def weighted_sum(weights: "Tensor", acts: "Tensor") -> "Tensor":
    """ReLU(Σ_k w_k · A_k): weights (N, C) or (N, C, h, w) broadcastable to acts (N, C, h, w)."""
    if weights.dim() == 2:
        weights = weights[:, :, None, None]
    return (weights * acts).sum(dim=1).clamp_min(0)


def safe_div(num: "Tensor", den: "Tensor") -> "Tensor":
    """num / den, 0 where den == 0 (no eps that would bias small values)."""
    zero = den == 0
    return torch.where(zero, torch.zeros_like(num), num / torch.where(zero, torch.ones_like(den), den))


def gradients_and_activations(forward_func: ForwardFunc, layers: Sequence["nn.Module"], images: "Tensor",
                              targets: "Tensor") -> list[tuple["Tensor", "Tensor"]]:
    """(g, A) per layer from ONE forward and ONE ``torch.autograd.grad`` to the layer outputs only (no
    gradients into the weights). Uses Captum's ``compute_layer_gradients_and_eval`` (the function
    LayerGradCam itself runs); it is private API, so the captum version is pinned in docs. Captum's hook
    keeps a clone of the layer output, so later in-place ops (``x += shortcut``, ``ReLU(inplace=True)``)
    cannot corrupt A."""
    from captum._utils.gradient import compute_layer_gradients_and_eval

    with torch.enable_grad():
        if len(layers) == 1:
            grads, acts = compute_layer_gradients_and_eval(forward_func, layers[0], images, target_ind=targets)
            return [(grads[0].detach(), acts[0].detach())]
        grads, acts = compute_layer_gradients_and_eval(forward_func, list(layers), images, target_ind=targets)
        return [(g[0].detach(), a[0].detach()) for g, a in zip(grads, acts)]


def activations(forward_func: ForwardFunc, layer: "nn.Module", images: "Tensor") -> "Tensor":
    """A at ``layer`` (Captum LayerActivation), without gradients."""
    from captum.attr import LayerActivation

    with torch.no_grad():
        return LayerActivation(forward_func, layer).attribute(images).detach()


@contextmanager
def token_layers_as_maps(tokens: Optional["nn.Module"], layers: Sequence["nn.Module"],
                         images: "Tensor") -> Iterator[list["nn.Module"]]:
    """For a timm token model (ViT): the modules to explain in place of ``layers``, which see each
    layer's output (N, prefix + h·w, C) as its (N, C, h, w) patch map (pytorch-grad-cam's
    ``reshape_transform``). A forward hook routes the patch map through an ``nn.Identity`` (the module
    the methods hook) and puts the patch tokens back after the class / register tokens, so the activations and gradients the methods get are
    the map's. Without a token model the layers are returned unchanged."""
    if tokens is None:
        yield list(layers)
        return
    from wsolctl.backbones.featuremap import token_grid, tokens_to_map

    prefix, grid = int(tokens.num_prefix_tokens), token_grid(tokens, images.shape[-2:])
    views = [nn.Identity() for _ in layers]

    def rerouted(view):
        def hook(module, args, out):
            if out.dim() != 3:
                return view(out)
            patches = view(tokens_to_map(out, prefix, grid)).flatten(2).transpose(1, 2)
            return torch.cat([out[:, :prefix], patches], dim=1)
        return hook

    handles = [layer.register_forward_hook(rerouted(view)) for layer, view in zip(layers, views)]
    try:
        yield views
    finally:
        for handle in handles:
            handle.remove()


def attention_modules(net: Optional["nn.Module"]) -> list["nn.Module"]:
    """The timm attention modules of ``net`` (ones that declare ``fused_attn`` and have an ``attn_drop``)."""
    if net is None:
        return []
    return [m for m in net.modules() if hasattr(m, "fused_attn") and hasattr(m, "attn_drop")]


@contextmanager
def unfused_attention(net: Optional["nn.Module"]) -> Iterator[list["nn.Module"]]:
    """Runs timm's explicit softmax(q·kᵀ)·v path instead of the fused kernel inside the block (the
    same numbers up to rounding): its probabilities pass through ``attn_drop`` (hookable) and it has
    second derivatives (CPU's fused flash kernel has none). Yields the modules."""
    modules = attention_modules(net)
    flags = [m.fused_attn for m in modules]
    for m in modules:
        m.fused_attn = False
    try:
        yield modules
    finally:
        for m, flag in zip(modules, flags):
            m.fused_attn = flag


def upsample(maps: "Tensor", size) -> "Tensor":
    """Bilinear (align_corners=False) resize through Captum's LayerAttribution.interpolate (whose
    default mode is nearest, hence the explicit mode)."""
    from captum.attr import LayerAttribution

    return LayerAttribution.interpolate(maps, tuple(size), interpolate_mode="bilinear")


# --------------------------------------------------------------------------------------------------
# the plugin base
# --------------------------------------------------------------------------------------------------
class TopDownMethod(CAM):
    """Subclasses implement :meth:`compute`; everything else (training, layer choice, grad mode) is here.

    Top-down methods keep CAM's ``training_key``: every one of them explains the same GAP + linear
    classifier, so a recipe listing several trains it once.
    """

    kind = "top-down"
    Params = LayerParams
    multi_layer: ClassVar[bool] = False  # True when Params has a ``layers`` list (LayerCAM fusion)

    def layer_names(self, default: str) -> list[str]:
        extra = list(getattr(self.params, "layers", []) or [])
        return extra or [self.params.layer or default]

    def backbone_modules(self) -> tuple[str, ...]:
        return tuple(name for name in self.layer_names("") if name)

    def cams(self, model, images, targets):
        layers = [resolve_layer(model, name) for name in self.layer_names(model.cam_layer)]
        return self.explain(forward_func_of(model), layers, images, targets, tokens=token_model(model))

    def explain(self, forward_func: ForwardFunc, layers: Sequence["nn.Module"], images: "Tensor",
                targets: "Tensor", tokens: Optional["nn.Module"] = None) -> "Tensor":
        """(N, h, w) maps at the layer's resolution, ReLU applied, not normalised. ``tokens``: the timm
        token model the layers belong to (ViT), whose token outputs are explained as patch maps."""
        if len(layers) > 1 and not self.multi_layer:
            raise ValueError(f"{type(self).__name__} explains one layer; got {len(layers)}")
        targets = as_targets(targets, len(images), images.device)
        with torch.enable_grad(), token_layers_as_maps(tokens, layers, images) as hooked:
            # the engine calls cams under no_grad; gradient methods need it back
            maps = self.compute(forward_func, hooked, images, targets)
        return maps.detach()

    def compute(self, forward_func: ForwardFunc, layers: list["nn.Module"], images: "Tensor",
                targets: "Tensor") -> "Tensor":
        raise NotImplementedError


class GradientMethod(TopDownMethod):
    """Methods whose map is ReLU(Σ_k w_k A_k) with w from (g, A) of one forward + one backward."""

    def compute(self, forward_func, layers, images, targets):
        (g, a), = gradients_and_activations(forward_func, layers, images, targets)
        return weighted_sum(self.weights(g, a), a)

    def weights(self, g: "Tensor", a: "Tensor") -> "Tensor":
        raise NotImplementedError


__all__ = ["TopDownMethod", "GradientMethod", "LayerParams", "gradients_and_activations", "activations",
           "upsample", "weighted_sum", "safe_div", "resolve_layer", "forward_func_of", "logits_of", "as_targets",
           "token_layers_as_maps", "attention_modules", "unfused_attention"]

"""Top-down class activation maps for any torch classifier (built on Captum).

Example::

    import timm, torch
    from wsolctl.explain import cams

    model = timm.create_model("resnet18", num_classes=2).eval()
    images = torch.randn(8, 3, 224, 224)
    maps = cams(model, images, targets=[0, 1, 0, 1, 1, 0, 0, 1], method="gradcampp", layer="layer4")
    maps.shape  # (8, 7, 7): the layer's resolution, ReLU applied, not normalised

``method`` is the name of an installed top-down method plugin (:func:`methods`: the built-in ones
and any third party's); extra keyword arguments are that method's parameters (validated,
e.g. ``n=4, sigma=0.3`` for ``smoothgradcampp``, ``chunk_size=32`` for ``scorecam``, ``layers=[...]``
for ``layercam``). ``layer`` is a dotted module name (looked up in ``model``, then in
``model.backbone`` for a wsolctl WSOLModel), a module, or a list of them (LayerCAM fusion); ``None``
(the default) uses ``model.cam_layer`` when the model has one, the last block's ``norm1`` on a timm
vision transformer, else ``layer4``.

Vision transformers (any timm model with ``patch_embed`` and ``num_prefix_tokens``, e.g.
``timm.create_model("vit_small_patch16_224")``) work as they are: a layer's token output
(N, prefix + h·w, C) is explained as its (N, C, h, w) patch map, class / register tokens dropped
(what pytorch-grad-cam's ``reshape_transform`` does), e.g. ``layer="blocks.11.norm1"``. In a
class-token ViT the last block's patch outputs never reach the score, so explain a layer before the
last attention (its ``norm1``), not the last block's output. ``model`` returns logits (a tensor, an object with
``.logits`` such as a WSOLModel's Output, or a tuple whose first item is the logits). Put the model in
``eval()`` mode yourself: this function never changes it (with BatchNorm in train mode the images of a
batch would influence each other's maps).

The gradient family (gradcam, gradcampp, xgradcam, layercam) costs one forward and one backward
to the layer per batch, whatever the batch's targets; smoothgradcampp costs ``n`` of them plus one
forward; scorecam / ablationcam one forward per channel (× ``n`` for sscam / iscam), in chunks of at
most ``chunk_size`` images. Beyond the survey: hirescam, gradcamelementwise, finercam, eigengradcam,
fullgrad (every bias layer, map at the input resolution) cost one forward and one backward;
shapleycam one more backward; eigencam, kpcacam, fem and rollout (token models, class-agnostic) one
forward. It works under ``torch.no_grad()`` (it re-enables gradients itself) and
with in-place ReLUs / residual additions after the layer (timm / torchvision ResNets): Captum's hook
keeps a clone of the layer output.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from wsolctl import plugins
from wsolctl.backbones.timm_any import token_cam_layer, token_model
from wsolctl.methods.topdown import TopDownMethod, forward_func_of, resolve_layer

Layer = Union[str, nn.Module]


def cams(model: nn.Module, images: torch.Tensor, targets: Any, method: str = "gradcampp",
         layer: Union[Layer, Sequence[Layer], None] = None, **params) -> torch.Tensor:
    """(N, h, w) maps of ``targets`` (int, sequence or tensor of class indices) for ``images``."""
    cls = method_class(method)
    if cls is None:
        raise ValueError(f"unknown top-down method {method!r}; choose from {', '.join(methods())}")
    tokens = token_model(model)
    names = params.pop("layers", None)
    instance = cls(cls.Params(**params))
    if layer is None:  # the method's own default (FullGrad: the whole model), from the model's CAM layer
        layer = instance.layer_names(getattr(model, "cam_layer", None)
                                     or (token_cam_layer(tokens) if tokens is not None else "layer4"))
    chosen = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if names:
        chosen = list(names)
    modules = [resolve_layer(model, item) for item in chosen]
    return instance.explain(forward_func_of(model), modules, images, targets, tokens=tokens)


def methods() -> dict[str, type[TopDownMethod]]:
    """The installed top-down method plugins, by name."""
    return {name: cls for name, cls in plugins.load_all("methods").items() if _top_down(cls)}


def method_class(name: str) -> Optional[type[TopDownMethod]]:
    """The top-down method plugin of that name, or None."""
    if name not in plugins.registered("methods"):
        return None
    cls = plugins.load("methods", name)
    return cls if _top_down(cls) else None


def _top_down(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, TopDownMethod)


__all__ = ["cams", "methods", "method_class"]

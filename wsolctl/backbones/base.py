"""Backbone plugin interface, the declaration every backbone makes (:class:`BackboneInfo`), and the
helpers every backbone family shares."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Literal, Optional, Union

from pydantic import BaseModel

from wsolctl._lazy import nn, torch
from wsolctl.plugins import NoParams, Plugin  # noqa: F401  (NoParams: for plugins)
from wsolctl.recipe.base import IMAGENET, Normalize

Kind = Literal["cnn", "tokens"]
# timm's tag of torchvision's ImageNet weights, which the survey's WSOL backbones start from.
TORCHVISION = "tv_in1k"


@dataclass(frozen=True)
class Stage:
    """One stage of a backbone, as timm's ``feature_info`` lists them: the module (dotted path in the
    built backbone) whose output ends the stage, its channels, and its reduction (input pixels per
    output pixel, the cumulative stride)."""

    module: str
    channels: int
    reduction: int


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone is, for methods to decide whether they can run on it (``Method.unsupported``)
    and for the engine (top-down layer, freezing). Methods never look at a backbone's name.

    - ``kind``: ``"cnn"`` (stages of spatial maps) or ``"tokens"`` (a vision transformer: a flat token
      sequence that the backbone lays out as a map only at its output).
    - ``stages``: in forward order; the last one gives the output map. For token models: the blocks.
    - ``cam_layer``: default layer of top-down methods (a module path in the built backbone).
    - ``prefix_tokens``: class / register tokens ahead of the patch tokens (token models).
    - ``layout``: the named-stage layout of the survey's WSOL code (``"resnet"``, ``"vgg"``,
      ``"inception"``), or None.
    - ``wsol_taps``: where ADL's layers and SPG's taps go in the built module, ``(module, info) ->``
      :class:`~wsolctl.backbones.taps.Taps` (:mod:`wsolctl.backbones.taps`), or None: ADL and SPG do not
      support the backbone.
    - ``normalize``: the mean and std the backbone's weights were trained with (what its images are
      normalised with unless a recipe overrides it): timm's pretrained config for timm models, the
      hub config.json for ``hf-hub:`` ones, the card for named models, ImageNet's by default.
    """

    kind: Kind
    stages: tuple[Stage, ...]
    cam_layer: str
    prefix_tokens: int = 0
    layout: Optional[str] = None
    wsol_taps: Optional[Callable[..., Any]] = None  # (module, info) -> wsolctl.backbones.taps.Taps
    normalize: Normalize = IMAGENET

    @property
    def out_channels(self) -> int:
        return self.stages[-1].channels

    @property
    def reduction(self) -> int:
        return self.stages[-1].reduction


class Backbone(Plugin):
    """Builds a feature extractor mapping images (N, 3, H, W) to a map (N, C, h, w).

    - ``info()``: the declaration (:class:`BackboneInfo`); must not build weights or download.
    - ``build(pretrained)``: the module; ``pretrained`` is False, True (the default weights of
      ``pretrained_name``, a timm name or ``hf-hub:org/name``, through the Hugging Face cache) or the
      path of a local weights file.
    - ``classifier_prefixes``: module names trained at ``lr × lr_classifier_ratio`` (the survey trains
      the last stage and the new layers faster than the rest).
    - ``decoder_at_classifier_lr``: whether a decoder that a method adds (NEGEV's) trains at
      ``lr × lr_classifier_ratio`` too; the survey's parameter patterns put it there on VGG16 and
      InceptionV3 and at ``lr`` on ResNet50 (they name ResNet's classifier side, the others' feature side).
    """

    title: ClassVar[str] = ""  # the report's column title (default: the name)
    pretrained_name: ClassVar[str] = ""  # timm name (tag included) whose weights `pretrained: true` loads
    classifier_prefixes: ClassVar[tuple[str, ...]] = ()
    decoder_at_classifier_lr: ClassVar[bool] = True
    # whether the declared normalisation holds for a local weights file too (False for a bare timm name,
    # whose file may come from anywhere: the recipe must then say `normalize:`)
    file_normalization_known: ClassVar[bool] = True

    def __init__(self, params: BaseModel | None = None):
        self.params = params if params is not None else self.Params()

    def info(self) -> BackboneInfo:
        raise NotImplementedError

    @property
    def architecture(self) -> str:
        """What :meth:`build` makes without the hub's weights (random or a local file): a timm name, or
        an ``hf-hub:`` name whose config.json the hub must provide. Default: :attr:`pretrained_name`."""
        return self.pretrained_name

    @property
    def cam_layer(self) -> str:
        return self.info().cam_layer

    def normalization(self) -> Normalize:
        """``info().normalize``; a backbone that knows it without its declaration may say so sooner."""
        return self.info().normalize

    def build(self, pretrained: Union[bool, str] = False) -> "nn.Module":
        """Return a module with an ``out_channels`` attribute."""
        raise NotImplementedError

    def module_names(self) -> frozenset[str]:
        """The dotted name of every module :meth:`build` makes, from a weightless build on the
        ``meta`` device (imports torch; no weights, no download)."""
        from wsolctl._lazy import torch

        with torch.device("meta"):
            return frozenset(name for name, _ in self.build(False).named_modules() if name)


def timm_model(arch: str, pretrained: Union[bool, str], **kwargs) -> "nn.Module":
    """A timm model: random weights, the default pretrained weights of ``arch`` (True: read from the
    Hugging Face cache, downloaded there first when allowed), or a local weights file (a path)."""
    from wsolctl.backbones.weights import create_model

    model = create_model(arch, pretrained is True, **kwargs)
    if pretrained and pretrained is not True:
        load_local_weights(model, Path(pretrained))
    return model


def load_local_weights(model: "nn.Module", path: Path) -> None:
    """Load a local state dict (``weights_only``; .safetensors also accepted), ignoring the
    classifier layers whose shapes differ. Raises ValueError when nothing matches."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no parameter matches the {type(model).__name__} architecture")
    model.load_state_dict(usable, strict=False)


def sequential(children: Iterable[tuple[str, "nn.Module"]], out_channels: int) -> "nn.Sequential":
    body = nn.Sequential(OrderedDict(children))
    body.out_channels = out_channels
    return body


def set_stride_one(modules: Iterable["nn.Module"]) -> None:
    """Turn the strided convolutions/pools among ``modules`` into stride 1 (the survey's WSOL
    backbones keep spatial resolution instead of dilating)."""
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and sub.stride not in (1, (1, 1)):
                sub.stride = (1, 1) if isinstance(sub, nn.Conv2d) else 1

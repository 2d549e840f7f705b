"""Backbone plugin interface and the helpers every backbone family shares."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import ClassVar, Iterable, Union

from pydantic import BaseModel, ConfigDict

from wsolctl._lazy import nn, torch


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Backbone:
    """Builds a feature extractor. ``cam_layer`` is the default layer for top-down methods, and
    ``classifier_prefixes`` are the module names trained at ``lr × lr_classifier_ratio`` (the survey
    trains the last stage and the new layers faster than the rest)."""

    Params: ClassVar[type[BaseModel]] = NoParams
    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # the report's column title (default: the name)
    survey_rank: ClassVar[int] = 1000  # column order in the report (the survey's); others follow by name
    cam_layer: ClassVar[str] = ""
    classifier_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: BaseModel | None = None):
        self.params = params if params is not None else self.Params()

    def build(self, pretrained: Union[bool, str] = False) -> "nn.Sequential":
        """Return an ``nn.Sequential`` with an ``out_channels`` attribute."""
        raise NotImplementedError


def timm_model(arch: str, pretrained: Union[bool, str], **kwargs) -> "nn.Module":
    """A timm model built without any download, optionally loading a local weights file."""
    import timm

    model = timm.create_model(arch, pretrained=False, **kwargs)
    if pretrained:
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

"""Any timm model as a backbone: a timm name (CNN or vision transformer, e.g. ``resnet18``,
``efficientnet_b0``, ``vit_small_patch16_224``) or a Hugging Face Hub model published for timm
(``hf-hub:org/name``, e.g. the pathology foundation models). Used when a recipe names a backbone that
no plugin registers; the DeiT plugins are this class with a fixed name.

The backbone is the timm model itself without its classifier, so module paths (``layer4``,
``blocks.11.norm1``) and state-dict keys are timm's. Its output is ``forward_features`` as a map:

- CNNs: the (N, C, h, w) features at ``output_stride`` (param, default 32).
- Token models (ViTs): the patch tokens laid out as (N, C, h, w), class / register tokens
  (``num_prefix_tokens``) dropped. They are built with timm's dynamic image size: at sizes other
  than the pretraining one the position embedding is resampled (bicubic) to the actual grid at every
  forward, and sides that are not a multiple of the patch are zero-padded up to one. The grid is
  ``ceil(image_size / patch)`` per side.

The declaration (:meth:`TimmBackbone.info`) comes from a weightless build on the ``meta`` device
(timm's ``feature_info`` and one meta forward), so validating a recipe builds no weights; for an
``hf-hub:`` name it needs the model's ``config.json`` in the hub cache and never downloads it.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import nn, torch
from wsolctl.errors import InputError, NotCached
from wsolctl.models.base import Backbone, BackboneInfo, Stage, timm_model
from wsolctl.models.weights import HF_HUB

TOKEN_KWARGS = {"dynamic_img_size": True, "dynamic_img_pad": True}


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output_stride: int = Field(32, description="CNNs: output stride (timm ``output_stride``); ignored by token models")


class TimmBackbone(Backbone):
    """A timm model by name; subclasses (or :func:`timm_backbone`) set ``model_name``."""

    Params = TimmParams
    model_name = ""

    @property
    def pretrained_name(self) -> str:
        return self.model_name

    def info(self) -> BackboneInfo:
        return describe(self.model_name, self._output_stride())

    def _output_stride(self) -> Optional[int]:
        return getattr(self.params, "output_stride", None)

    def build(self, pretrained=False):
        if self.model_name.startswith(HF_HUB):
            from wsolctl.models.weights import HubWeights, ensure_cached

            ensure_cached(HubWeights.of(self.model_name, weights=False))  # the config says what to build
        info = self.info()
        kwargs = TOKEN_KWARGS if info.kind == "tokens" else _cnn_kwargs(self._output_stride())
        net = timm_model(self.model_name, pretrained, num_classes=0, global_pool="", **kwargs)
        from wsolctl.models.featuremap import FeatureMap

        return FeatureMap(net, info)


def _cnn_kwargs(output_stride: Optional[int]) -> dict:
    return {} if output_stride in (None, 32) else {"output_stride": output_stride}


@lru_cache(maxsize=None)
def describe(name: str, output_stride: Optional[int] = None) -> BackboneInfo:
    """The declaration of a timm model, from a weightless (``meta`` device) build."""
    arch, model_args = _architecture(name)
    import timm

    with torch.device("meta"):
        net = timm.create_model(arch, pretrained=False, **{**model_args, "num_classes": 0, "global_pool": ""})
        size = _input_size(net)
        out = net.forward_features(torch.empty(1, 3, *size))
    if out.dim() == 3:
        return _token_info(net)
    if out.dim() != 4:
        raise InputError(f"backbone {name!r}: timm's forward_features gives a {out.dim()}-D output, not a feature map")
    stages = tuple(Stage(f["module"], f["num_chs"], f["reduction"]) for f in getattr(net, "feature_info", []))
    if output_stride not in (None, 32):
        stages = tuple(Stage(s.module, s.channels, min(s.reduction, output_stride)) for s in stages)
    if not stages or stages[-1].channels != out.shape[1]:
        stages += (Stage("", out.shape[1], size[0] // out.shape[-2]),)
    return BackboneInfo("cnn", stages, cam_layer=stages[-1].module)


def _token_info(net) -> BackboneInfo:
    """Stages are the blocks; the default top-down layer is the last block's ``norm1``: in a
    class-token ViT the last block's patch outputs never reach a class-token classifier's score (zero
    gradients), while its input (through attention) does; pytorch-grad-cam documents the same choice."""
    patch = net.patch_embed.patch_size[0]
    stages = tuple(Stage(f"blocks.{i}", net.num_features, patch) for i in range(len(net.blocks)))
    return BackboneInfo("tokens", stages, cam_layer=token_cam_layer(net), prefix_tokens=int(net.num_prefix_tokens))


def token_cam_layer(net: "nn.Module") -> str:
    """The last block's ``norm1`` (the block itself if it has none)."""
    last = f"blocks.{len(net.blocks) - 1}"
    return f"{last}.norm1" if hasattr(net.blocks[-1], "norm1") else last


def token_model(model: "nn.Module") -> Optional["nn.Module"]:
    """The timm token model in ``model`` (itself, or a WSOLModel's backbone), or None."""
    for candidate in (model, getattr(model, "backbone", None)):
        if candidate is not None and hasattr(candidate, "num_prefix_tokens") and hasattr(candidate, "patch_embed"):
            return candidate
    return None


def _input_size(net) -> tuple[int, int]:
    size = (getattr(net, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    return int(size[1]), int(size[2])


def _architecture(name: str) -> tuple[str, dict]:
    """(timm architecture, its model args) of a timm name, or of an ``hf-hub:`` model from its cached
    ``config.json`` (never downloaded here)."""
    from wsolctl.models.weights import HubWeights, cached_file

    if not name.startswith(HF_HUB):
        return name, {}
    weights = HubWeights.of(name)
    path = cached_file(weights.repo_id, "config.json", weights.revision)
    if path is None:
        raise NotCached(f"backbone {name!r}: its config.json is not in the hub cache ({weights.cache}); "
                        f"run `wsolctl weights fetch RECIPE` to download it")
    try:
        config = json.loads(path.read_text())
        return config["architecture"], dict(config.get("model_args") or {})
    except (ValueError, KeyError) as exc:
        raise InputError(f"backbone {name!r}: unreadable timm config {path}: {exc}") from None


def timm_backbone(name: str) -> type[Backbone]:
    """The backbone class of a timm name or ``hf-hub:org/name``."""
    import timm

    from wsolctl.errors import UnknownPlugin
    from wsolctl.plugins import registered, suggest

    if not name.startswith(HF_HUB) and not timm.is_model(name.split(".")[0]):
        choices = sorted(registered("backbones")) + timm.list_models("resnet*") + timm.list_models("vit_*")
        raise UnknownPlugin(f"unknown backbone {name!r} (neither a wsolctl plugin, a timm model nor "
                            f"hf-hub:org/name){suggest(name, choices)}")
    return type("TimmBackbone", (TimmBackbone,), {"model_name": name, "name": name})

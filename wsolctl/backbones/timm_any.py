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
``hf-hub:`` name it needs the model's ``config.json`` in the hub cache and never downloads it. Its
normalisation is the one timm records for the weights: the model's pretrained config (timm names)
or the ``pretrained_cfg`` of the hub ``config.json`` (``hf-hub:`` names), ImageNet's when absent.

``params.model_args`` are further ``timm.create_model`` arguments (a model card's ``init_values``,
``reg_tokens``...). Arguments that take a layer (``mlp_layer``, ``act_layer``, ``norm_layer``) are
given by name from a fixed list of timm / torch layers (:data:`LAYERS`): a recipe never imports.
"""
from __future__ import annotations

import importlib
import json
from functools import lru_cache
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wsolctl._lazy import nn, torch
from wsolctl.backbones.base import Backbone, BackboneInfo, Stage, timm_model
from wsolctl.backbones.weights import HF_HUB
from wsolctl.errors import InputError, NotCached
from wsolctl.recipe.base import IMAGENET, Normalize

TOKEN_KWARGS = {"dynamic_img_size": True, "dynamic_img_pad": True}
# The layers a recipe may name, and the module each comes from (the only imports model_args cause).
LAYERS = {"SwiGLUPacked": "timm.layers", "SwiGLU": "timm.layers", "GluMlp": "timm.layers", "Mlp": "timm.layers",
          "RmsNorm": "timm.layers", "LayerNorm": "torch.nn", "SiLU": "torch.nn", "GELU": "torch.nn",
          "ReLU": "torch.nn", "Tanh": "torch.nn", "Identity": "torch.nn"}
LAYER_ARGS = ("mlp_layer", "act_layer", "norm_layer")
# create_model arguments wsolctl sets itself (the backbone has no classifier and takes any image size)
RESERVED_ARGS = ("num_classes", "global_pool", "dynamic_img_size", "dynamic_img_pad", "pretrained",
                 "pretrained_cfg", "pretrained_cfg_overlay", "features_only", "output_stride", "checkpoint_path")
Scalar = Union[bool, int, float, str, None]


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output_stride: int = Field(32, description="CNNs: output stride (timm ``output_stride``); ignored by token models")
    model_args: dict[str, Union[Scalar, list[Scalar]]] = Field(
        default_factory=dict, description="more timm.create_model arguments (e.g. init_values: 1.0e-5, reg_tokens: 8); "
        f"{', '.join(LAYER_ARGS)} take a layer name: {', '.join(LAYERS)}")

    @field_validator("model_args")
    @classmethod
    def _allowed(cls, args: dict) -> dict:
        check_model_args(args)
        return args


def check_model_args(args: dict) -> None:
    """ValueError for an argument wsolctl sets itself or a layer argument not naming an allowed layer."""
    for key, value in args.items():
        if key in RESERVED_ARGS:
            raise ValueError(f"{key!r} is set by wsolctl (the backbone has no classifier and takes any image size)")
        if key in LAYER_ARGS and value not in LAYERS:
            raise ValueError(f"{key}: {value!r} is not an allowed layer; choose from {', '.join(LAYERS)}")


def resolve_layers(args: dict) -> dict:
    """``args`` with layer names replaced by the layers (from :data:`LAYERS` only)."""
    return {k: getattr(importlib.import_module(LAYERS[v]), v) if k in LAYER_ARGS else v for k, v in args.items()}


class TimmBackbone(Backbone):
    """A timm model by name; subclasses (or :func:`timm_backbone`) set ``model_name``."""

    Params = TimmParams
    model_name = ""

    @property
    def pretrained_name(self) -> str:
        return self.model_name

    def info(self) -> BackboneInfo:
        return describe(self.architecture, self._output_stride(), json.dumps(self.model_args(), sort_keys=True))

    def _output_stride(self) -> Optional[int]:
        return getattr(self.params, "output_stride", None)

    def model_args(self) -> dict[str, Any]:
        """create_model arguments beyond the name, layers by name (``params.model_args``)."""
        return dict(getattr(self.params, "model_args", {}))

    def build(self, pretrained=False):
        name = self.model_name if pretrained is True else self.architecture  # a local file: no hub at all
        if name.startswith(HF_HUB):
            from wsolctl.backbones.weights import HubWeights, ensure_cached

            ensure_cached(HubWeights.of(name, weights=False))  # the config says what to build
        info = self.info()
        kwargs = TOKEN_KWARGS if info.kind == "tokens" else _cnn_kwargs(self._output_stride())
        args = resolve_layers(self.model_args())
        net = timm_model(name, pretrained, num_classes=0, global_pool="", **args, **kwargs)
        from wsolctl.backbones.featuremap import FeatureMap

        return FeatureMap(net, info)


def _cnn_kwargs(output_stride: Optional[int]) -> dict:
    return {} if output_stride in (None, 32) else {"output_stride": output_stride}


@lru_cache(maxsize=None)
def describe(name: str, output_stride: Optional[int] = None, model_args: str = "{}") -> BackboneInfo:
    """The declaration of a timm model, from a weightless (``meta`` device) build; ``model_args``:
    more create_model arguments as JSON, layers by name."""
    arch, config_args, hub_cfg = _architecture(name)
    import timm

    args = {**config_args, **resolve_layers(json.loads(model_args)), "num_classes": 0, "global_pool": ""}
    with torch.device("meta"):
        net = timm.create_model(arch, pretrained=False, **args)
        size = _input_size(net)
        out = net.forward_features(torch.empty(1, 3, *size))
    normalize = _normalization(name, hub_cfg if hub_cfg is not None else getattr(net, "pretrained_cfg", None))
    if out.dim() == 3:
        return _token_info(net, normalize)
    if out.dim() != 4:
        raise InputError(f"backbone {name!r}: timm's forward_features gives a {out.dim()}-D output, not a feature map")
    stages = tuple(Stage(f["module"], f["num_chs"], f["reduction"]) for f in getattr(net, "feature_info", []))
    if output_stride not in (None, 32):
        stages = tuple(Stage(s.module, s.channels, min(s.reduction, output_stride)) for s in stages)
    if not stages or stages[-1].channels != out.shape[1]:
        stages += (Stage("", out.shape[1], size[0] // out.shape[-2]),)
    return BackboneInfo("cnn", stages, cam_layer=stages[-1].module, normalize=normalize)


def _normalization(name: str, cfg: Optional[dict]) -> Normalize:
    """The mean and std of a timm pretrained config; ImageNet's where it records none (as timm's
    ``resolve_data_config``)."""
    cfg = cfg or {}
    try:
        return Normalize(mean=tuple(cfg.get("mean", IMAGENET.mean)), std=tuple(cfg.get("std", IMAGENET.std)))
    except (TypeError, ValueError):
        raise InputError(f"backbone {name!r}: its pretrained config's mean {cfg.get('mean')} / std {cfg.get('std')} "
                         "are not 3 channels (std > 0); set backbones[].normalize") from None


def _token_info(net, normalize: Normalize) -> BackboneInfo:
    """Stages are the blocks; the default top-down layer is the last block's ``norm1``: in a
    class-token ViT the last block's patch outputs never reach a class-token classifier's score (zero
    gradients), while its input (through attention) does; pytorch-grad-cam documents the same choice."""
    patch = net.patch_embed.patch_size[0]
    stages = tuple(Stage(f"blocks.{i}", net.num_features, patch) for i in range(len(net.blocks)))
    return BackboneInfo("tokens", stages, cam_layer=token_cam_layer(net), prefix_tokens=int(net.num_prefix_tokens),
                        normalize=normalize)


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
    """The size the model is built for: its patch embedding's (a card's ``img_size`` may differ from
    the architecture's pretrained config), else its pretrained config's input size."""
    size = getattr(getattr(net, "patch_embed", None), "img_size", None)
    if size is not None:
        return int(size[0]), int(size[1])
    size = (getattr(net, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))
    return int(size[1]), int(size[2])


def _architecture(name: str) -> tuple[str, dict, Optional[dict]]:
    """(timm architecture, its model args, the hub's pretrained config) of a timm name (no hub
    config), or of an ``hf-hub:`` model from its cached ``config.json`` (never downloaded here)."""
    from wsolctl.backbones.weights import HubWeights, cached_file

    if not name.startswith(HF_HUB):
        return name, {}, None
    weights = HubWeights.of(name)
    path = cached_file(weights.repo_id, "config.json", weights.revision)
    if path is None:
        raise NotCached(f"backbone {name!r}: its config.json is not in the hub cache ({weights.cache}); "
                        f"run `wsolctl weights fetch RECIPE` to download it")
    try:
        config = json.loads(path.read_text())
        return config["architecture"], dict(config.get("model_args") or {}), dict(config.get("pretrained_cfg") or {})
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
    return type("TimmBackbone", (TimmBackbone,), {"model_name": name, "name": name, "file_normalization_known": False})

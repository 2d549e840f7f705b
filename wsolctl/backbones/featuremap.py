"""The module of a :class:`~wsolctl.backbones.timm_any.TimmBackbone` (imports torch, unlike timm_any)."""
from __future__ import annotations

import torch
from torch import nn

from wsolctl.backbones.base import BackboneInfo


def token_grid(model: "nn.Module", size) -> tuple[int, int]:
    """(h, w) patch grid of a timm token model for an image of ``size`` (H, W)."""
    embed = model.patch_embed
    if hasattr(embed, "dynamic_feat_size"):
        return tuple(embed.dynamic_feat_size(tuple(size)))
    return tuple(embed.grid_size)


def tokens_to_map(tokens: "torch.Tensor", prefix: int, grid: tuple[int, int]) -> "torch.Tensor":
    """(N, prefix + h·w, C) tokens → (N, C, h, w) patch map."""
    patches = tokens[:, prefix:]
    h, w = grid
    if patches.shape[1] != h * w:
        raise RuntimeError(f"expected {h}×{w} patch tokens after {prefix} prefix token(s), got {patches.shape[1]}")
    return patches.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class FeatureMap(nn.Module):
    """A timm model's ``forward_features`` as an (N, C, h, w) map. The model's parameters and
    children are adopted as this module's own, so paths and state-dict keys stay timm's; the model
    object is kept outside the module tree (``_net``) only to call its ``forward_features``."""

    def __init__(self, net: nn.Module, info: BackboneInfo):
        super().__init__()
        if any(True for _ in net.named_buffers(recurse=False)):
            raise ValueError(f"{type(net).__name__} has top-level buffers; it cannot be used as a backbone")
        object.__setattr__(self, "_net", net)
        for name, param in net.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, child in net.named_children():
            self.add_module(name, child)
        self.tokens = info.kind == "tokens"
        self.num_prefix_tokens = info.prefix_tokens
        self.out_channels = info.out_channels

    def forward(self, x):
        features = self._net.forward_features(x)
        if not self.tokens:
            return features
        return tokens_to_map(features, self.num_prefix_tokens, token_grid(self, x.shape[-2:]))

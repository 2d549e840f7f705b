"""The module of a :class:`~wsolctl.models.timm_any.TimmBackbone` (imports torch, unlike timm_any)."""
from __future__ import annotations

from torch import nn

from wsolctl.models.base import BackboneInfo
from wsolctl.models.timm_any import token_grid, tokens_to_map


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

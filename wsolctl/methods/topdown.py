"""Shared base of top-down methods: train the CAM classifier (GAP + linear), explain it afterwards
with gradients at a backbone layer (Captum). Each method only says how it turns the layer into maps."""
from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import torch
from wsolctl.methods.cam import CAM


class LayerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: Optional[str] = Field(None, description="dotted module name in the backbone; default: the backbone's CAM layer")


class TopDownMethod(CAM):
    """Subclasses implement :meth:`attribute` on a Captum-style ``forward_func`` and layer."""

    kind = "top-down"
    Params = LayerParams

    def cams(self, model, images, targets):
        layer = model.backbone.get_submodule(self.params.layer or model.cam_layer)

        def forward_func(x):
            return model(x).logits

        with torch.enable_grad():
            maps = self.attribute(forward_func, layer, images, targets)
        return maps.detach()

    def attribute(self, forward_func, layer, images, targets):
        raise NotImplementedError

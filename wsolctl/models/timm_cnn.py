"""Any timm CNN as a backbone, by its timm name (e.g. ``resnet18``, ``efficientnet_b0``), at its
native output stride. Used when a recipe names a backbone that no plugin registers."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from wsolctl.models.base import Backbone, sequential, timm_model


class TimmParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    output_stride: int = 32


def timm_backbone(name: str) -> type[Backbone]:
    import timm

    from wsolctl.errors import UnknownPlugin
    from wsolctl.plugins import registered, suggest

    if name not in timm.list_models():
        choices = sorted(registered("backbones")) + timm.list_models("resnet*")
        raise UnknownPlugin(f"unknown backbone {name!r} (neither a wsolctl plugin nor a timm model){suggest(name, choices)}")

    class TimmCNN(Backbone):
        Params = TimmParams
        cam_layer = "features"
        classifier_prefixes = ()

        def build(self, pretrained=False):
            net = timm_model(name, pretrained, num_classes=0, global_pool="",
                             output_stride=self.params.output_stride)
            if not hasattr(net, "forward_features"):
                raise ValueError(f"timm model {name!r} has no forward_features")
            return sequential([("features", _ForwardFeatures(net))], net.num_features)

    TimmCNN.name = name
    return TimmCNN


def _ForwardFeatures(net):
    from torch import nn

    class ForwardFeatures(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_features(x)

    return ForwardFeatures()

"""Global max pooling over 1x1-conv class maps (the survey's MAX-Pool), as a third-party plugin.

Everything wsolctl needs is in this class: a params model, the head, the forward pass. Training,
evaluation, selection and reports come from the shared engine.
"""
from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import nn
from wsolctl.methods.base import Method, Output


class MaxPoolParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dropout: float = Field(0.0, ge=0, lt=1, description="channel dropout before the 1x1 conv")


class MaxPool(Method):
    """1x1 conv class maps, global max pooling (example plugin)."""

    kind = "bottom-up"
    Params = MaxPoolParams

    def build_head(self, in_channels, num_classes):
        return nn.Sequential(nn.Dropout2d(self.params.dropout), nn.Conv2d(in_channels, num_classes, 1))

    def forward(self, model, images, labels=None):
        maps = model.head(model.backbone(images))
        return Output(logits=maps.amax(dim=(2, 3)), class_maps=maps)

"""CAM (Zhou et al., 2016): global average pooling, a linear classifier, and the class map
M_c = Σ_k w_ck · A_k computed from that classifier's weights (no bias, no ReLU; the evaluation
min-max normalises each map)."""
from __future__ import annotations

from wsolctl._lazy import nn, torch
from wsolctl.methods.base import Method, Output


class CAM(Method):
    survey_rank = 4
    in_survey = True
    kind = "bottom-up"
    trains_on_features = True  # head(backbone(images)): so do the top-down methods that explain it

    def training_key(self) -> dict:
        # The GAP + linear classifier is what top-down methods explain, so they can share it.
        return {"head": "wgap"}

    def build_head(self, in_channels: int, num_classes: int):
        return nn.Linear(in_channels, num_classes)

    def forward(self, model, images, labels=None) -> Output:
        features = model.backbone(images)
        logits = model.head(features.mean(dim=(2, 3)))
        class_maps = torch.einsum("kc,nchw->nkhw", model.head.weight, features)
        return Output(logits=logits, class_maps=class_maps)

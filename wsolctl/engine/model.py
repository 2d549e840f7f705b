"""A backbone plus a method's head, as one ``nn.Module``."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from wsolctl.methods.base import Method, Output


class WSOLModel(nn.Module):
    def __init__(self, backbone: nn.Module, method: Method, num_classes: int, cam_layer: str,
                 classifier_prefixes: tuple[str, ...] = (), frozen: Sequence[nn.Module] = ()):
        """``frozen``: the backbone's frozen modules (``wsolctl.models.freeze``), kept in eval mode."""
        super().__init__()
        self.backbone = method.adapt_backbone(backbone)
        self.head = method.build_head(backbone.out_channels, num_classes)
        self.method = method
        self.cam_layer = cam_layer
        self.classifier_prefixes = classifier_prefixes
        self.frozen = list(frozen)  # a plain list: the modules stay registered once, under backbone

    def train(self, mode: bool = True) -> "WSOLModel":
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Output:
        return self.method.forward(self, images, labels)

    def param_groups(self, lr: float, ratio: float) -> list[dict]:
        """The head and the backbone's classifier-side layers train at ``lr × ratio`` (survey);
        frozen parameters (``requires_grad=False``) are left out."""
        fast, slow = [], []
        for name, param in self.backbone.named_parameters():
            if param.requires_grad:
                (fast if name.startswith(self.classifier_prefixes) else slow).append(param)
        fast += [p for p in self.head.parameters() if p.requires_grad]
        return [g for g in ({"params": slow, "lr": lr}, {"params": fast, "lr": lr * ratio}) if g["params"]]

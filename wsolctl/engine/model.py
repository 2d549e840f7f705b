"""A backbone plus a method's head, as one ``nn.Module``."""
from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch
from torch import nn

from wsolctl.backbones.base import BackboneInfo
from wsolctl.methods.base import Method, Output


def adapt(method: Method, backbone: nn.Module, info: BackboneInfo) -> nn.Module:
    """``method.adapt_backbone(backbone, info)``; a plugin written for the one-argument form (plugin
    API 2 before the declaration was passed) gets ``backbone`` only."""
    if len(inspect.signature(method.adapt_backbone).parameters) < 2:
        return method.adapt_backbone(backbone)
    return method.adapt_backbone(backbone, info)


class WSOLModel(nn.Module):
    def __init__(self, backbone: nn.Module, method: Method, num_classes: int, info: BackboneInfo,
                 classifier_prefixes: tuple[str, ...] = (), frozen: Sequence[nn.Module] = (),
                 decoder_at_classifier_lr: bool = True):
        """``info``: the backbone's declaration; ``frozen``: the backbone's frozen modules
        (``wsolctl.backbones.freeze``), kept in eval mode; the last two: the backbone's lr groups."""
        super().__init__()
        self.backbone = adapt(method, backbone, info)
        self.head = method.build_head(backbone.out_channels, num_classes)
        self.method = method
        self.info = info  # the backbone's declaration (stages, CAM layer...), for whoever explains the model
        self.cam_layer = info.cam_layer
        self.classifier_prefixes = classifier_prefixes
        self.decoder_at_classifier_lr = decoder_at_classifier_lr
        self.frozen = list(frozen)  # a plain list: the modules stay registered once, under backbone

    def train(self, mode: bool = True) -> "WSOLModel":
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, images: torch.Tensor, labels: Optional[torch.Tensor] = None) -> Output:
        return self.method.forward(self, images, labels)

    def param_groups(self, lr: float, ratio: float) -> list[dict]:
        """The head and the backbone's classifier-side layers train at ``lr × ratio`` (survey), a
        decoder head at the lr its backbone declares, everything at ``lr`` for a ``single_lr`` method;
        frozen parameters (``requires_grad=False``) are left out."""
        method = self.method
        ratio = 1.0 if method.single_lr else ratio
        fast, slow = [], []
        for name, param in self.backbone.named_parameters():
            if param.requires_grad:
                (fast if name.startswith(self.classifier_prefixes) else slow).append(param)
        head_fast = not method.head_is_decoder or self.decoder_at_classifier_lr
        (fast if head_fast else slow).extend(p for p in self.head.parameters() if p.requires_grad)
        return [g for g in ({"params": slow, "lr": lr}, {"params": fast, "lr": lr * ratio}) if g["params"]]

"""ResNets with the survey's WSOL layout: layer3 and layer4 at stride 1 (output stride 8, a
28×28 CAM for a 224 input), no dilation (shared/reference/methods-and-protocol.md §3)."""
from __future__ import annotations

from wsolctl.backbones.base import TORCHVISION, Backbone, BackboneInfo, Stage, sequential, set_stride_one, timm_model
from wsolctl.backbones.taps import resnet_taps

_STEM = ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4")


class _ResNetWSOL(Backbone):
    """``pretrained: true`` loads torchvision's ImageNet weights, the survey's starting point (timm's
    ``tv_in1k`` tag of ``arch``, not timm's default tag): the stride change alters no parameter shape."""

    arch = ""
    width = 64  # channels of layer1; ×2 per stage (× 4 more for bottleneck ResNets)
    classifier_prefixes = ("layer4",)
    decoder_at_classifier_lr = False  # the reference's patterns name layer4 + the classifier: a decoder is at lr

    @property
    def pretrained_name(self) -> str:
        return f"{self.arch}.{TORCHVISION}"

    def info(self) -> BackboneInfo:
        # The stem (act1) and the four layers, as timm's feature_info and the survey's U-Net encoder list them.
        channels = [self.width * 2 ** i for i in range(4)]
        stages = tuple(Stage(f"layer{i + 1}", c, r) for i, (c, r) in enumerate(zip(channels, (4, 8, 8, 8))))
        return BackboneInfo("cnn", (Stage("act1", 64, 2), *stages), cam_layer="layer4", layout="resnet", wsol_taps=resnet_taps)

    def build(self, pretrained=False):
        net = timm_model(self.pretrained_name, pretrained, num_classes=0, global_pool="")
        set_stride_one([net.layer3[0], net.layer4[0]])
        return sequential(((n, getattr(net, n)) for n in _STEM), net.num_features)


class ResNet50WSOL(_ResNetWSOL):
    arch = "resnet50"
    title, survey_rank = "ResNet50", 3
    width = 256


class ResNet18WSOL(_ResNetWSOL):
    """A small CPU-friendly member of the same family (not in the survey)."""

    arch = "resnet18"
    title, survey_rank = "ResNet18", 4

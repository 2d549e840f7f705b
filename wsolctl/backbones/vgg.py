"""VGG16 as in the survey's WSOL code: the 13 conv layers with pool4 and pool5 removed (three
max-pools, output stride 8), then conv6 (3×3, 512→1024) + ReLU. CAM layer: that ReLU."""
from __future__ import annotations

from wsolctl._lazy import nn
from wsolctl.backbones.base import TORCHVISION, Backbone, BackboneInfo, Stage, sequential, timm_model
from wsolctl.backbones.taps import vgg_taps

# One stage per resolution, split at the kept max-pools as timm's feature_info and the survey's U-Net
# encoder split VGG: the ReLU ahead of pool1, pool2 and pool3, then everything after pool3 (conv4_*,
# conv5_*, conv6) up to relu6.
_STAGES = (Stage("features.3", 64, 1), Stage("features.8", 128, 2), Stage("features.15", 256, 4),
           Stage("relu6", 1024, 8))


class VGG16WSOL(Backbone):
    """``pretrained: true`` loads torchvision's ImageNet ``vgg16`` (timm's ``tv_in1k``, the survey's)
    into the 13 conv layers; conv6 is new."""

    pretrained_name = f"vgg16.{TORCHVISION}"
    title, survey_rank = "VGG16", 1
    classifier_prefixes = ("conv6",)

    def info(self) -> BackboneInfo:
        return BackboneInfo("cnn", _STAGES, cam_layer="relu6", layout="vgg", wsol_taps=vgg_taps)

    def build(self, pretrained=False):
        net = timm_model(self.pretrained_name, pretrained, num_classes=0)
        layers = list(net.features.children())
        pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        kept = [m for i, m in enumerate(layers) if i not in pools[3:]]  # drop pool4, pool5
        return sequential(
            [("features", nn.Sequential(*kept)),
             ("conv6", nn.Conv2d(512, 1024, kernel_size=3, padding=1)),
             ("relu6", nn.ReLU(inplace=False))],
            out_channels=1024,
        )

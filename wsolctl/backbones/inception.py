"""InceptionV3 as in the survey's WSOL code (from SPG): Mixed_6a at stride 1 with 'same' padding,
Mixed_7* removed, then two extra 3×3 conv layers (SPG_A3_1b/2b, 768→1024→1024, ReLU, dropout
0.5 before each). Output stride 8; CAM layer: the last extra ReLU.

Paddings as the reference's: every 3×3 convolution of the stem and both stem max-pools pad by 1
(timm's, like torchvision's, have valid paddings there), so a 224 input gives 112/56/28/28/28 px at
the five stages (timm's paddings gave 109/54/25/25/25, and a decoder ending at 218 px). No parameter
shape changes, so ImageNet weights load as before."""
from __future__ import annotations

from wsolctl._lazy import F, nn, torch
from wsolctl.backbones.base import TORCHVISION, Backbone, BackboneInfo, Stage, sequential, timm_model
from wsolctl.backbones.taps import inception_taps


def _mixed_6a_stride_one(block: "nn.Module") -> "nn.Module":
    """timm's InceptionB (Mixed_6a) pools with a functional stride-2 max-pool, so wrap it."""
    for conv in (block.branch3x3.conv, block.branch3x3dbl_3.conv):
        conv.stride, conv.padding = (1, 1), (1, 1)

    class Stride1InceptionB(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = block

        def forward(self, x):
            b = self.block
            pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
            return torch.cat([b.branch3x3(x), b.branch3x3dbl_3(b.branch3x3dbl_2(b.branch3x3dbl_1(x))), pool], 1)

    return Stride1InceptionB()


def _same_padding_stem(net: "nn.Module") -> None:
    """The reference's stem: its valid 3×3 convolutions and 3×3 max-pools pad by 1."""
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_4a_3x3"):
        getattr(net, name).conv.padding = (1, 1)
    for name in ("Pool1", "Pool2"):
        getattr(net, name).padding = 1


def _extra(in_ch: int) -> "nn.Sequential":
    return nn.Sequential(nn.Dropout(0.5), nn.Conv2d(in_ch, 1024, 3, padding=1), nn.ReLU(inplace=False))


class InceptionV3WSOL(Backbone):
    """``pretrained: true`` loads torchvision's ImageNet ``inception_v3`` (timm's ``tv_in1k``, the
    survey's ``inception_v3_google`` file) up to Mixed_6e; the SPG layers are new."""

    pretrained_name = f"inception_v3.{TORCHVISION}"
    title, survey_rank = "InceptionV3", 2
    classifier_prefixes = ("SPG_A3_1b", "SPG_A3_2b")

    def info(self) -> BackboneInfo:
        # The survey's U-Net encoder stages (its stage_idxs (3, 5, 9, 15)): the stem to Conv2d_2b, Pool1 +
        # Conv2d_3b, Conv2d_4a + Pool2 + Mixed_5b/5c, Mixed_5d..6e, the two SPG layers.
        stages = (Stage("Conv2d_2b_3x3", 64, 2), Stage("Conv2d_3b_1x1", 80, 4), Stage("Mixed_5c", 288, 8),
                  Stage("Mixed_6e", 768, 8), Stage("SPG_A3_2b", 1024, 8))
        return BackboneInfo("cnn", stages, cam_layer="SPG_A3_2b.2", layout="inception", wsol_taps=inception_taps)

    def build(self, pretrained=False):
        net = timm_model(self.pretrained_name, pretrained, num_classes=0)
        _same_padding_stem(net)
        children = []
        for name, module in net.named_children():
            if name.startswith("Mixed_7"):
                break
            children.append((name, _mixed_6a_stride_one(module) if name == "Mixed_6a" else module))
        children += [("SPG_A3_1b", _extra(768)), ("SPG_A3_2b", _extra(1024))]
        return sequential(children, out_channels=1024)

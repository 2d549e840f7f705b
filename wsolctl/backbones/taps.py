"""Where the survey's WSOL methods reach into a backbone (ADL's layers, SPG's taps), relative to its
declared stages: a backbone of the survey's WSOL family declares its function here in its
:class:`~wsolctl.backbones.base.BackboneInfo` (``wsol_taps``); ADL and SPG call it on the built module
(:func:`wsolctl.methods.layout.wsol_taps`), never reading its modules' names. The positions are the
reference's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from wsolctl._lazy import nn

if TYPE_CHECKING:
    from wsolctl.backbones.base import BackboneInfo


@dataclass(frozen=True)
class Taps:
    adl: tuple[str, str, str]  # module paths ADL layers go after
    spg: tuple[str, str]  # module paths whose outputs feed SPG's B1 and B2
    spg_width: Optional[int]  # SPG's B-branch width; None: the B2 tap's channels


def _parent(backbone: "nn.Module", path: str) -> tuple[str, "nn.Module", str]:
    parent_path, _, name = path.rpartition(".")
    return parent_path, backbone.get_submodule(parent_path) if parent_path else backbone, name


def sibling(backbone: "nn.Module", path: str, offset: int, kind: Optional[type] = None) -> str:
    """The module ``offset`` places after ``path`` (before it when negative) among its parent's
    children, counting only modules of type ``kind`` when given."""
    parent_path, parent, name = _parent(backbone, path)
    names = list(parent._modules)
    start = names.index(name)
    side = names[start + 1:] if offset > 0 else names[:start][::-1]
    matches = [n for n in side if kind is None or isinstance(parent._modules[n], kind)]
    if abs(offset) > len(matches):
        raise ValueError(f"{path!r} has fewer than {abs(offset)} such modules beside it")
    return f"{parent_path}.{matches[abs(offset) - 1]}" if parent_path else matches[abs(offset) - 1]


def child(backbone: "nn.Module", path: str, index: int) -> str:
    """The ``index``-th child (negative: from the end) of the module at ``path``."""
    return f"{path}.{list(backbone.get_submodule(path)._modules)[index]}"


def resnet_taps(backbone: "nn.Module", info: "BackboneInfo") -> Taps:
    """ResNet (stages: stem, layer1..layer4): ADL after the first block of the last-but-one stage and
    after the first and last blocks of the last one; SPG taps the first block of the last-but-one
    stage and that stage; SPG's B-branch width is the tapped channels (1024 on ResNet50)."""
    third, last = info.stages[-2].module, info.stages[-1].module
    return Taps((child(backbone, third, 0), child(backbone, last, 0), child(backbone, last, -1)),
                (child(backbone, third, 0), third), None)


def vgg_taps(backbone: "nn.Module", info: "BackboneInfo") -> Taps:
    """VGG (stages end ahead of pool1, pool2, pool3, then conv6's ReLU): ADL after pool3 (the first
    max-pool after the 1/4 stage) and after conv4_3 and conv5_3 (the 3rd and 6th ReLU after it); SPG
    taps conv4_3 and conv5_3; B-branch width 512 (the reference's constant)."""
    quarter = next(s.module for s in info.stages if s.reduction == 4)
    conv4_3, conv5_3 = sibling(backbone, quarter, 3, nn.ReLU), sibling(backbone, quarter, 6, nn.ReLU)
    return Taps((sibling(backbone, quarter, 1, nn.MaxPool2d), conv4_3, conv5_3), (conv4_3, conv5_3), 512)


def inception_taps(backbone: "nn.Module", info: "BackboneInfo") -> Taps:
    """InceptionV3 (stages end at Conv2d_2b, Conv2d_3b, Mixed_5c, Mixed_6e, SPG_A3_2b): ADL after the
    module following the 1/8 stage (Mixed_5d), the last-but-one and the last stage; SPG taps Mixed_5d
    and the module ahead of the last-but-one stage (Mixed_6d); B-branch width 512."""
    stages = [s.module for s in info.stages]
    mixed_5d = sibling(backbone, next(s.module for s in info.stages if s.reduction == 8), 1)
    return Taps((mixed_5d, stages[-2], stages[-1]), (mixed_5d, sibling(backbone, stages[-2], -1)), 512)

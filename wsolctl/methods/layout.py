"""Where the survey's WSOL methods reach into a backbone (ADL's layers, SPG's taps), found from the
backbone's declaration only (:class:`wsolctl.models.base.BackboneInfo`: its stages and its stage
``layout``), never from its modules' names.

The positions are the reference's, expressed relative to the declared stages:

- ``resnet`` (stages: stem, layer1..layer4): ADL after the first block of the last-but-one stage and
  after the first and last blocks of the last one; SPG taps the first block of the last-but-one
  stage and that stage; SPG's B-branch width is the tapped channels (1024 on ResNet50).
- ``vgg`` (stages end ahead of pool1, pool2, pool3, then conv6's ReLU): ADL after pool3 (the first
  max-pool after the 1/4 stage) and after conv4_3 and conv5_3 (the 3rd and 6th ReLU after it); SPG
  taps conv4_3 and conv5_3; B-branch width 512 (the reference's constant).
- ``inception`` (stages end at Conv2d_2b, Conv2d_3b, Mixed_5c, Mixed_6e, SPG_A3_2b): ADL after the
  module following the 1/8 stage (Mixed_5d), the last-but-one and the last stage; SPG taps Mixed_5d
  and the module ahead of the last-but-one stage (Mixed_6d); B-branch width 512.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from wsolctl._lazy import nn

if TYPE_CHECKING:
    from wsolctl.models.base import BackboneInfo

# The stage layouts of the survey's WSOL backbones, which ADL and SPG reach into.
WSOL_LAYOUTS = ("resnet", "vgg", "inception")


@dataclass(frozen=True)
class Taps:
    adl: tuple[str, str, str]  # module paths ADL layers go after
    spg: tuple[str, str]  # module paths whose outputs feed SPG's B1 and B2
    spg_width: Optional[int]  # SPG's B-branch width; None: the B2 tap's channels


def wsol_layout_only(info: "BackboneInfo", why: str) -> Optional[str]:
    """``unsupported`` reason for methods that reach into the WSOL backbones' stage layouts."""
    if info.layout in WSOL_LAYOUTS:
        return None
    return (f"{why}; the backbone declares no such stage layout (the survey's WSOL backbones do: "
            "resnet18-wsol, resnet50-wsol, vgg16-wsol, inceptionv3-wsol)")


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


def wsol_taps(backbone: "nn.Module", info: "BackboneInfo") -> Taps:
    """ADL's and SPG's positions in ``backbone`` from its declaration (see the module's docstring)."""
    stages = [s.module for s in info.stages]
    if info.layout == "resnet":
        third, last = stages[-2], stages[-1]
        return Taps((child(backbone, third, 0), child(backbone, last, 0), child(backbone, last, -1)),
                    (child(backbone, third, 0), third), None)
    if info.layout == "vgg":
        quarter = next(s.module for s in info.stages if s.reduction == 4)
        conv4_3, conv5_3 = sibling(backbone, quarter, 3, nn.ReLU), sibling(backbone, quarter, 6, nn.ReLU)
        return Taps((sibling(backbone, quarter, 1, nn.MaxPool2d), conv4_3, conv5_3), (conv4_3, conv5_3), 512)
    if info.layout == "inception":
        mixed_5d = sibling(backbone, next(s.module for s in info.stages if s.reduction == 8), 1)
        return Taps((mixed_5d, stages[-2], stages[-1]), (mixed_5d, sibling(backbone, stages[-2], -1)), 512)
    raise ValueError(f"no ADL / SPG positions for stage layout {info.layout!r}")

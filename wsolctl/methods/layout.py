"""Where the survey's WSOL methods reach into a backbone (ADL's layers, SPG's taps): what the backbone
declares (:class:`wsolctl.backbones.base.BackboneInfo`'s ``wsol_taps``, :mod:`wsolctl.backbones.taps`),
never its modules' names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from wsolctl._lazy import nn
    from wsolctl.backbones.base import BackboneInfo
    from wsolctl.backbones.taps import Taps


def wsol_layout_only(info: "BackboneInfo", why: str) -> Optional[str]:
    """``unsupported`` reason for methods that reach into the WSOL backbones' stages."""
    if info.wsol_taps is not None:
        return None
    return (f"{why}; the backbone declares no ADL / SPG positions (the survey's WSOL backbones do: "
            "resnet18-wsol, resnet50-wsol, vgg16-wsol, inceptionv3-wsol)")


def wsol_taps(backbone: "nn.Module", info: "BackboneInfo") -> Taps:
    """ADL's and SPG's positions in ``backbone``, as its declaration gives them."""
    if info.wsol_taps is None:
        raise ValueError(wsol_layout_only(info, "no ADL / SPG positions"))
    return info.wsol_taps(backbone, info)

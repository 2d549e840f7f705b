"""Frozen encoders (``backbones[].freeze``), as foundation models are used: ``true`` freezes the whole
backbone, ``N`` the stem and the first N declared stages (CNN) or blocks (ViT)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Union

from wsolctl.backbones.base import BackboneInfo

if TYPE_CHECKING:
    from torch import nn


def freeze(backbone: "nn.Module", info: BackboneInfo, how: Union[bool, int]) -> list["nn.Module"]:
    """Set ``requires_grad=False`` on the frozen parameters (autograd then records nothing for the
    frozen part, and the optimizer leaves them out) and return the largest fully frozen modules,
    which the model keeps in eval mode (BatchNorm statistics, dropout)."""
    if how is False:
        return []
    names = [name for name, _ in backbone.named_modules()]
    if how is True:
        end = len(names)
    else:
        if how > len(info.stages):
            raise ValueError(f"freeze: {how} but the backbone declares {len(info.stages)} stages")
        if how == 0:
            return []
        last = info.stages[how - 1].module
        start = names.index(last)
        end = next((j for j in range(start + 1, len(names)) if not names[j].startswith(last + ".")), len(names))
    owners = set(names[:end])
    for name, param in backbone.named_parameters():
        if name.rpartition(".")[0] in owners:
            param.requires_grad_(False)
    return _frozen_roots(backbone)


def _frozen_roots(backbone: "nn.Module") -> list["nn.Module"]:
    roots: list[str] = []
    for name, module in backbone.named_modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params) and not any(_under(name, r) for r in roots):
            roots.append(name)
    return [backbone.get_submodule(name) for name in roots]


def _under(name: str, root: str) -> bool:
    return root == "" or name == root or name.startswith(root + ".")

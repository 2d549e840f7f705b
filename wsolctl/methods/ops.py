"""Small tensor helpers shared by several methods (torch imported lazily)."""
from __future__ import annotations

from wsolctl._lazy import torch


def minmax(maps: "torch.Tensor", eps: float = 1e-12) -> "torch.Tensor":
    """Min-max normalise each map over its last two dims to [0, 1]; a constant map becomes 0
    (the reference divides by max − min and gets NaN there)."""
    flat = maps.flatten(-2)
    low = flat.min(dim=-1, keepdim=True).values
    high = flat.max(dim=-1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(eps)).view_as(maps)


def select(maps: "torch.Tensor", classes: "torch.Tensor") -> "torch.Tensor":
    """``maps[i, classes[i]]`` for (N, C, h, w) maps → (N, h, w)."""
    return maps[torch.arange(len(classes), device=maps.device), classes]

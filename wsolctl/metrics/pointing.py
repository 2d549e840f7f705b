"""The pointing game, a ``wsolctl.metrics`` plugin (``pointing-game``).

**Pointing game** (Zhang et al., ECCV 2016, "Top-down neural attention by excitation backprop"):
a hit when the map's maximum lies in the ground-truth mask; the score is the % of hits over images
whose mask has foreground. Ties: when several pixels share the maximum, the image counts
``|argmax ∩ mask| / |argmax|`` (the expected hit under a uniformly random choice of the maximum);
so a constant map scores that image's ROI fraction. No tolerance margin (TorchRay uses 15 px).
"""
from __future__ import annotations

from wsolctl._lazy import torch
from wsolctl.metrics.base import Column, MeterContext, Metric, ReportTable


class PointingGame(Metric):
    """% of images whose map maximum lies in the mask."""

    description = "pointing game: % of images whose map maximum lies in the mask"
    columns = (Column("pointing_game", "pointing game"),)
    tables = (ReportTable("pointing_game", "Pointing game",
                          "% of images with foreground whose map maximum lies in the mask (ties count fractionally)"),)
    survey_rank = 30
    resampling = "values"

    @classmethod
    def meter(cls, context: MeterContext) -> "PointingGameMeter":
        return PointingGameMeter()


class PointingGameMeter:
    """Streamed pointing game (ties at the maximum count fractionally, see the module docstring)."""

    def __init__(self):
        self._hits = 0.0
        self._count = 0
        self._per_image: list = []

    def update(self, maps, masks, images=None, targets=None) -> None:
        maps, masks = torch.as_tensor(maps).detach(), torch.as_tensor(masks).detach().to(maps.device) != 0
        flat, fg = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
        at_max = flat == flat.amax(dim=1, keepdim=True)
        hit = (at_max & fg).sum(dim=1).double() / at_max.sum(dim=1).double()
        counted = fg.any(dim=1)
        self._per_image.append(torch.where(counted, 100.0 * hit, torch.nan).cpu())
        self._hits += float(hit[counted].sum())
        self._count += int(counted.sum())

    def per_image(self):
        """(N, 1): each image's hit in % (NaN: no foreground, not counted)."""
        return torch.cat(self._per_image).numpy()[:, None] if self._per_image else torch.zeros(0, 1).numpy()

    def compute(self) -> dict[str, float]:
        return {"pointing_game": 100.0 * self._hits / self._count if self._count else float("nan")}

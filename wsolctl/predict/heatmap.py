"""The slide heatmap: tiles' maps blended on a canvas at the heatmap's own downsample, normalised
once per slide, and written as a tiled pyramidal TIFF.

Blending: each tile's map is resized (bilinear) to its footprint on the canvas and accumulated with
a smooth weight ``w(u, v) = s(u)·s(v)``, ``s(t) = sin(π·(t + ½)/n)`` (never 0), so overlapping
tiles fade into each other; a pixel's value is ``Σ w·m / Σ w``. Without overlap every pixel has
one tile and keeps that tile's value exactly.

Normalisation (:func:`normalise`): probability maps (``map_kind = "probability"``) are kept as they
are (clipped to [0, 1]). CAM-type maps are min-max normalised **once per slide**, over the canvas
pixels that are tissue and covered by a predicted tile: ``(m − min) / (max − min)``; a constant map
becomes 0. Never per tile, which would make tiles incomparable. Pixels outside predicted tiles are 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

MAX_CELLS = 64  # at most this many heatmap pixels across one tile


def heatmap_downsample(footprint: int, map_side: int) -> float:
    """Level-0 pixels per heatmap pixel: the map's native stride on the slide, but never more than
    ``MAX_CELLS`` heatmap pixels across a tile (a full-resolution map would make the heatmap as
    large as the slide)."""
    return footprint / min(map_side, MAX_CELLS)


def _window(n: int) -> np.ndarray:
    s = np.sin(np.pi * (np.arange(n) + 0.5) / n).astype(np.float32)
    return np.outer(s, s)


class Canvas:
    """Weighted sums of tile maps, tissue and coverage at downsample ``ds`` (level-0 px per pixel)."""

    def __init__(self, width: int, height: int, ds: float, cells: int):
        self.ds, self.cells = ds, cells
        self.shape = (max(1, math.ceil(height / ds)), max(1, math.ceil(width / ds)))
        self.total = np.zeros(self.shape, np.float32)
        self.weight = np.zeros(self.shape, np.float32)
        self.tissue = np.zeros(self.shape, bool)
        self.window = _window(cells)

    def add(self, x: int, y: int, values: np.ndarray, tissue: np.ndarray) -> None:
        """Blend a tile's (cells, cells) map and tissue mask in at level-0 origin (x, y)."""
        r0, c0 = round(y / self.ds), round(x / self.ds)
        r1, c1 = min(self.shape[0], r0 + self.cells), min(self.shape[1], c0 + self.cells)
        if r1 <= r0 or c1 <= c0:
            return
        h, w = r1 - r0, c1 - c0
        weight = self.window[:h, :w]
        self.total[r0:r1, c0:c1] += weight * values[:h, :w]
        self.weight[r0:r1, c0:c1] += weight
        self.tissue[r0:r1, c0:c1] |= tissue[:h, :w]

    @property
    def covered(self) -> np.ndarray:
        return self.weight > 0

    def blended(self) -> np.ndarray:
        return np.divide(self.total, self.weight, out=np.zeros(self.shape, np.float32), where=self.weight > 0)


@dataclass(frozen=True)
class Normalisation:
    kind: str  # "probability" | "cam"
    low: float
    high: float

    def apply(self, values: np.ndarray) -> np.ndarray:
        if self.kind == "probability":
            return np.clip(values, 0.0, 1.0)
        span = self.high - self.low
        if not span > 0:
            return np.zeros_like(values)
        return np.clip((values - self.low) / span, 0.0, 1.0)

    def describe(self) -> dict:
        if self.kind == "probability":
            return {"kind": "probability", "how": "the method's probabilities, unchanged (clipped to [0, 1])"}
        return {"kind": "cam", "how": "min-max over the slide's tissue pixels covered by predicted tiles: "
                "(m - min) / (max - min); constant map -> 0", "min": self.low, "max": self.high}


def normalise(kind: str, raw: np.ndarray, region: np.ndarray) -> Normalisation:
    """The slide's normalisation of ``raw`` map values measured over ``region`` (bool)."""
    if kind == "probability" or not region.any():
        return Normalisation(kind, 0.0, 1.0 if kind == "probability" else 0.0)
    values = raw[region]
    return Normalisation(kind, float(values.min()), float(values.max()))


def write_tiff(path: Path, heat: np.ndarray, ds: float, mm_x: Optional[float], tile: int = 256) -> int:
    """``heat`` (float [0, 1]) as a tiled pyramidal single-channel uint8 TIFF (value × 255): level 0
    then 2× reductions as successive IFDs (``subfiletype=1``), the layout QuPath, ASAP, OpenSlide and
    large-image all read. Returns the number of levels."""
    import tifffile
    from PIL import Image

    level = np.round(np.clip(heat, 0, 1) * 255).astype(np.uint8)
    levels = [level]
    while max(levels[-1].shape) > tile or len(levels) < 2:
        h, w = levels[-1].shape
        levels.append(np.asarray(Image.fromarray(levels[-1]).resize((max(1, w // 2), max(1, h // 2)), Image.BOX)))
    with tifffile.TiffWriter(path, bigtiff=level.size > 2 ** 31) as tif:
        for index, array in enumerate(levels):
            extra = {}
            if mm_x:  # pixel size of this level, so viewers can align it with the slide
                per_cm = 10.0 / (mm_x * ds * levels[0].shape[1] / array.shape[1])
                extra = dict(resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
            tif.write(array, tile=(tile, tile), photometric="minisblack", compression="zlib",
                      subfiletype=0 if index == 0 else 1, **extra)
    return len(levels)

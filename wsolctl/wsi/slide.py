"""Slides read through large-image only (tiff, tifffile and openslide sources: ``.tif``, ``.svs``,
``.ndpi``, ...). Regions are returned as RGB ``uint8`` arrays; RGBA (openslide) is composited on
white, so transparent areas outside the scanned region read as background."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from wsolctl.errors import DataError

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")


class Slide:
    """A slide opened with ``large_image.open``; coordinates are level-0 pixels."""

    def __init__(self, path: Path):
        import large_image

        self.path = Path(path)
        try:
            self.source = large_image.open(str(self.path))
            meta = self.source.getMetadata()
        except Exception as exc:  # large-image raises its own TileSourceError family
            raise DataError(f"{self.path}: cannot be read as a slide by large-image ({exc})") from None
        self.width, self.height = int(meta["sizeX"]), int(meta["sizeY"])
        self.mm_x = meta.get("mm_x") or None  # level-0 pixel size in millimetres, when the file says
        self._numpy = large_image.constants.TILE_FORMAT_NUMPY

    def region(self, x: int, y: int, width: int, height: int, downsample: float = 1.0) -> np.ndarray:
        """The level-0 box ``[y, y+height·d) × [x, x+width·d)`` at downsample ``d`` as (height, width, 3)
        uint8 (white outside the slide); large-image reads the nearest pyramid level and resamples."""
        box = dict(left=x, top=y, width=round(width * downsample), height=round(height * downsample),
                   units="base_pixels")
        output = {} if downsample == 1 else {"output": dict(maxWidth=width, maxHeight=height)}
        array, _ = self.source.getRegion(region=box, format=self._numpy, **output)
        rgb = to_rgb(array)
        if rgb.shape[:2] != (height, width):  # clipped at the slide border
            padded = np.full((height, width, 3), 255, np.uint8)
            padded[: rgb.shape[0], : rgb.shape[1]] = rgb[:height, :width]
            rgb = padded
        return rgb

    def overview(self, downsample: float) -> tuple[np.ndarray, float, float]:
        """The whole slide about ``downsample`` times smaller (large-image picks the nearest pyramid
        level and resamples). Returns the image and the level-0 pixels per overview pixel in x, y."""
        width = max(1, math.ceil(self.width / downsample))
        height = max(1, math.ceil(self.height / downsample))
        array, _ = self.source.getRegion(output=dict(maxWidth=width, maxHeight=height), format=self._numpy)
        rgb = to_rgb(array)
        return rgb, self.width / rgb.shape[1], self.height / rgb.shape[0]


def to_rgb(array: np.ndarray) -> np.ndarray:
    """Any large-image numpy tile (grey, grey+alpha, RGB, RGBA; 8 or 16 bit) → RGB uint8."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.dtype != np.uint8:
        peak = 65535.0 if array.dtype == np.uint16 else max(float(array.max()), 1.0)
        array = np.clip(array.astype(np.float64) / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
    bands = array.shape[2]
    alpha = None
    if bands in (2, 4):
        alpha, array = array[:, :, -1:].astype(np.float32) / 255.0, array[:, :, :-1]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    array = array[:, :, :3]
    if alpha is not None and (alpha < 1).any():
        array = (array.astype(np.float32) * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(array)

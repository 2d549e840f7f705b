"""Tiles of a slide: the grid, tissue detection as the sampler does it, and reading ahead in threads.

* Grid: tiles of ``tile_size`` pixels at ``level`` (downsample ``2**level``), i.e. a level-0
  footprint ``F = tile_size·2**level``, every ``round(F·(1 − overlap))`` level-0 pixels from the
  top-left corner, until the slide is covered (with ``--mpp``, the downsample is ``mpp / slide mpp``:
  :mod:`wsolctl.predict.resolution`) (the last row/column may reach past the border,
  which reads as white).
* Tissue (:mod:`wsolctl.wsi.tissue`, as :mod:`wsolctl.wsi.camelyon16`): Otsu thresholds on an
  overview; a tile is predicted when the overview's tissue fraction over its footprint is at least
  ``min_tissue``. Its own tissue fraction is then measured on the tile's pixels with the same
  thresholds (the sampler's level-0 re-check).
* Reading: large-image decodes tiles in ``readers`` threads (it releases the GIL while decoding)
  at most ``prefetch`` tiles ahead of the model, so memory does not grow with the slide.
"""
from __future__ import annotations

import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from PIL import Image

from wsolctl.wsi.slide import Slide
from wsolctl.wsi.tissue import TissueThresholds, otsu_thresholds, tissue_mask

OVERVIEW_MIN_SIDE = 256  # the tissue overview is at least this many pixels across


@dataclass(frozen=True)
class Grid:
    footprint: int  # level-0 side of a tile
    stride: int  # level-0 step between tiles
    level_downsample: float  # 2**level

    @classmethod
    def of(cls, tile_size: int, level: int, overlap: float) -> "Grid":
        return cls.at(tile_size, float(2 ** level), overlap)

    @classmethod
    def at(cls, tile_size: int, downsample: float, overlap: float) -> "Grid":
        """Tiles of ``tile_size`` pixels at any downsample (e.g. a physical resolution's)."""
        footprint = max(1, round(tile_size * downsample))
        return cls(footprint, max(1, round(footprint * (1 - overlap))), footprint / tile_size)

    def starts(self, length: int) -> list[int]:
        """Tile origins along one axis of ``length`` level-0 pixels, covering it."""
        out = [0]
        while out[-1] + self.footprint < length:
            out.append(out[-1] + self.stride)
        return out


@dataclass(frozen=True)
class Tissue:
    thresholds: TissueThresholds
    mask: np.ndarray  # overview tissue mask
    scale: tuple[float, float]  # level-0 pixels per overview pixel (x, y)

    @classmethod
    def detect(cls, slide: Slide, downsample: float) -> "Tissue":
        downsample = max(1.0, min(downsample, max(slide.width, slide.height) / OVERVIEW_MIN_SIDE))
        overview, sx, sy = slide.overview(downsample)
        thresholds = otsu_thresholds(overview)
        return cls(thresholds, tissue_mask(overview, thresholds), (sx, sy))

    def fraction(self, x: int, y: int, footprint: int) -> float:
        """Overview tissue fraction of the level-0 box (x, y, footprint) (the part inside the slide)."""
        sx, sy = self.scale
        i0, j0 = int(y / sy), int(x / sx)
        i1 = max(i0 + 1, math.ceil((y + footprint) / sy))
        j1 = max(j0 + 1, math.ceil((x + footprint) / sx))
        window = self.mask[i0:i1, j0:j1]
        return float(window.mean()) if window.size else 0.0


def tissue_tiles(slide: Slide, grid: Grid, tissue: Tissue, min_tissue: float) -> list[tuple[int, int]]:
    """Level-0 origins of the grid tiles with enough tissue on the overview, row by row."""
    return [(x, y) for y in grid.starts(slide.height) for x in grid.starts(slide.width)
            if (f := tissue.fraction(x, y, grid.footprint)) > 0 and f >= min_tissue]


@dataclass
class TileData:
    x: int
    y: int
    pixels: np.ndarray  # (S, S, 3) uint8, resized to the model's input side
    tissue: float  # tissue fraction on the tile's own pixels
    tissue_mask: np.ndarray  # (n, n) bool at the heatmap's resolution


def read_tile(slide: Slide, grid: Grid, tissue: Tissue, x: int, y: int, tile_size: int, input_size: int,
              cells: int) -> TileData:
    """One tile, resized as evaluation resizes patches (PIL bilinear), with its tissue mask."""
    rgb = slide.region(x, y, tile_size, tile_size, grid.level_downsample)
    mask = tissue_mask(rgb, tissue.thresholds)
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((cells, cells), Image.BOX)
    image = Image.fromarray(rgb)
    if tile_size != input_size:
        image = image.resize((input_size, input_size), Image.BILINEAR)
    return TileData(x, y, np.asarray(image), float(mask.mean()), np.asarray(small) >= 128)


def read_ahead(slide: Slide, grid: Grid, tissue: Tissue, origins: list[tuple[int, int]], tile_size: int,
               input_size: int, cells: int, readers: int, prefetch: int) -> Iterator[TileData]:
    """Tiles in order, decoded by ``readers`` threads at most ``prefetch`` tiles ahead."""
    with ThreadPoolExecutor(max(1, readers), thread_name_prefix="wsolctl-tiles") as pool:
        queue: deque = deque()
        pending = iter(origins)
        for x, y in pending:
            queue.append(pool.submit(read_tile, slide, grid, tissue, x, y, tile_size, input_size, cells))
            if len(queue) >= prefetch:
                break
        while queue:
            tile = queue.popleft().result()
            for x, y in pending:
                queue.append(pool.submit(read_tile, slide, grid, tissue, x, y, tile_size, input_size, cells))
                break
            yield tile


def batches(tiles: Iterator[TileData], size: int) -> Iterator[list[TileData]]:
    batch: list[TileData] = []
    for tile in tiles:
        batch.append(tile)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch

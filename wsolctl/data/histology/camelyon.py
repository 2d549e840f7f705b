"""Camelyon-like lymph node (with and without metastasis), drawn with :mod:`.primitives`."""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np
from skimage.filters import gaussian

from wsolctl.data.histology.primitives import (
    _REF_SIZE,
    _Cells,
    _check_args,
    _draw_cells,
    _fibres,
    _finish,
    _jittered_grid,
    _keep_where,
    _noise,
    _population,
    _random_blob,
    _union,
)

_LYMPHOID = _Cells(cyt_h=0.014, cyt_e=0.016, nuc_len=3.3, nuc_ratio=0.9, nuc_w=0.115,
                   nuc_rim=0.0, nucleoli=0.0, spacing=7.6, pleo=0.12)
_TUMOUR = _Cells(cyt_h=0.016, cyt_e=0.042, nuc_len=6.2, nuc_ratio=0.78, nuc_w=0.085,
                 nuc_rim=0.55, nucleoli=0.85, spacing=14.5, pleo=0.22)
_NODE_STROMA = _Cells(cyt_h=0.008, cyt_e=0.045, nuc_len=4.6, nuc_ratio=0.3, nuc_w=0.085,
                      nuc_rim=0.0, nucleoli=0.0, spacing=11.0, pleo=0.15)


class _NodeStructures(NamedTuple):
    fibrous: np.ndarray  # trabeculae and vessel walls
    fibre_angle: float  # direction of the collagen strands
    vessel_lumen: np.ndarray
    rbc: np.ndarray  # red blood cells inside vessel lumens


def _tumour_region(rng: np.random.Generator, size: int, s: float, roi_scale: float
                   ) -> np.ndarray:
    """Union of 1-3 metastatic nests with ragged, noise-displaced borders."""
    frac = min(rng.uniform(0.12, 0.42) * roi_scale ** 2, 0.9)
    count = int(rng.integers(1, 4))
    radii = size * np.sqrt(frac * rng.dirichlet(np.full(count, 2.0)) / np.pi)
    centres = rng.uniform(0.15, 0.85, (count, 2)) * size
    ys, xs = np.ogrid[:size, :size]
    dist = np.min([np.hypot(xs + 0.5 - cx, ys + 0.5 - cy) / r
                   for (cx, cy), r in zip(centres, radii)], axis=0)
    border = 0.2 * _noise(rng, (size, size), 30 * s) + 0.08 * _noise(rng, (size, size), 8 * s)
    return dist + border < 1.0


def _node_structures(rng: np.random.Generator, size: int, s: float) -> _NodeStructures:
    """Optional fibrous trabecula crossing the field and a few blood vessels."""
    shape = (size, size)
    fibrous, lumen = np.zeros(shape, bool), np.zeros(shape, bool)
    ys, xs = np.ogrid[:size, :size]
    ang = rng.uniform(0, np.pi)  # trabecula direction
    if rng.random() < 0.6:
        cx, cy = rng.uniform(0.2, 0.8, 2) * size  # a point the trabecula passes through
        across = (ys - cy) * np.cos(ang) - (xs - cx) * np.sin(ang)
        across = across + 15 * s * _noise(rng, shape, 80 * s)
        fibrous |= np.abs(across) < rng.uniform(4, 10) * s
    vessels = [_random_blob(rng, *rng.uniform(0, size, 2), rng.uniform(7, 16) * s,
                            max_aspect=3.0, irregularity=0.06, orders=3)
               for _ in range(rng.integers(0, 3))]
    if vessels:
        lumen = _union(shape, vessels)
        wall = rng.uniform(2.5, 4.0) * s
        fibrous |= _union(shape, [replace(v, ax=v.ax + wall, ay=v.ay + wall) for v in vessels])
        fibrous &= ~lumen
    rbc = lumen & (_noise(rng, shape, 4 * s) > rng.uniform(-0.5, 0.8))
    return _NodeStructures(fibrous, ang, lumen, rbc)


def _tangent_angle(region: np.ndarray, s: float) -> np.ndarray:
    """Direction along the edges of a region (spindle nuclei lie parallel to fibres)."""
    smooth = gaussian(region.astype(np.float32), 3 * s)
    gy, gx = np.gradient(smooth)
    return np.arctan2(gy, gx) + np.pi / 2


def _lymph_nuclei(rng: np.random.Generator, shape: tuple[int, int], cells: _Cells, s: float,
                  prob: np.ndarray) -> np.ndarray:
    x, y = _jittered_grid(rng, shape[0], cells.spacing * s, jitter=0.45)
    keep = _keep_where(rng, x, y, prob)
    return _draw_cells(rng, shape, _population(rng, x[keep], y[keep], cells, s), cells, s)


def render_camelyon(seed: int, size: int, metastatic: bool, *, roi_scale: float = 1.0,
                    similarity: float = 0.0, stain_jitter: float = 0.15
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Lymph-node-like H&E patch and its tumour mask (all False when metastatic is False).

    Background: a dense sea of small, round, dark lymphocyte nuclei with scant cytoplasm,
    optional pink fibrous trabecula and blood vessels (with red cells). Metastatic patches
    add 1-3 cohesive nests of large cells (vesicular nuclei, nucleoli, pink cytoplasm) with
    irregular borders. `roi_scale` scales nest area (1.0 -> ~10-50 % of the patch),
    `similarity` in [0, 1] moves the tumour cells' parameters toward lymphocytes,
    `stain_jitter` in [0, 1] scales per-image stain variation.
    """
    _check_args(seed, size, roi_scale, similarity, stain_jitter)
    rng = np.random.default_rng(seed)
    shape, s = (size, size), size / _REF_SIZE
    tumour = (_tumour_region(rng, size, s, roi_scale) if metastatic
              else np.zeros(shape, bool))
    node = _node_structures(rng, size, s)
    fibrous, vessel_lumen = node.fibrous, node.vessel_lumen
    # Nests grow around trabeculae and vessels, which stay intact (and outside the mask).
    tumour &= ~(fibrous | vessel_lumen)
    lymphoid = ~(tumour | fibrous | vessel_lumen)
    roi = _TUMOUR.toward(_LYMPHOID, similarity)

    # Cell-poor matrix between the nuclei, fibres in trabeculae / vessel walls.
    fibres = _fibres(rng, shape, s, node.fibre_angle)
    h = np.select([tumour, fibrous, vessel_lumen], [roi.cyt_h, _NODE_STROMA.cyt_h, 0.003],
                  _LYMPHOID.cyt_h)
    e = np.select([tumour, fibrous, vessel_lumen], [roi.cyt_e, _NODE_STROMA.cyt_e, 0.005],
                  _LYMPHOID.cyt_e)
    e = e * np.where(fibrous, 0.6 + 0.9 * fibres, 1.0 + 0.2 * _noise(rng, shape, 2 * s))
    e = e + 0.075 * node.rbc

    # Cellularity varies smoothly (follicles vs sinuses); the same modulation applies to
    # the nests so that at similarity 1 they are statistically identical to the background.
    cellularity = np.clip(0.9 + 0.15 * _noise(rng, shape, 40 * s), 0.0, 1.0)
    h = h + _lymph_nuclei(rng, shape, _LYMPHOID, s, cellularity * lymphoid)
    h = h + _lymph_nuclei(rng, shape, roi, s, cellularity * tumour)
    x, y = _jittered_grid(rng, size, _NODE_STROMA.spacing * s, jitter=0.5)
    keep = _keep_where(rng, x, y, 0.5 * fibrous)
    theta = _tangent_angle(fibrous, s)[y[keep].astype(int), x[keep].astype(int)]
    spindles = _population(rng, x[keep], y[keep], _NODE_STROMA, s, theta)
    h = h + _draw_cells(rng, shape, spindles, _NODE_STROMA, s)
    d = (0.05 * node.rbc).astype(np.float32)  # DAB slot: turns eosin's magenta into RBC red
    return _finish(rng, h.astype(np.float32), e.astype(np.float32), d, s, stain_jitter), tumour

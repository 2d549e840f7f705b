"""Patch sampling of the survey's Appendix B (CAMELYON16 protocol for WSOL).

* Patches are ``size × size`` at level 0 on a non-overlapping grid aligned to the slide's top-left
  corner; only whole patches inside the slide are considered.
* Metastatic patches (tumour slides only): every grid cell of the tumour bounding box with tumour
  fraction p ≥ p0 (exact mask, exclusions subtracted) and tissue fraction ≥ pt at level 0. The cells
  are :func:`annotated_cells`, which the sampler of any cohort (:mod:`wsolctl.wsi.cohort`) uses at any
  resolution, as it uses :func:`tissue_cells` for the normal ones.
* Calibration (per set): keep every patch with p0 ≤ p ≤ p1 (category 1, n patches); then draw
  int(n·pn) patches from category 2 (p > p1), each time picking uniformly one of the non-empty
  histogram bins of width ``bin_width`` above p1 and then uniformly one remaining patch in it.
  ``reference=True`` reproduces the reference code instead (a random bin among all bins starting
  at p1, retried while empty, then ``max_trials`` random picks with replacement in it, *each* kept
  if new — its missing ``break`` makes one draw keep up to ``max_trials`` patches).
* Normal patches (normal slides only): grid cells whose tissue fraction on the low-resolution Otsu
  mask is ≥ pt, visited in random order, re-checked at level 0, until the slide's quota is met.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from wsolctl.wsi.annotations import SlideAnnotations
from wsolctl.wsi.slide import Slide
from wsolctl.wsi.tissue import TissueThresholds, tissue_fraction, tissue_mask


@dataclass(frozen=True)
class Candidate:
    x: int
    y: int
    tissue: float  # fraction in [0, 1]
    tumor: float


def annotated_cells(regions: dict[str, SlideAnnotations], width: int, height: int, side: int, size: int,
                    min_roi: float) -> list[tuple[int, int, str, float]]:
    """Level-0 ``(x, y, class, fraction)`` of the grid cells (side ``side`` at level 0, ``size`` pixels
    at patch resolution) whose largest annotated class fraction is ≥ ``min_roi``, row by row. Exact
    fractions from one rasterisation per row strip of each class's bounding box."""
    cols, rows = width // side, height // side
    best: dict[tuple[int, int], tuple[float, str]] = {}
    for name in sorted(regions):
        box = regions[name].tumor_bbox()
        if box is None:
            continue
        c0, c1 = max(0, math.floor(box[0] / side)), min(cols - 1, math.floor(box[2] / side))
        r0, r1 = max(0, math.floor(box[1] / side)), min(rows - 1, math.floor(box[3] / side))
        for row in range(r0, r1 + 1 if c0 <= c1 else r0):
            strip = regions[name].mask(c0 * side, row * side, (c1 - c0 + 1) * size, size, side / size)
            fractions = strip.reshape(size, c1 - c0 + 1, size).mean(axis=(0, 2))
            for k in np.flatnonzero(fractions >= min_roi):
                cell = (row * side, (c0 + int(k)) * side)
                if fractions[k] > best.get(cell, (0.0,))[0]:
                    best[cell] = (float(fractions[k]), name)
    return [(x, y, name, fraction) for (y, x), (fraction, name) in sorted(best.items())]


def tumor_candidates(slide: Slide, annotations: SlideAnnotations, thresholds: TissueThresholds, size: int,
                     p0: float, pt: float) -> list[Candidate]:
    """All grid patches of a tumour slide with tumour fraction ≥ p0 and tissue fraction ≥ pt."""
    out = []
    for x, y, _, fraction in annotated_cells({"tumor": annotations}, slide.width, slide.height, size, size, p0):
        tissue = tissue_fraction(slide.region(x, y, size, size), thresholds)
        if tissue >= pt:
            out.append(Candidate(x, y, tissue, fraction))
    return out


def normal_patches(slide: Slide, overview: np.ndarray, scale: tuple[float, float], thresholds: TissueThresholds,
                   size: int, pt: float, quota: int, rng: np.random.Generator,
                   on_patch: Optional[Callable[[], None]] = None) -> tuple[list[Candidate], int]:
    """Up to ``quota`` random non-overlapping grid patches with tissue ≥ pt (low resolution, then
    level 0). Returns the accepted patches (in acceptance order) and the number of level-0 reads."""
    if quota <= 0:
        return [], 0
    cells = tissue_cells(tissue_mask(overview, thresholds), scale, slide.width, slide.height, size, pt)
    order = rng.permutation(len(cells))
    out, reads = [], 0
    for index in order:
        x, y = cells[int(index)]
        reads += 1
        tissue = tissue_fraction(slide.region(x, y, size, size), thresholds)
        if tissue >= pt:
            out.append(Candidate(x, y, tissue, 0.0))
            if on_patch is not None:
                on_patch()
            if len(out) == quota:
                break
    return out, reads


def tissue_cells(low: np.ndarray, scale: tuple[float, float], width: int, height: int, size: int,
                 pt: float) -> list[tuple[int, int]]:
    """Level-0 (x, y) of the grid cells of side ``size`` whose fraction of the low-resolution tissue
    mask ``low`` (``scale`` level-0 pixels per mask pixel in x, y) is ≥ pt, row by row."""
    sx, sy = scale
    cells = []
    for row in range(height // size):
        i0, i1 = int(row * size / sy), max(int(row * size / sy) + 1, int(math.ceil((row + 1) * size / sy)))
        for col in range(width // size):
            j0, j1 = int(col * size / sx), max(int(col * size / sx) + 1, int(math.ceil((col + 1) * size / sx)))
            if low[i0:i1, j0:j1].mean() >= pt:
                cells.append((col * size, row * size))
    return cells


def calibrate(tumor: np.ndarray, p0: float, p1: float, pn: float, rng: np.random.Generator,
              bin_width: float = 0.05, reference: bool = False, max_trials: int = 100) -> tuple[np.ndarray, np.ndarray, int]:
    """Calibrate metastatic patches given their tumour fractions.

    Returns (kept indices in increasing order, category per kept index: 1 or 2, number of category-2
    patches asked for = int(n·pn))."""
    tumor = np.asarray(tumor, dtype=np.float64)
    cat1 = np.flatnonzero((tumor >= p0) & (tumor <= p1))
    cat2 = np.flatnonzero(tumor > p1)
    wanted = int(len(cat1) * pn)
    picked: list[int] = []
    if reference:
        picked = _reference_draws(tumor, cat2, p1, wanted, rng, bin_width, max_trials)
    else:
        nbins = int(round(1.0 / bin_width))
        bins = np.minimum((tumor[cat2] / bin_width).astype(np.int64), nbins - 1)
        remaining = {int(b): list(cat2[bins == b]) for b in np.unique(bins)}
        while len(picked) < wanted and remaining:
            keys = sorted(remaining)
            b = keys[int(rng.integers(len(keys)))]
            members = remaining[b]
            picked.append(int(members.pop(int(rng.integers(len(members))))))
            if not members:
                del remaining[b]
    kept = np.concatenate([cat1, np.asarray(picked, dtype=np.int64)])
    order = np.argsort(kept, kind="stable")
    category = np.concatenate([np.ones(len(cat1), np.int64), np.full(len(picked), 2, np.int64)])
    return kept[order], category[order], wanted


def _reference_draws(tumor: np.ndarray, cat2: np.ndarray, p1: float, wanted: int, rng: np.random.Generator,
                     bin_width: float, max_trials: int) -> list[int]:
    lowers = np.arange(p1, 1, bin_width)
    selected = np.zeros(tumor.size, dtype=bool)
    in_cat2 = np.zeros(tumor.size, dtype=bool)
    in_cat2[cat2] = True
    for _ in range(wanted):
        if lowers.size == 0 or selected[cat2].all():
            break  # the reference code would loop forever here
        found = False
        while not found:
            lower = lowers[int(rng.integers(lowers.size))]
            upper = min(lower + bin_width, 1.0)
            members = np.flatnonzero(in_cat2 & (tumor >= lower) & (tumor <= upper))
            if members.size == 0:
                continue
            for _trial in range(max_trials):  # no break after a hit, as in the reference code
                position = int(members[int(rng.integers(members.size))])
                if not selected[position]:
                    selected[position] = True
                    found = True
            if not found and selected[cat2].all():
                break
    return [int(i) for i in np.flatnonzero(selected)]

"""GlaS-like colon glands (benign and adenocarcinoma), drawn with :mod:`.primitives`."""
from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np
from skimage.filters import gaussian

from wsolctl.data.histology.primitives import (
    _REF_SIZE,
    _TWO_PI,
    _Blob,
    _Cells,
    _check_args,
    _draw_cells,
    _fibres,
    _finish,
    _jittered_grid,
    _keep_where,
    _lerp,
    _noise,
    _Nuclei,
    _population,
    _random_blob,
    _stamp,
    _union,
)

_GLAS_STROMA = _Cells(cyt_h=0.010, cyt_e=0.028, nuc_len=2.5, nuc_ratio=0.8, nuc_w=0.10,
                      nuc_rim=0.0, nucleoli=0.0, spacing=9.0, pleo=0.15)
_GLAS_BENIGN = _Cells(cyt_h=0.024, cyt_e=0.034, nuc_len=4.3, nuc_ratio=0.36, nuc_w=0.095,
                      nuc_rim=0.05, nucleoli=0.0, spacing=5.0, pleo=0.08)
_GLAS_MALIGNANT = _Cells(cyt_h=0.034, cyt_e=0.030, nuc_len=5.2, nuc_ratio=0.42, nuc_w=0.09,
                         nuc_rim=0.3, nucleoli=0.35, spacing=7.0, pleo=0.25)
_LUMEN_HE = (0.003, 0.006)  # near-white lumen / glass
_MUCIN_HE = (0.014, 0.007)  # goblet-cell mucin: pale grey-blue


class _Glands(NamedTuple):
    """Gland geometry: outlines (their union is the mask), lumens, and the extra shapes that
    decide where epithelial nuclei go."""

    outer: list[_Blob]
    lumens: list[_Blob]
    lumen_fracs: list[float]  # benign: size of the concentric lumen of each outline
    holes: list[_Blob]  # malignant: cribriform holes, each lined by its own ring of nuclei

    def extend(self, other: _Glands) -> None:
        for mine, theirs in zip(self, other):
            mine.extend(theirs)


def _tissue_region(rng: np.random.Generator, size: int, s: float) -> np.ndarray:
    """Tissue (True) vs empty glass: half of the fields show a ragged tissue edge."""
    if rng.random() < 0.5:
        return np.ones((size, size), bool)
    ang = rng.uniform(0, _TWO_PI)
    ys, xs = np.ogrid[:size, :size]
    ramp = (xs * np.cos(ang) + ys * np.sin(ang)) / size
    edge = ramp + 0.12 * _noise(rng, (size, size), 60 * s)
    return edge < np.quantile(edge, 1.0 - rng.uniform(0.05, 0.25))


def _benign_gland(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[_Blob]:
    """Regular crypt: smooth round/elliptical outline."""
    return [_random_blob(rng, cx, cy, r, max_aspect=2.2, irregularity=0.035, orders=3)]


def _benign_lumens(rng: np.random.Generator, outline: list[_Blob]) -> _Glands:
    """Concentric lumen of a crypt."""
    blob, frac = outline[0], rng.uniform(0.3, 0.55)
    return _Glands(outline, [replace(blob, ax=blob.ax * frac, ay=blob.ay * frac)], [frac], [])


def _malignant_gland(rng: np.random.Generator, cx: float, cy: float, r: float) -> list[_Blob]:
    """Irregular gland outline: a main lobe with 0-2 fused / budding lobes."""
    lobes = [_random_blob(rng, cx, cy, r, max_aspect=2.4, irregularity=0.08, orders=4)]
    for _ in range(rng.integers(0, 3)):
        ang, dist = rng.uniform(0, _TWO_PI), r * rng.uniform(0.7, 1.1)
        lobes.append(_random_blob(rng, cx + dist * np.cos(ang), cy + dist * np.sin(ang),
                                  r * rng.uniform(0.45, 0.8), max_aspect=2.0,
                                  irregularity=0.08, orders=4))
    return lobes


def _malignant_lumens(rng: np.random.Generator, lobes: list[_Blob]) -> _Glands:
    """Irregular or slit-like lumens in most lobes, cribriform holes in some glands."""
    lumens = []
    for lobe in lobes:
        if rng.random() < 0.9:
            lumen_r = rng.uniform(0.3, 0.6) * (lobe.ax * lobe.ay) ** 0.5
            lumens.append(_random_blob(rng, lobe.cx, lobe.cy, lumen_r, max_aspect=3.0,
                                       irregularity=0.12, orders=4))
    r = (lobes[0].ax * lobes[0].ay) ** 0.5
    holes = []  # circles: one zero-amplitude harmonic
    for _ in range(rng.integers(2, 6) if rng.random() < 0.3 else 0):
        hx, hy = lobes[0].to_image(rng.uniform(0, _TWO_PI), 0.65 * np.sqrt(rng.random()))
        hole_r = rng.uniform(0.08, 0.15) * r
        holes.append(_Blob(float(hx), float(hy), hole_r, hole_r, 0.0, np.zeros(1), np.zeros(1)))
    return _Glands(lobes, lumens + holes, [], holes)


def _layout_glands(rng: np.random.Generator, tissue: np.ndarray, s: float, malignant: bool,
                   roi_scale: float) -> _Glands:
    """Drop random glands on free tissue until the target coverage is reached. Collisions are
    tested with the exact shapes on a coarse occupancy grid: cheap, and elongated glands
    still pack; each placed gland blocks its outline plus a stroma gap."""
    size = tissue.shape[0]
    cells = min(64, size // 4)
    step = size / cells
    centres = ((np.arange(cells) + 0.5) * step).astype(int)
    coarse_tissue = tissue[np.ix_(centres, centres)]
    covered = np.zeros((cells, cells), bool)
    blocked = np.zeros((cells, cells), bool)
    target = rng.uniform(0.4, 0.6) * min(roi_scale ** 2, 1.5)
    glands = _Glands([], [], [], [])
    misses = 0
    weight = _open_space(blocked, coarse_tissue)
    for _ in range(300):  # bounded: glands too small for the grid never raise the coverage
        if covered.mean() >= target or misses >= 10 or weight.sum() <= 0:
            break
        row, col = divmod(int(rng.choice(weight.size, p=weight / weight.sum())), cells)
        cx, cy = (col + rng.random()) * step, (row + rng.random()) * step
        shrink = max(0.9 ** misses, 0.55)  # after misses, try smaller glands to fill gaps
        if malignant:  # very variable sizes, crowded back-to-back
            gap = 1.5 * s
            r = 30 * s * roi_scale * shrink * rng.lognormal(0, 0.3)
            outline = _malignant_gland(rng, cx, cy, r)
        else:
            gap = 4.0 * s
            outline = _benign_gland(rng, cx, cy, rng.uniform(24, 40) * s * roi_scale * shrink)
        footprint = _union(covered.shape, outline, step)
        # the first gland is always accepted: every GlaS field has a gland
        if glands.outer and (footprint & (blocked | ~coarse_tissue)).any():
            misses += 1
            continue
        misses = 0
        covered |= footprint
        blocked |= _union(covered.shape,
                          [replace(b, ax=b.ax + gap, ay=b.ay + gap) for b in outline], step)
        glands.extend(_malignant_lumens(rng, outline) if malignant
                      else _benign_lumens(rng, outline))
        weight = _open_space(blocked, coarse_tissue)
    return glands


def _open_space(blocked: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Sampling weight of free grid cells, favouring the middle of open areas (candidates
    squeezed into narrow gaps mostly fail)."""
    free = (~blocked & tissue).astype(np.float32)
    return (free * gaussian(free, 2.0) ** 4).ravel()


def _concat(parts: list[_Nuclei], rim: float) -> _Nuclei:
    arrays = [np.concatenate([getattr(p, f) for p in parts]) if parts else np.zeros(0)
              for f in _Nuclei._fields[:-1]]
    return _Nuclei(*arrays, rim=rim)


def _palisade(rng: np.random.Generator, blob: _Blob, cells: _Cells, s: float, layers: int
              ) -> tuple[_Nuclei, np.ndarray, np.ndarray]:
    """Nuclei lining the inside of the outline of `blob`, long axis perpendicular to it;
    layers > 1 stacks them (stratified epithelium). Also returns each nucleus' polar angle
    and the local blob radius in px."""
    phi = np.linspace(0, _TWO_PI, 73)
    bx, by = blob.to_image(phi, 1.0)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(bx), np.diff(by)))])
    per_layer = max(int(arc[-1] / (cells.spacing * s)), 6)
    layer = np.repeat(np.arange(layers), per_layer)
    n = len(layer)
    # equal arc-length spacing (equal angles would crowd nuclei at the ends of long glands)
    slot = (np.arange(n) % per_layer + rng.uniform(0, 1, layers)[layer]
            + rng.uniform(-0.15, 0.15, n))
    phis = np.interp(slot * arc[-1] / per_layer % arc[-1], arc, phi)
    disorder = 0.1 if layers == 1 else 0.4
    nuc = _population(rng, phis, phis, cells, s, blob.normal(phis) + rng.normal(0, disorder, n))
    r_loc = blob.local_radius(phis)
    depth = nuc.a + 1.2 * s + layer * 2.0 * cells.nuc_len * s * rng.uniform(0.8, 1.2, n)
    x, y = blob.to_image(phis, np.maximum(1.0 - depth / r_loc, 0.05))
    return nuc._replace(x=x, y=y), phis, r_loc


def _goblets(rng: np.random.Generator, blob: _Blob, lumen_frac: float, nuc: _Nuclei,
             phis: np.ndarray, r_loc: np.ndarray, s: float) -> _Nuclei:
    """Goblet-cell mucin vacuoles (as unit-weight ellipses) in the cytoplasm between the
    basal nuclei and the lumen of a benign crypt."""
    apex = 1.0 - (2.0 * nuc.a + 1.5 * s) / r_loc  # apical end of the nuclei
    band = (apex - lumen_frac) * r_loc  # px of cytoplasm between nuclei and lumen
    keep = (band > 2.5 * s) & (rng.random(len(phis)) < 0.45)
    radius = np.minimum(0.42 * band, 4.5 * s)[keep]
    gx, gy = blob.to_image(phis[keep], 0.5 * (apex + lumen_frac)[keep])
    return _Nuclei(gx, gy, radius, radius * rng.uniform(0.7, 1.0, len(gx)),
                   blob.normal(phis[keep]), np.ones(len(gx)), 0.0)


def _benign_epithelium(rng: np.random.Generator, glands: _Glands, cells: _Cells, s: float,
                       shape: tuple[int, int]) -> tuple[_Nuclei, np.ndarray]:
    """Single palisade of basal nuclei per crypt, plus the goblet mucin map (0..1)."""
    nuclei, mucin = [], np.zeros(shape, np.float32)
    for blob, frac in zip(glands.outer, glands.lumen_fracs):
        nuc, phis, r_loc = _palisade(rng, blob, cells, s, layers=1)
        nuclei.append(nuc)
        mucin += _stamp(shape, _goblets(rng, blob, frac, nuc, phis, r_loc, s))
    return _concat(nuclei, cells.nuc_rim), np.minimum(mucin, 1.0)


def _hole_rings(rng: np.random.Generator, holes: list[_Blob], cells: _Cells, s: float
                ) -> _Nuclei:
    """One ring of radially oriented nuclei around each (circular) cribriform hole; all holes
    at once, as there are many of them."""
    cx, cy, r = (np.array([getattr(h, f) for h in holes], dtype=float).reshape(-1)
                 for f in ("cx", "cy", "ax"))
    count = np.maximum((_TWO_PI * r / (cells.spacing * s)).astype(int), 6)
    owner = np.repeat(np.arange(len(holes)), count)
    slot = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
    phi = (slot + rng.uniform(-0.15, 0.15, len(owner))) * _TWO_PI / count[owner]
    nuc = _population(rng, phi, phi, cells, s, phi + rng.normal(0, 0.2, len(owner)))
    dist = r[owner] + nuc.a + 1.0 * s
    return nuc._replace(x=cx[owner] + dist * np.cos(phi), y=cy[owner] + dist * np.sin(phi))


def _malignant_epithelium(rng: np.random.Generator, glands: _Glands, epi: np.ndarray,
                          cells: _Cells, s: float) -> _Nuclei:
    """Stratified (2-3 layers) enlarged, pleomorphic nuclei along every lobe, a ring around
    each cribriform hole and scattered nuclei in solid areas; only those on epithelium stay."""
    parts = [_palisade(rng, lobe, cells, s, layers=int(rng.integers(2, 4)))[0]
             for lobe in glands.outer]
    parts.append(_hole_rings(rng, glands.holes, cells, s))
    x, y = _jittered_grid(rng, epi.shape[0], 2.5 * cells.spacing * s)
    parts.append(_population(rng, x, y, cells, s))
    nuc = _concat(parts, cells.nuc_rim)
    size = epi.shape[0]
    inside = (nuc.x >= 0) & (nuc.x < size) & (nuc.y >= 0) & (nuc.y < size)
    nuc = nuc.subset(inside)
    return nuc.subset(epi[nuc.y.astype(int), nuc.x.astype(int)])


def _stromal_nuclei(rng: np.random.Generator, prob: np.ndarray, cells: _Cells, s: float,
                    fibre_angle: float) -> _Nuclei:
    """Scattered round inflammatory nuclei mixed with spindle fibroblast nuclei lying along
    the collagen strands (`fibre_angle`)."""
    x, y = _jittered_grid(rng, prob.shape[0], cells.spacing * s, jitter=0.5)
    keep = _keep_where(rng, x, y, prob)
    x, y = x[keep], y[keep]
    spindle = rng.random(len(x)) < 0.35
    round_ = _population(rng, x, y, cells, s)
    fibro_cells = replace(cells, nuc_len=4.6, nuc_ratio=0.28, nuc_w=0.075)
    theta = fibre_angle + rng.normal(0, 0.25, len(x))
    fibro = _population(rng, x, y, fibro_cells, s, theta)
    return _Nuclei(*(np.where(spindle, f, r) for f, r in zip(fibro[:-1], round_[:-1])),
                   rim=0.0)


def _glas_matrix(rng: np.random.Generator, s: float, tissue: np.ndarray, epi: np.ndarray,
                 lumen: np.ndarray, cells: _Cells, fibre_angle: float,
                 sim: float) -> tuple[np.ndarray, np.ndarray]:
    """H and E of everything but the nuclei: fibrous stroma, granular epithelial cytoplasm,
    pale lumens and glass. With similarity -> 1 glands take the stroma's stains/texture."""
    shape = tissue.shape
    stroma = tissue & ~(epi | lumen)
    fibres = np.maximum(_fibres(rng, shape, s, fibre_angle),
                        0.6 * _fibres(rng, shape, s, fibre_angle + rng.uniform(0.5, 1.2)))
    fibrous = np.where(stroma, 1.0, sim * (epi | lumen)).astype(np.float32)
    granular = 1.0 + 0.18 * _noise(rng, shape, 2.0 * s)
    loose = 1.0 + 0.2 * _noise(rng, shape, 12.0 * s)  # oedematous / denser patches
    texture = (1 - fibrous) * granular + fibrous * loose * (0.6 + 0.9 * fibres)
    lum_h = _lerp(_LUMEN_HE[0], _GLAS_STROMA.cyt_h, sim)
    lum_e = _lerp(_LUMEN_HE[1], _GLAS_STROMA.cyt_e, sim)
    h = np.select([stroma, epi, lumen], [_GLAS_STROMA.cyt_h, cells.cyt_h, lum_h], 0.0)
    e = np.select([stroma, epi, lumen], [_GLAS_STROMA.cyt_e, cells.cyt_e, lum_e], 0.002)
    return (h * texture).astype(np.float32), (e * texture).astype(np.float32)


def _necrotic_debris(rng: np.random.Generator, lumen: np.ndarray, s: float) -> np.ndarray:
    """Patchy 'dirty necrosis' in malignant lumens (0..1 density), present in half the fields."""
    if rng.random() < 0.5:
        return np.zeros(lumen.shape, np.float32)
    debris = np.clip(_noise(rng, lumen.shape, 6 * s) - 0.3, 0, 1) * lumen
    return debris.astype(np.float32)


def render_glas(seed: int, size: int, malignant: bool, *, roi_scale: float = 1.0,
                similarity: float = 0.0, stain_jitter: float = 0.15
                ) -> tuple[np.ndarray, np.ndarray]:
    """Colon-tissue-like H&E image (uint8 HxWx3, H=W=size) and its gland mask (bool HxW).

    Benign fields show regular round/elongated crypts (white lumen, one palisade of basal
    nuclei, goblet cells); malignant fields show crowded, fused, irregular glands with
    stratified pleomorphic nuclei, slit/cribriform lumens and necrotic debris. The mask
    covers each gland's epithelium and lumen. `roi_scale` scales gland size (1.0 -> glands
    cover ~30-60 % of the field), `similarity` in [0, 1] blends the glands' stains and
    texture toward the stroma's, `stain_jitter` in [0, 1] scales per-image stain variation.
    """
    _check_args(seed, size, roi_scale, similarity, stain_jitter)
    rng = np.random.default_rng(seed)
    shape, s, sim = (size, size), size / _REF_SIZE, float(similarity)
    tissue = _tissue_region(rng, size, s)
    glands = _layout_glands(rng, tissue, s, malignant, roi_scale)
    gland = _union(shape, glands.outer) & tissue
    lumen = _union(shape, glands.lumens) & gland
    epi = gland & ~lumen
    cells = (_GLAS_MALIGNANT if malignant else _GLAS_BENIGN).toward(_GLAS_STROMA, sim)
    fibre_angle = rng.uniform(0, np.pi)
    h, e = _glas_matrix(rng, s, tissue, epi, lumen, cells, fibre_angle, sim)

    # Glands keep their own nuclei with probability 1 - sim and gain stromal ones with
    # probability sim, so at similarity 1 the nuclear pattern is the stroma's.
    stromal_prob = (0.45 if malignant else 0.6) * np.where(gland, sim, 1.0) * tissue
    stromal = _stromal_nuclei(rng, stromal_prob, _GLAS_STROMA, s, fibre_angle)
    h += _draw_cells(rng, shape, stromal, _GLAS_STROMA, s)
    if malignant:
        nuc = _malignant_epithelium(rng, glands, epi, cells, s)
        mucin = np.zeros(shape, np.float32)
        debris = _necrotic_debris(rng, lumen, s) * (1 - sim)
        h += 0.02 * debris * (1.0 + _noise(rng, shape, 1.5 * s))
        e += 0.035 * debris
    else:
        nuc, mucin = _benign_epithelium(rng, glands, cells, s, shape)
        mucin *= epi * (1 - sim)
    h += _draw_cells(rng, shape, nuc.subset(rng.random(len(nuc.x)) < 1 - sim), cells, s)
    h = h * (1 - mucin) + _MUCIN_HE[0] * mucin
    e = e * (1 - mucin) + _MUCIN_HE[1] * mucin
    return _finish(rng, h, e, np.zeros(shape, np.float32), s, stain_jitter), gland

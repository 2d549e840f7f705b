"""Procedural synthetic H&E histology: GlaS-like colon glands and Camelyon-like lymph node.

Rendering model
---------------
Tissue is described by *stain density* maps -- haematoxylin (H, nuclei, mucin) and eosin
(E, cytoplasm, collagen) -- which are converted to RGB with the inverse colour deconvolution
of :func:`skimage.color.hed2rgb` (``combine_stains`` with the Ruifrok-Johnston H/E/DAB
vectors, optionally jittered per image). The DAB slot is zero everywhere except inside red
blood cells, where a little of its brown absorption turns eosin's magenta into RBC red.

All geometry is designed on a 256-px reference field of view and scaled by ``size / 256``,
so every ``size`` shows the same kind of field at a different resolution. Masks are
rasterised from the same analytic shapes that are drawn (no antialiasing in the mask).

Only numpy and scikit-image are used; a single ``np.random.default_rng(seed)`` drives every
random choice, so identical arguments give byte-identical outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import numpy as np
from skimage.color import combine_stains, rgb_from_hed
from skimage.filters import gaussian

__all__ = ["render_glas", "render_camelyon"]

_REF_SIZE = 256  # every length constant below is in pixels of a 256-px field of view
_TWO_PI = 2.0 * np.pi
_HARMONIC_ORDERS = np.arange(2, 10, dtype=np.float32)  # shape harmonics of _Blob outlines


# --------------------------------------------------------------------------- validation


def _check_args(seed: int, size: int, roi_scale: float, similarity: float,
                stain_jitter: float) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not is_int(size) or size < 32:
        raise ValueError(f"size must be an integer >= 32, got {size!r}")
    if not (np.isfinite(roi_scale) and roi_scale > 0):
        raise ValueError(f"roi_scale must be a finite number > 0, got {roi_scale!r}")
    for name, value in (("similarity", similarity), ("stain_jitter", stain_jitter)):
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"{name} must lie in [0, 1], got {value!r}")


# --------------------------------------------------------------------------- textures


def _noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Smooth Gaussian random field (zero mean, unit std) with blobs about `scale` px across."""
    sigma = max(scale / 3.0, 0.5)
    # Large blobs are generated on a coarse grid and upsampled, so cost does not grow with
    # sigma (a full-resolution sigma-30 Gaussian costs ~30 ms at 512 px).
    step = max(sigma / 2.0, 1.0)
    coarse_shape = (int(shape[0] / step) + 2, int(shape[1] / step) + 2)
    field = gaussian(rng.standard_normal(coarse_shape).astype(np.float32), sigma / step)
    if step > 1.0:
        field = _upsample(field, step, shape)
    field = field[: shape[0], : shape[1]]
    return (field - field.mean()) / (field.std() + 1e-8)


def _upsample(coarse: np.ndarray, step: float, shape: tuple[int, int]) -> np.ndarray:
    """Separable bilinear upsampling by a fractional factor `step`, to `shape`."""
    pos = np.arange(shape[0], dtype=np.float32) / step
    i = pos.astype(np.int64)
    f = (pos - i)[:, None]
    rows = coarse[i] * (1 - f) + coarse[i + 1] * f
    pos = np.arange(shape[1], dtype=np.float32) / step
    j = pos.astype(np.int64)
    g = pos - j
    return rows[:, j] * (1 - g) + rows[:, j + 1] * g


def _fibres(rng: np.random.Generator, shape: tuple[int, int], s: float,
            angle: float) -> np.ndarray:
    """Wavy collagen strands in [0, 1] running along `angle`: a cosine grating whose phase
    is displaced by smooth noise (waviness) and which is cut into segments by a second noise."""
    period = 6.0 * s
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    across = ys * np.cos(angle) - xs * np.sin(angle) + 2.5 * period * _noise(rng, shape, 50 * s)
    strands = (0.5 + 0.5 * np.cos(_TWO_PI * across / period)) ** 8
    segments = np.clip(0.2 + 0.8 * _noise(rng, shape, 10 * s), 0.0, 1.0)
    return (strands * segments).astype(np.float32)


# --------------------------------------------------------------------------- nuclei


class _Nuclei(NamedTuple):
    """Elliptical nuclei; lengths in output pixels, theta = direction of the major axis."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray  # semi-major axis
    b: np.ndarray  # semi-minor axis
    theta: np.ndarray
    weight: np.ndarray  # peak H density
    rim: float  # 0 = solid/hyperchromatic, -> 1 = vesicular (dark membrane, pale centre)

    def subset(self, keep: np.ndarray) -> _Nuclei:
        return self._replace(**{f: getattr(self, f)[keep] for f in self._fields if f != "rim"})


@dataclass(frozen=True)
class _Cells:
    """Appearance of one cell population (lengths in 256-px reference pixels)."""

    cyt_h: float  # H density of cytoplasm / matrix around the nuclei
    cyt_e: float  # E density of cytoplasm / matrix
    nuc_len: float  # mean nucleus semi-major axis
    nuc_ratio: float  # minor / major axis
    nuc_w: float  # peak H density of a nucleus
    nuc_rim: float  # vesicular chromatin (see _Nuclei.rim)
    nucleoli: float  # probability of a visible nucleolus
    spacing: float  # typical distance between neighbouring nuclei
    pleo: float  # log-normal sd of nuclear size (pleomorphism)

    def toward(self, other: _Cells, t: float) -> _Cells:
        """Linear interpolation of every parameter (t=0: self, t=1: other)."""
        return _Cells(**{f.name: (1 - t) * getattr(self, f.name) + t * getattr(other, f.name)
                         for f in fields(self)})


def _population(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, cells: _Cells,
                s: float, theta: np.ndarray | None = None) -> _Nuclei:
    """Nuclei of population `cells` at the given centres (random sizes / orientations)."""
    n = len(x)
    a = np.maximum(cells.nuc_len * s * rng.lognormal(0.0, cells.pleo, n), 0.9)
    b = np.clip(a * cells.nuc_ratio * rng.uniform(0.85, 1.15, n), 0.7, a)
    if theta is None:
        theta = rng.uniform(0.0, np.pi, n)
    weight = cells.nuc_w * rng.uniform(0.85, 1.15, n)
    return _Nuclei(x, y, a, b, theta, weight, cells.nuc_rim)


def _jittered_grid(rng: np.random.Generator, size: int, spacing: float,
                   jitter: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """Hexagonally offset grid of points with random jitter: evenly crowded cell centres
    (a Poisson process would give unrealistic overlaps and empty holes)."""
    rows = np.arange(spacing / 2, size + spacing, spacing * 0.866)
    cols = np.arange(0.0, size + spacing, spacing)
    y, x = np.meshgrid(rows, cols, indexing="ij")
    x = x + (np.arange(len(rows)) % 2)[:, None] * spacing / 2
    x = x + rng.uniform(-jitter, jitter, x.shape) * spacing
    y = y + rng.uniform(-jitter, jitter, y.shape) * spacing
    inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
    return x[inside], y[inside]


def _stamp(shape: tuple[int, int], nuc: _Nuclei) -> np.ndarray:
    """Sum of soft elliptical nucleus profiles. Vectorised over nuclei, in groups of equal
    window size so that a few large nuclei do not inflate the work for all the small ones."""
    half = np.ceil(nuc.a).astype(np.int64) + 1
    parts = [_stamp_group(shape, nuc.subset(half == k), int(k)) for k in np.unique(half)]
    idx = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    val = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
    out = np.bincount(idx, weights=val, minlength=shape[0] * shape[1])
    return out.reshape(shape).astype(np.float32)


def _per_nucleus(values: np.ndarray) -> np.ndarray:
    """Per-nucleus values shaped to broadcast over (nucleus, row, col) windows."""
    return np.asarray(values, np.float32)[:, None, None]


def _stamp_group(shape: tuple[int, int], nuc: _Nuclei, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel indices and values of nuclei drawn in (2k+1)^2 windows."""
    h, w = shape
    off = np.arange(-k, k + 1)
    px = np.floor(nuc.x).astype(np.int64)[:, None, None] + off[None, None, :]
    py = np.floor(nuc.y).astype(np.int64)[:, None, None] + off[None, :, None]
    col = _per_nucleus
    dx = (px + 0.5).astype(np.float32) - col(nuc.x)
    dy = (py + 0.5).astype(np.float32) - col(nuc.y)
    c, s = col(np.cos(nuc.theta)), col(np.sin(nuc.theta))
    u = (dx * c + dy * s) / col(nuc.a)
    v = (dy * c - dx * s) / col(nuc.b)
    d = np.sqrt(u * u + v * v)
    # ~1 px soft edge, so small nuclei stay round instead of turning into pixel crosses
    val = np.clip((1.0 - d) * col(nuc.b) + 0.5, 0.0, 1.0) * col(nuc.weight)
    if nuc.rim:
        val *= 1.0 - nuc.rim * (1.0 - np.minimum(d, 1.0) ** 4)
    valid = (val > 0) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
    return np.broadcast_to(py * w + px, valid.shape)[valid], val[valid]


def _nucleoli(rng: np.random.Generator, nuc: _Nuclei, prob: float, s: float) -> _Nuclei:
    """Small dark dots inside a random subset of nuclei, slightly off-centre."""
    keep = rng.random(len(nuc.x)) < prob
    host = nuc.subset(keep)
    n = len(host.x)
    ang = rng.uniform(0, _TWO_PI, n)
    off = rng.uniform(0, 0.35, n) * host.b
    r = np.maximum(0.17 * host.a, max(0.8 * s, 0.7))
    return _Nuclei(host.x + off * np.cos(ang), host.y + off * np.sin(ang), r, r,
                   np.zeros(n), np.full(n, 0.09), 0.0)


def _draw_cells(rng: np.random.Generator, shape: tuple[int, int], nuc: _Nuclei,
                cells: _Cells, s: float) -> np.ndarray:
    """H density of the nuclei (with nucleoli) of one population. Overlaps saturate softly:
    a plain sum turns stacked nuclei into translucent, ever darker ellipses."""
    cap = 1.3 * cells.nuc_w
    dense = cap * np.tanh(_stamp(shape, nuc) / cap)
    return dense + _stamp(shape, _nucleoli(rng, nuc, cells.nucleoli, s))


def _keep_where(rng: np.random.Generator, x: np.ndarray, y: np.ndarray,
                prob_map: np.ndarray) -> np.ndarray:
    """Boolean selection of points kept with the probability read from `prob_map`."""
    return rng.random(len(x)) < prob_map[y.astype(np.int64), x.astype(np.int64)]


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class _Blob:
    """Star-shaped region: a rotated ellipse (semi-axes ax, ay) whose radius is modulated by
    harmonics, r(phi) = 1 + sum_k amps[k] cos((k + 2) phi + phases[k])."""

    cx: float
    cy: float
    ax: float
    ay: float
    angle: float
    amps: np.ndarray
    phases: np.ndarray

    @property
    def extent(self) -> float:
        return max(self.ax, self.ay) * (1.0 + float(np.abs(self.amps).sum()))

    def radius(self, phi: np.ndarray) -> np.ndarray:
        orders = _HARMONIC_ORDERS[: len(self.amps)]
        return 1.0 + np.cos(np.asarray(phi)[..., None] * orders + self.phases) @ self.amps

    def rho(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Normalised radius of pixel centres: < 1 inside the blob."""
        dx, dy = xs - self.cx, ys - self.cy
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = (dx * c + dy * s) / self.ax
        v = (dy * c - dx * s) / self.ay
        return np.hypot(u, v) / self.radius(np.arctan2(v, u))

    def to_image(self, phi: np.ndarray, rho: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Image (x, y) of the local polar point (phi, rho), rho relative to the boundary."""
        r = rho * self.radius(phi)
        u, v = r * np.cos(phi) * self.ax, r * np.sin(phi) * self.ay
        c, s = math.cos(self.angle), math.sin(self.angle)
        return self.cx + u * c - v * s, self.cy + u * s + v * c

    def normal(self, phi: np.ndarray) -> np.ndarray:
        """Image angle of the outward normal of the underlying ellipse."""
        return np.arctan2(np.sin(phi) / self.ay, np.cos(phi) / self.ax) + self.angle

    def local_radius(self, phi: np.ndarray) -> np.ndarray:
        """Distance (px) from the centre to the boundary in direction phi."""
        return self.radius(phi) * np.hypot(self.ax * np.cos(phi), self.ay * np.sin(phi))


def _random_blob(rng: np.random.Generator, cx: float, cy: float, radius: float,
                 max_aspect: float, irregularity: float, orders: int) -> _Blob:
    """Blob of geometric-mean radius `radius` with random elongation and wobble."""
    aspect = rng.uniform(1.0, max_aspect)
    amps = rng.normal(0.0, irregularity, orders) / np.arange(1, orders + 1) ** 0.5
    return _Blob(cx, cy, radius * aspect ** 0.5, radius / aspect ** 0.5, rng.uniform(0, np.pi),
                 np.clip(amps, -0.3, 0.3).astype(np.float32),
                 rng.uniform(0, _TWO_PI, orders).astype(np.float32))


def _union(shape: tuple[int, int], blobs: list[_Blob], step: float = 1.0) -> np.ndarray:
    """Boolean union of blobs sampled at cell centres of a grid with `step`-px cells; each
    blob is evaluated only inside its bounding box."""
    out = np.zeros(shape, bool)
    for blob in blobs:
        r = blob.extent + step
        y0, y1 = max(int((blob.cy - r) / step), 0), min(int((blob.cy + r) / step) + 1, shape[0])
        x0, x1 = max(int((blob.cx - r) / step), 0), min(int((blob.cx + r) / step) + 1, shape[1])
        if y0 >= y1 or x0 >= x1:
            continue
        ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5) * step
        xs = (np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5) * step
        out[y0:y1, x0:x1] |= blob.rho(ys, xs) < 1.0
    return out


# --------------------------------------------------------------------------- stain -> RGB


def _to_rgb(rng: np.random.Generator, h: np.ndarray, e: np.ndarray, d: np.ndarray,
            stain_jitter: float) -> np.ndarray:
    """Stain densities -> uint8 RGB via inverse colour deconvolution (hed2rgb model)."""
    # Per-image staining strength (protocol / section thickness) and stain hue (batch /
    # scanner) variation; with stain_jitter=0 this is exactly skimage.color.hed2rgb.
    strength = np.exp(0.3 * stain_jitter * rng.standard_normal(2))
    vectors = rgb_from_hed + 0.05 * stain_jitter * rng.standard_normal((3, 3))
    vectors = np.clip(vectors, 0.02, None)  # absorbances stay positive
    vectors *= np.linalg.norm(rgb_from_hed, axis=1, keepdims=True) / np.linalg.norm(
        vectors, axis=1, keepdims=True)  # keep each stain's strength, change only its hue
    hed = np.stack([h * strength[0], e * strength[1], d], axis=-1)
    hed = gaussian(hed, sigma=0.6, channel_axis=-1)  # optics: soft, alias-free edges
    rgb = combine_stains(hed, vectors)
    rgb += rng.normal(0.0, 1.2 / 255, rgb.shape)  # sensor noise
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def _finish(rng: np.random.Generator, h: np.ndarray, e: np.ndarray, d: np.ndarray, s: float,
            stain_jitter: float) -> np.ndarray:
    """Chromatin grain and uneven section thickness, then conversion to RGB."""
    shape = h.shape
    thickness = 1.0 + 0.08 * _noise(rng, shape, 128 * s)
    grain = 1.0 + 0.15 * _noise(rng, shape, 1.2 * s)
    h = np.minimum(h * grain, 0.16) * thickness  # cap: overlapping nuclei must not saturate
    return _to_rgb(rng, h, e * thickness, d, stain_jitter)


def _lerp(a: float, b: float, t: float) -> float:
    return (1 - t) * a + t * b


# --------------------------------------------------------------------------- GlaS


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


# --------------------------------------------------------------------------- Camelyon


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

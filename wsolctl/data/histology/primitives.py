"""The primitives of the procedural H&E renderer (:mod:`wsolctl.data.histology`): argument checks,
textures, nuclei, shapes and the stain-to-RGB conversion. Package-internal: the GlaS and Camelyon
layers (``glas.py``, ``camelyon.py``) compose them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
from skimage.color import combine_stains, rgb_from_hed
from skimage.filters import gaussian

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

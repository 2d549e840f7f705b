"""Tissue detection as in the survey's reference code: on a low-resolution overview, tissue =
(HSV saturation > Otsu) ∧ ¬(R, G and B all > their Otsu thresholds) ∧ (R, G, B all > ``rgb_min``).
The thresholds found on the overview are reused to re-check patches at level 0."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TissueThresholds:
    saturation: float
    red: float
    green: float
    blue: float
    rgb_min: int = 10


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    values = values.ravel()
    if values.size == 0 or values.min() == values.max():
        return float(values.max()) if values.size else 0.0  # flat image: nothing is above it
    return float(threshold_otsu(values))


def _saturation(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float32)
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    return np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)  # HSV S in [0, 1]


def otsu_thresholds(rgb: np.ndarray, rgb_min: int = 10) -> TissueThresholds:
    """Otsu thresholds of an RGB uint8 overview."""
    return TissueThresholds(_otsu(_saturation(rgb)), _otsu(rgb[:, :, 0]), _otsu(rgb[:, :, 1]),
                            _otsu(rgb[:, :, 2]), rgb_min)


def tissue_mask(rgb: np.ndarray, thresholds: TissueThresholds) -> np.ndarray:
    """Boolean (H, W) tissue mask of an RGB uint8 image."""
    t = thresholds
    bright = (rgb[:, :, 0] > t.red) & (rgb[:, :, 1] > t.green) & (rgb[:, :, 2] > t.blue)
    not_black = (rgb > t.rgb_min).all(axis=2)
    return (_saturation(rgb) > t.saturation) & ~bright & not_black


def tissue_fraction(rgb: np.ndarray, thresholds: TissueThresholds) -> float:
    return float(tissue_mask(rgb, thresholds).mean())

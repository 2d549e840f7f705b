"""Behaviour of the procedural H&E renderer (wsolctl.data.histology: primitives, glas, camelyon)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import rgb2hed

from wsolctl.data.histology import render_camelyon, render_glas

SIZE = 128
SEEDS = range(6)
RENDERERS = [render_glas, render_camelyon]


def _roi_contrast(render, positive: bool, channel: int, similarity: float) -> float:
    """Mean over seeds of (mean stain density inside the mask - outside it)."""
    diffs = []
    for seed in SEEDS:
        image, mask = render(seed, SIZE, positive, similarity=similarity)
        density = rgb2hed(image)[..., channel]
        diffs.append(density[mask].mean() - density[~mask].mean())
    return float(np.mean(diffs))


@pytest.mark.parametrize("render", RENDERERS)
@pytest.mark.parametrize("positive", [False, True])
@pytest.mark.parametrize("size", [32, 77, SIZE])
def test_shapes_and_dtypes(render, positive, size):
    image, mask = render(3, size, positive)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == bool


@pytest.mark.parametrize("render", RENDERERS)
def test_deterministic_per_seed(render):
    image_a, mask_a = render(11, SIZE, True, similarity=0.3, stain_jitter=0.5)
    image_b, mask_b = render(11, SIZE, True, similarity=0.3, stain_jitter=0.5)
    assert image_a.tobytes() == image_b.tobytes()
    assert np.array_equal(mask_a, mask_b)
    image_c, mask_c = render(12, SIZE, True, similarity=0.3, stain_jitter=0.5)
    assert np.abs(image_a.astype(int) - image_c.astype(int)).mean() > 5
    assert not np.array_equal(mask_a, mask_c)


def test_camelyon_masks():
    for seed in SEEDS:
        assert not render_camelyon(seed, SIZE, False)[1].any()
        fraction = render_camelyon(seed, SIZE, True)[1].mean()
        assert 0.05 < fraction < 0.7, fraction


@pytest.mark.parametrize("malignant", [False, True])
def test_every_glas_image_has_glands(malignant):
    fractions = [render_glas(seed, SIZE, malignant)[1].mean() for seed in SEEDS]
    assert min(fractions) > 0.1 and max(fractions) < 0.8, fractions
    assert 0.25 < np.mean(fractions) < 0.65


def test_roi_scale_scales_roi_area():
    for render in RENDERERS:
        small = np.mean([render(seed, SIZE, True, roi_scale=0.5)[1].mean() for seed in SEEDS])
        large = np.mean([render(seed, SIZE, True, roi_scale=1.0)[1].mean() for seed in SEEDS])
        assert small < 0.6 * large


@pytest.mark.parametrize("render, positive, channel", [
    (render_glas, False, 0),  # glands are richer in haematoxylin (nuclei) than stroma
    (render_glas, True, 0),
    (render_camelyon, True, 1),  # tumour nests carry more eosin (cytoplasm) than lymphocytes
])
def test_similarity_controls_roi_contrast(render, positive, channel):
    distinct = _roi_contrast(render, positive, channel, 0.0)
    halfway = _roi_contrast(render, positive, channel, 0.5)
    alike = _roi_contrast(render, positive, channel, 1.0)
    assert distinct > 0.015
    assert distinct > halfway > alike
    assert abs(alike) < 0.3 * distinct


def test_malignant_glands_have_denser_nuclei_than_benign():
    def gland_h(malignant: bool) -> float:
        values = []
        for seed in SEEDS:
            image, mask = render_glas(seed, SIZE, malignant)
            values.append(rgb2hed(image)[..., 0][mask].mean())
        return float(np.mean(values))

    assert gland_h(True) > 1.3 * gland_h(False)


@pytest.mark.parametrize("render", RENDERERS)
@pytest.mark.parametrize("positive", [False, True])
def test_stain_statistics_look_like_h_and_e(render, positive):
    for seed in range(3):
        hed = rgb2hed(render(seed, 256, positive)[0])
        h, e, d = hed[..., 0], hed[..., 1], hed[..., 2]
        assert 0.003 < np.median(h) < 0.08
        assert 0.008 < np.median(e) < 0.05
        assert 0.04 < np.percentile(h, 95) < 0.2  # nuclei present, not saturated
        assert np.median(d) < 0.01  # no brown (DAB) staining


def test_stain_jitter_varies_colour_but_not_geometry():
    plain, mask_plain = render_glas(5, SIZE, False, stain_jitter=0.0)
    jittered, mask_jittered = render_glas(5, SIZE, False, stain_jitter=1.0)
    assert np.array_equal(mask_plain, mask_jittered)
    assert np.abs(plain.astype(int) - jittered.astype(int)).mean() > 3


@pytest.mark.parametrize("render", RENDERERS)
@pytest.mark.parametrize("kwargs", [
    {"size": 31},
    {"size": 64.0},
    {"seed": -1},
    {"roi_scale": 0.0},
    {"roi_scale": -1.0},
    {"roi_scale": float("nan")},
    {"similarity": -0.1},
    {"similarity": 1.5},
    {"similarity": float("nan")},
    {"stain_jitter": 1.01},
    {"stain_jitter": -0.5},
])
def test_invalid_arguments_raise(render, kwargs):
    args = {"seed": 0, "size": 64, **kwargs}
    seed, size = args.pop("seed"), args.pop("size")
    with pytest.raises(ValueError):
        render(seed, size, True, **args)

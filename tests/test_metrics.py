"""wsolctl.metrics: hand-computed cases, equality with per-image np.histogram, streaming, prep."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsolctl.metrics import LocalizationMeter, prepare_cams, prepare_masks
from wsolctl.metrics.pixel import _float32_quantisation_is_exact


def _load_reference():
    """ReferenceMeter (per-image np.histogram) lives with the benchmark that times it."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_meter.py"
    spec = importlib.util.spec_from_file_location("bench_meter", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ReferenceMeter


ReferenceMeter = _load_reference()


def score(cams, masks, n_thresholds: int = 1000):
    meter = LocalizationMeter(n_thresholds)
    meter.update(torch.as_tensor(np.asarray(cams, dtype=np.float32)), torch.as_tensor(np.asarray(masks, bool)))
    return meter.compute()


def histograms(meter: LocalizationMeter) -> np.ndarray:
    return meter.state_dict()["histogram"].numpy()


def random_split(seed: int, shape=(6, 32, 32), dtype=np.float32):
    """Random scores in [0, 1] with a quarter of the pixels set exactly on bin edges."""
    rng = np.random.default_rng(seed)
    cams = rng.random(shape).astype(dtype)
    edges = np.concatenate([np.arange(0, 1, 0.001), [1.0]]).astype(dtype)
    on_edge = rng.random(shape) < 0.25
    cams[on_edge] = rng.choice(edges, on_edge.sum())
    return cams, rng.random(shape) < 0.4


# Four-pixel-ish split with dyadic scores (exact in float32 and on the float64 grid):
# foreground {0.875, 0.375}, background {0.625, 0.125, 0.125}.
HAND_CAMS = [[[0.875, 0.375, 0.625, 0.125, 0.125]]]
HAND_MASKS = [[[1, 1, 0, 0, 0]]]


def test_hand_computed_pxap_and_marginals():
    result = score(HAND_CAMS, HAND_MASKS)
    # Descending thresholds: (0.625, 0.875] → TP 1, FP 0: precision 1, recall 1/2;
    # (0.375, 0.625] → TP 1, FP 1: recall unchanged; (0.125, 0.375] → TP 2, FP 1: precision 2/3,
    # recall 1. PxAP = 100·(1·1/2 + 2/3·1/2) = 83.33…
    assert result.pxap == pytest.approx(100 * (0.5 + 1 / 3))
    # Window τ_l = l/1000, l = 1..1000 (the reference code's). TP(τ_l) = 1 for l = 1..375
    # (375 values), 1/2 for l = 376..875 (500 values), else 0.
    assert result.tp == pytest.approx(100 * 0.001 * (375 + 500 / 2))  # 62.5
    assert result.fn == pytest.approx(100 - 62.5)
    # FP(τ_l) = 1 for l = 1..125 (125 values), 1/3 for l = 126..625 (500 values), else 0.
    assert result.fp == pytest.approx(100 * 0.001 * (125 + 500 / 3))  # 29.17
    assert result.tn == pytest.approx(100 - result.fp)


def test_hand_computed_operating_point_is_not_mirrored():
    result = score(HAND_CAMS, HAND_MASKS)
    # mIoU per range of τ (counts TP, FN, FP, TN):
    #   τ ≤ .125: (2, 0, 3, 0) → ½(2/5 + 0) = .2;  .125 < τ ≤ .375: (2, 0, 1, 2) → ½(2/3 + 2/3) = .667
    #   .375 < τ ≤ .625: (1, 1, 1, 2) → ½(1/3 + 1/2) = .417;  .625 < τ ≤ .875: (1, 1, 0, 3) → .625
    # Best range (0.125, 0.375]; ties go to its highest grid threshold, 0.375 (the reference code
    # would report the mirrored edge ≈ 0.626).
    assert result.threshold == 0.375
    assert result.miou == pytest.approx(100 * 2 / 3)
    assert (result.tp_at_threshold, result.fn_at_threshold) == (100, 0)
    assert result.fp_at_threshold == pytest.approx(100 / 3)
    assert result.tn_at_threshold == pytest.approx(200 / 3)
    assert result.dice_fg == pytest.approx(100 * 4 / 5)  # 2·2 / (2·2 + 0 + 1)
    assert result.dice_bg == pytest.approx(100 * 4 / 5)  # 2·2 / (2·2 + 0 + 1)


def test_separable_scores_threshold_in_gap():
    cams = np.where(np.eye(8, dtype=bool), 0.8, 0.2)[None]
    result = score(cams, np.eye(8, dtype=bool)[None])
    assert 0.2 < result.threshold <= 0.8
    assert result.threshold == pytest.approx(0.8)  # highest grid value of the tie range
    assert result.miou == 100 and result.pxap == 100
    assert (result.tp_at_threshold, result.fn_at_threshold, result.fp_at_threshold, result.tn_at_threshold) \
        == (100, 0, 0, 100)


def test_perfect_map():
    masks = np.zeros((2, 4, 4), bool)
    masks[:, :2] = True  # 16 of 32 pixels foreground
    result = score(masks.astype(np.float32), masks)
    assert result.pxap == 100  # first step (≥ 1): precision 1, recall 0 → 1
    assert result.tp == pytest.approx(100)  # fg scores 1 ≥ every τ in (0, 1]
    assert result.fp == 0 and result.tn == 100  # bg scores 0 are below every τ > 0
    assert result.miou == 100 and result.threshold == 1.0  # ≥ 1: the fg pixels exactly


def test_inverted_map_scores_like_the_trivial_baseline():
    masks = np.zeros((1, 4, 5), bool)
    masks[0, 0] = True  # 5 of 20 pixels
    result = score((~masks).astype(np.float32), masks)
    # Every threshold > 0 predicts only background pixels (precision 0); τ = 0 predicts all:
    # precision 5/20 at recall 0 → 1.
    assert result.pxap == pytest.approx(25.0)
    assert result.tp == 0 and result.fn == 100  # fg scores 0 are below every τ in (0, 1]
    assert result.fp == pytest.approx(100) and result.tn == pytest.approx(0)


def reference_operating_point(meter) -> float:
    """The survey code's ``MaskEvaluator.compute``: mIoU over the counts at or above each edge,
    descending (≥ 2, ≥ 1, ≥ 0.999, …, ≥ 0), ``np.argmax`` (the first, i.e. highest, of a tie);
    returned as the real threshold (the reference indexes the ascending edges, mirrored)."""
    bg, fg = histograms(meter)
    tp, fp = fg[::-1].cumsum(), bg[::-1].cumsum()
    fn, tn = fg.sum() - tp, bg.sum() - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        miou = 0.5 * (tp / (tp + fp + fn) + tn / (tn + fp + fn))
    lower_edges = np.append(np.arange(0, 1, 1 / meter.n_thresholds), [1.0, 2.0])
    return float(lower_edges[::-1][np.argmax(miou)])


def test_anti_correlated_map_predicts_nothing_as_the_reference():
    """A map high on the background and low on the foreground: every threshold that predicts some
    pixels does worse than predicting nothing (mIoU = ½·|bg|/|all|), which the reference's search
    includes (≥ 2) and picks."""
    masks = np.zeros((2, 8, 8), bool)
    masks[:, 2:5, 2:5] = True  # 9 of 64 pixels foreground
    cams = np.where(masks, 0.1, 0.9).astype(np.float32)
    meter = LocalizationMeter()
    meter.update(cams, masks)
    result = meter.compute()
    assert result.threshold == 2.0 == reference_operating_point(meter)
    assert result.miou == pytest.approx(50 * 55 / 64)  # IoU_fg 0, IoU_bg = 55/64
    assert (result.tp_at_threshold, result.fp_at_threshold) == (0, 0)


@pytest.mark.parametrize("seed", range(4))
def test_operating_point_is_the_reference_codes(seed):
    cams, masks = random_split(seed)
    meter = LocalizationMeter()
    meter.update(cams, masks)
    assert meter.compute().threshold == reference_operating_point(meter)
    exact = np.where(masks, 1.0, 0.3).astype(np.float32)  # fg exactly 1: "≥ 1" is the best point
    meter.reset()
    meter.update(exact, masks)
    assert meter.compute().threshold == 1.0 == reference_operating_point(meter)


def test_constant_map_gives_foreground_fraction():
    masks = np.zeros((3, 10, 10), bool)
    masks[:, :3] = True  # 30 %
    cams = prepare_cams(torch.full((3, 5, 5), 7.0), (10, 10))
    assert torch.count_nonzero(cams) == 0
    assert score(cams.numpy(), masks).pxap == pytest.approx(30.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("n_thresholds", [1000, 100, 49])
def test_identical_to_per_image_np_histogram(dtype, n_thresholds):
    cams, masks = random_split(n_thresholds, dtype=dtype)
    meter, reference = LocalizationMeter(n_thresholds), ReferenceMeter(n_thresholds)
    meter.update(torch.from_numpy(cams), torch.from_numpy(masks))
    reference.update(cams, masks)
    counts = histograms(meter)
    np.testing.assert_array_equal(counts[1], reference.fg)
    np.testing.assert_array_equal(counts[0], reference.bg)
    assert meter.compute().pxap == reference.pxap()


def test_values_exactly_on_edges():
    edges = np.concatenate([np.arange(0, 1, 0.001), [1.0]])
    below = np.nextafter(edges.astype(np.float32), np.float32(-1))[1:]
    above = np.nextafter(edges.astype(np.float32), np.float32(2))[:-1]
    values = np.concatenate([edges.astype(np.float32), below, above, [0.5, 0.0, 1.0]])
    for cams in (values, values.astype(np.float64), edges):  # float32 path and exact float64 edges
        masks = np.arange(cams.size) % 2 == 0
        meter, reference = LocalizationMeter(), ReferenceMeter()
        meter.update(cams[None], masks[None])
        reference.update(cams[None], masks[None])
        np.testing.assert_array_equal(histograms(meter), np.stack([reference.bg, reference.fg]))


def test_fast_path_exactness_check():
    edges = LocalizationMeter(1000)._edges
    assert _float32_quantisation_is_exact(edges, 1000)
    assert _float32_quantisation_is_exact(LocalizationMeter(100)._edges, 100)
    # Not vacuous: a wrong scale, or an edge moved onto the next float32 above 0.5, is caught.
    assert not _float32_quantisation_is_exact(edges, 1001)
    moved = edges.copy()
    moved[500] = np.nextafter(np.float32(0.5), np.float32(1))
    assert not _float32_quantisation_is_exact(moved, 1000)


def test_curves_match_brute_force_thresholding():
    cams, masks = random_split(1, shape=(3, 12, 12))
    result = score(cams, masks, n_thresholds=100)
    fg, bg = cams[masks].astype(np.float64), cams[~masks].astype(np.float64)
    tau = np.append(np.arange(0, 1, 0.01), [1.0, 2.0])  # the grid, then "≥ 1" and "predict nothing"
    tp = np.array([(fg >= t).sum() for t in tau], dtype=float)
    fp = np.array([(bg >= t).sum() for t in tau], dtype=float)
    fn, tn = fg.size - tp, bg.size - fp
    np.testing.assert_allclose(result.curves["tp"], 100 * tp / fg.size)
    np.testing.assert_allclose(result.curves["fp"], 100 * fp / bg.size)
    miou = 50 * (tp / (tp + fn + fp) + tn / (tn + fn + fp))
    np.testing.assert_allclose(result.curves["miou"], miou)
    best = np.flatnonzero(miou == miou.max())[-1]
    assert result.threshold == tau[best] and result.miou == pytest.approx(miou[best])
    window = tau[1:-1]  # TP*: τ = 0.01 .. 1.0
    assert result.tp == pytest.approx(np.sum([100 * (fg >= t).mean() for t in window]) * 0.01)
    assert result.fp == pytest.approx(np.sum([100 * (bg >= t).mean() for t in window]) * 0.01)


def test_marginals_match_the_reference_area():
    """The survey code's ``MaskEvaluator._area``: ``v[1:idx_1 + 1] · diff(edges[0:idx_1 + 1])`` on
    the counts at or above each edge, descending (τ = 1.0, 0.999, …, 0.001)."""
    cams, masks = random_split(6)
    meter = LocalizationMeter()
    meter.update(cams, masks)
    bg, fg = histograms(meter)
    edges = np.append(np.arange(0, 1, 0.001), [1.0, 2.0, 3.0])
    idx_1 = np.where(edges == 1.0)[0][0]

    def area(v):
        return (v[1:idx_1 + 1] * np.diff(edges[0:idx_1 + 1])).sum()

    tp, fp = fg[::-1].cumsum(), bg[::-1].cumsum()
    result = meter.compute()
    assert result.tp == pytest.approx(100 * area(tp) / fg.sum(), rel=1e-9)
    assert result.fn == pytest.approx(100 * area(fg.sum() - tp) / fg.sum(), rel=1e-9)
    assert result.fp == pytest.approx(100 * area(fp) / bg.sum(), rel=1e-9)
    assert result.tn == pytest.approx(100 * area(bg.sum() - fp) / bg.sum(), rel=1e-9)


def test_marginals_are_complementary():
    cams, masks = random_split(2)
    result = score(cams, masks)
    assert result.tp + result.fn == pytest.approx(100)
    assert result.fp + result.tn == pytest.approx(100)
    assert set(result.curves) >= {"threshold", "precision", "recall", "tp", "fn", "fp", "tn", "miou"}
    assert all(len(curve) == 1002 for curve in result.curves.values())  # the grid, 1 and 2
    assert "curves" not in result.as_dict() and result.as_dict()["pxap"] == result.pxap


def test_streaming_equals_one_shot():
    cams, masks = random_split(3, shape=(10, 16, 16))
    whole = LocalizationMeter()
    whole.update(cams, masks)
    streamed = LocalizationMeter()
    for start, stop in [(0, 1), (1, 4), (4, 4), (4, 10)]:
        streamed.update(torch.from_numpy(cams[start:stop]), torch.from_numpy(masks[start:stop]))
    np.testing.assert_array_equal(histograms(streamed), histograms(whole))
    assert streamed.compute().as_dict() == whole.compute().as_dict()


def test_merge_and_state_dict_round_trip():
    cams, masks = random_split(4)
    left, right, both = LocalizationMeter(), LocalizationMeter(), LocalizationMeter()
    left.update(cams[:3], masks[:3])
    right.update(cams[3:], masks[3:])
    both.update(cams, masks)
    left.merge(right)
    restored = LocalizationMeter()
    restored.load_state_dict(left.state_dict())
    np.testing.assert_array_equal(histograms(restored), histograms(both))
    with pytest.raises(ValueError):
        restored.merge(LocalizationMeter(100))
    restored.reset()
    assert histograms(restored).sum() == 0


def test_state_size_does_not_grow():
    meter = LocalizationMeter()
    cams, masks = random_split(5, shape=(4, 64, 64))
    sizes = []
    for _ in range(200):
        meter.update(cams, masks)
        sizes.append(meter.state_dict()["histogram"].nbytes)
    assert set(sizes) == {2 * 1002 * 8}
    assert histograms(meter).sum() == 200 * cams.size  # int64 counts, nothing lost


def test_degenerate_splits_give_nan_not_errors():
    only_bg = score(np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2)))
    assert np.isnan(only_bg.pxap) and np.isnan(only_bg.tp) and np.isnan(only_bg.fn)
    assert only_bg.fp == pytest.approx(50.0)  # FP(τ) = 1 for τ ≤ 0.5: 500 values of τ in (0, 1]
    only_fg = score(np.full((1, 2, 2), 0.5), np.ones((1, 2, 2)))
    assert only_fg.pxap == 100 and np.isnan(only_fg.fp) and np.isnan(only_fg.tn)
    empty = LocalizationMeter().compute()
    assert np.isnan(empty.pxap) and np.isnan(empty.threshold) and np.isnan(empty.miou)


def test_update_rejects_invalid_input():
    meter = LocalizationMeter()
    with pytest.raises(ValueError):
        meter.update(torch.tensor([[0.5, 1.5]]), torch.tensor([[True, False]]))
    with pytest.raises(ValueError):
        meter.update(torch.tensor([[0.5, float("nan")]]), torch.tensor([[True, False]]))
    with pytest.raises(ValueError):
        meter.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3, dtype=torch.bool))
    meter.update(torch.tensor([[0.5, 1.0]]), torch.tensor([[255, 0]], dtype=torch.uint8))  # non-zero = fg
    assert histograms(meter)[1].sum() == 1


def test_prepare_cams_normalises_per_image_before_resizing():
    cams = torch.zeros(2, 3, 3)
    cams[0, 1, 1] = 4.0  # interior maximum: not reached by the upsampled grid
    cams[1] = torch.arange(9.0).view(3, 3) * 100 - 50
    out = prepare_cams(cams, (6, 6))
    assert out.shape == (2, 6, 6) and out.dtype == torch.float32
    expected = F.interpolate(torch.stack([cams[0] / 4, (cams[1] + 50) / 800])[:, None], size=(6, 6),
                             mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(out, expected)
    assert out[0].max() < 1  # min-max after resizing would have stretched it to 1


def test_prepare_cams_degenerate_maps_become_zeros():
    cams = torch.rand(4, 5, 5)
    cams[0] = 3.0  # constant
    cams[1] = float("nan")  # NaN map
    cams[2, 2, 2] = float("nan")  # a NaN entry poisons the map's min-max, as in wsolevaluation
    out = prepare_cams(cams.double().numpy(), (7, 7))
    assert out.dtype == torch.float32 and not torch.isnan(out).any()
    assert torch.count_nonzero(out[:3]) == 0
    assert 0 <= out[3].min() and out[3].max() <= 1 and out[3].max() > 0.5


def test_prepare_masks_nearest_and_nonzero_foreground():
    masks = np.array([[[0, 255], [7, 0]]], dtype=np.uint8)
    out = prepare_masks(masks, (4, 4))
    assert out.dtype == torch.bool
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    assert torch.equal(out[0], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    cams, masks = random_split(6, shape=(8, 64, 64))
    cpu, gpu = LocalizationMeter(), LocalizationMeter()
    cpu.update(cams, masks)
    gpu.update(torch.from_numpy(cams).cuda(), torch.from_numpy(masks).cuda())
    np.testing.assert_array_equal(histograms(gpu), histograms(cpu))

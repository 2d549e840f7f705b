"""Confidence intervals (issue 25): per-image statistics add up to the meters' states, the vectorised
recomputation equals the meters' own, and the stratified bootstrap behaves as a bootstrap should
(contains the estimate, 1/√n width, paired differences, determinism, agreement with an independent
numpy bootstrap)."""
import numpy as np
import polars as pl
import pytest
import torch

from wsolctl import metrics as registry
from wsolctl.engine.pseudo import Otsu
from wsolctl.metrics import LocalizationMeter
from wsolctl.metrics.pixel import localization_columns
from wsolctl.results import bootstrap
from wsolctl.results.intervals import resamplers


def _study(n_per_class: int, seed: int = 0, size: int = 24):
    """CAM-like maps of a two-class test set: class 1 images hold a disc of foreground, class 0 none;
    each map is the mask blurred plus per-image noise of random strength (so images differ)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    maps, masks, labels = [], [], []
    for label in (0, 1):
        for _ in range(n_per_class):
            cy, cx, r = rng.uniform(6, size - 6, 2).tolist() + [rng.uniform(3, 7)]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2) & bool(label)
            noisy = 0.6 * mask + rng.uniform(0.1, 0.9) * rng.random((size, size))
            maps.append((noisy - noisy.min()) / (noisy.max() - noisy.min()))
            masks.append(mask)
            labels.append(label)
    return torch.tensor(np.array(maps), dtype=torch.float32), torch.tensor(np.array(masks)), np.array(labels)


def _histograms(maps, masks, thresholds=100):
    meter = LocalizationMeter(thresholds, per_image=True)
    for lo in range(0, len(maps), 5):  # several batches, as an evaluation feeds them
        meter.update(maps[lo:lo + 5], masks[lo:lo + 5])
    return meter


@pytest.mark.parametrize("thresholds", [1000, 50])
def test_per_image_histograms_add_up_and_give_the_meters_numbers(thresholds):
    maps, masks, _ = _study(6)
    masks[0, :3] = True  # a negative image with a little foreground, and an anti-correlated one
    maps[1] = 1 - maps[1]
    meter = _histograms(maps, masks, thresholds)
    per_image = meter.per_image()
    assert per_image.shape == (12, 2, thresholds + 2)
    assert (per_image.sum(0) == meter.state_dict()["histogram"].numpy()).all()
    alone = LocalizationMeter(thresholds)
    alone.update(maps[7:8], masks[7:8])
    assert (per_image[7] == alone.state_dict()["histogram"].numpy()).all()
    for rows in (slice(None), slice(0, 6), slice(0, 1)):  # all, negatives only (no fg: NaN PxAP), one image
        reference = LocalizationMeter(thresholds)
        reference.update(maps[rows], masks[rows])
        expected = reference.compute().as_dict()
        found = localization_columns(per_image[rows].sum(0)[None], thresholds)
        for name, value in expected.items():
            assert np.isclose(found[name][0], value, rtol=1e-12, atol=1e-9, equal_nan=True), name


def test_metric_plugins_resample_to_their_own_numbers():
    """At the full sample (every image once), each declared resampling gives the meter's values."""
    from types import SimpleNamespace

    maps, masks, _ = _study(5)
    settings = SimpleNamespace(box_thresholds=20)
    chosen = [m for m in registry.installed() if m.resampling and not m.forward_passes] + [Otsu]
    assert {"dice", "maxboxacc-v2", "pointing-game"} <= {m.name for m in chosen}
    localization = LocalizationMeter(100, per_image=True)
    meters = {m: m.meter(registry.MeterContext(settings, None, localization, m.Params())) for m in chosen}
    for lo in range(0, len(maps), 4):
        localization.update(maps[lo:lo + 4], masks[lo:lo + 4])
        for meter in meters.values():
            meter.update(maps[lo:lo + 4], masks[lo:lo + 4], None, None)
    statistics = {"pxap": localization.per_image(),
                  **{m.name: meter.per_image() for m, meter in meters.items() if hasattr(meter, "per_image")}}
    found = bootstrap.columns(np.ones((1, len(maps))), statistics, resamplers(chosen))
    sums = {name: value.sum(0)[None] for name, value in statistics.items()}
    for metric, meter in meters.items():
        own = metric.resampled(sums) if metric.resampling == "sums" else {}  # (dice's: computed with PxAP's above)
        for name, value in meter.compute().items():
            assert np.isclose(found[name][0], value, rtol=1e-12, equal_nan=True), (metric.name, name)
            assert name not in own or np.isclose(own[name][0], value, rtol=1e-12, equal_nan=True), (metric.name, name)


def _pxap_statistic(histograms):
    def statistic(counts):
        return localization_columns(np.einsum("mn,nkb->mkb", counts, histograms), histograms.shape[-1] - 2)["pxap"][None]
    return statistic


def test_interval_contains_the_estimate_is_deterministic_and_stratified():
    maps, masks, labels = _study(10)
    histograms = _histograms(maps, masks).per_image().astype(np.float64)
    drawn = []

    def statistic(counts):
        drawn.append(counts)
        return _pxap_statistic(histograms)(counts)

    first = bootstrap.bootstrap(labels, statistic, 300, 0.95, seed=7)
    assert first.low[0] < first.estimate[0] < first.high[0]
    assert np.isclose(first.estimate[0], _histograms(maps, masks).compute().pxap, rtol=1e-12)
    resampled = np.concatenate([c for c in drawn if len(c) > 1])
    assert (resampled[:, labels == 0].sum(1) == 10).all() and (resampled[:, labels == 1].sum(1) == 10).all()
    again = bootstrap.bootstrap(labels, _pxap_statistic(histograms), 300, 0.95, seed=7)
    assert (again.distribution == first.distribution).all() and again.low == first.low and again.high == first.high
    other = bootstrap.bootstrap(labels, _pxap_statistic(histograms), 300, 0.95, seed=8)
    assert not (other.distribution == first.distribution).all()


def test_four_times_the_images_halve_the_interval():
    widths = []
    for n in (10, 40):
        maps, masks, labels = _study(n, seed=3)
        histograms = _histograms(maps, masks).per_image().astype(np.float64)
        found = bootstrap.bootstrap(labels, _pxap_statistic(histograms), 1000, 0.95, seed=0)
        widths.append(found.high[0] - found.low[0])
    assert 0.35 < widths[1] / widths[0] < 0.7, widths


def test_an_independent_numpy_bootstrap_agrees_within_monte_carlo_error():
    """The PxAP interval from the stored per-image histograms against a plain numpy bootstrap that
    draws image indices per class and pools the histograms itself."""
    maps, masks, labels = _study(12, seed=5)
    histograms = _histograms(maps, masks).per_image()
    ours = bootstrap.bootstrap(labels, _pxap_statistic(histograms.astype(np.float64)), 2000, 0.95, seed=0)
    rng = np.random.default_rng(123)
    pools = [np.flatnonzero(labels == c) for c in (0, 1)]
    values = []
    for _ in range(2000):
        chosen = np.concatenate([rng.choice(pool, len(pool)) for pool in pools])
        meter = LocalizationMeter(100)
        meter.load_state_dict({"n_thresholds": 100, "histogram": torch.from_numpy(histograms[chosen].sum(0))})
        values.append(meter.compute().pxap)
    low, high = np.percentile(values, [2.5, 97.5])
    spread = np.std(values)  # a 2.5 % quantile of 2000 replicates moves by ~0.1 sd between runs
    assert abs(ours.low[0] - low) < 0.3 * spread and abs(ours.high[0] - high) < 0.3 * spread, (ours, low, high, spread)


def test_identical_maps_differ_by_zero_with_even_odds():
    maps, masks, labels = _study(8)
    histograms = _histograms(maps, masks).per_image().astype(np.float64)

    def twins(counts):
        pxap = _pxap_statistic(histograms)(counts)
        return np.concatenate([pxap, pxap])

    found = bootstrap.bootstrap(labels, twins, 200, 0.95, seed=0)
    assert bootstrap.difference(found.distribution[0], found.distribution[1], 0.95) == {
        "difference_ci_low": 0.0, "difference_ci_high": 0.0, "p_improvement": 0.5}
    better = bootstrap.difference(found.distribution[0] + 1, found.distribution[1], 0.95)
    assert better["p_improvement"] == 1.0 and better["difference_ci_low"] == 1.0


def test_two_levels_resample_runs_then_images_and_stay_paired():
    rng = np.random.default_rng(0)
    runs = [rng.normal(loc, 1.0, (2, 500)) for loc in (0.0, 10.0)]  # two runs × two methods × B replicates
    pooled = bootstrap.two_level(runs, seed=1)
    assert pooled.shape == (2, 500)
    assert pooled.std(axis=-1).min() > 3  # the spread between the runs dominates
    same = bootstrap.two_level([np.stack([r[0], r[0]]) for r in runs], seed=1)
    assert (same[0] == same[1]).all()  # both methods drew the same runs and image replicates
    assert (bootstrap.two_level(runs[:1], seed=1) == runs[0]).all()
    assert bootstrap.ranks(np.array([[1.0, 2.0], [2.0, 2.0], [0.0, 3.0]])).tolist() == [[2, 2], [1, 2], [3, 1]]


def test_add_intervals_pairs_methods_over_seeds_and_images(tmp_path):
    """Through the files select writes: two seeds × three methods, "twin" with cam's very maps; the
    comparison of twins is 0 with even odds, the others average over both seeds with their sd."""
    from wsolctl.engine.pseudo import OtsuMeter
    from wsolctl.engine.rundir import RunDir
    from wsolctl.results.intervals import add_intervals

    rows = []
    for seed in (0, 1):
        maps, masks, labels = _study(6, seed=seed)
        for method, shift in (("cam", 0.0), ("twin", 0.0), ("blurry", 0.3)):
            scored = (maps + shift).clamp(0, 1)
            meter, otsu = _histograms(scored, masks), OtsuMeter()
            otsu.update(scored, masks)
            correct = np.arange(len(labels)) % 4 != 0
            RunDir.of(tmp_path, f"run{seed}").write_test_images(
                method, "b-loc", {"labels": labels, "correct": correct},
                {"pxap": meter.per_image(), Otsu.name: otsu.per_image()})
            rows.append({"run_id": f"run{seed}", "dataset": "d", "fold": 0, "seed": seed, "backbone": "b",
                         "method": method, "selection": "b-loc", "threshold_rule": "test-masks",
                         "cl_acc": 100 * correct.mean(), **meter.compute().as_dict(), **otsu.compute()})
    comparisons, ranks = add_intervals(tmp_path, rows, [], 300, 0.9)
    for row in rows:
        assert row["pxap_ci_low"] <= row["pxap"] <= row["pxap_ci_high"]
        assert row["cl_acc_ci_low"] < row["cl_acc"] < row["cl_acc_ci_high"]
    pxap = comparisons.filter(pl.col("metric") == "pxap")
    twins = pxap.filter((pl.col("method_a") == "cam") & (pl.col("method_b") == "twin")).row(0, named=True)
    assert twins["runs"] == 2 and twins["difference"] == 0 and twins["difference_sd"] == 0
    assert (twins["difference_ci_low"], twins["difference_ci_high"], twins["p_improvement"]) == (0, 0, 0.5)
    other = pxap.filter(pl.col("method_a") == "blurry").row(0, named=True)
    mean = np.mean([r["pxap"] for r in rows if r["method"] == "blurry"]) - np.mean(
        [r["pxap"] for r in rows if r["method"] == other["method_b"]])
    assert other["difference"] == pytest.approx(mean) and other["difference_sd"] > 0
    assert other["difference_ci_low"] <= other["difference"] <= other["difference_ci_high"]
    shares = ranks.filter(pl.col("metric") == "pxap").group_by("method").agg(pl.col("share").sum())
    assert shares["share"].round(9).to_list() == [1.0] * 3
    again = [dict(r) for r in rows]
    assert add_intervals(tmp_path, again, [], 300, 0.9)[0].equals(comparisons) and again == rows  # reruns: identical

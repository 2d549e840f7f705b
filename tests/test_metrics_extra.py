"""The metric plugins beyond PxAP (wsolctl/metrics/): hand-computed answers and closed forms."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from wsolctl import metrics
from wsolctl.engine.evaluate import evaluate
from wsolctl.metrics import LocalizationMeter
from wsolctl.metrics.boxes import MaxBoxAccV2Meter, box_iou, contour_boxes, mask_boxes
from wsolctl.metrics.faithfulness import FaithfulnessMeter, blurred
from wsolctl.metrics.pointing import PointingGameMeter
from wsolctl.metrics.roi_images import RoiImagesMeter
from wsolctl.recipe.evaluation import Evaluation

ALL = ["pxap", "maxboxacc-v2", "dice", "pointing-game", "roi-images", "deletion", "insertion"]


# ----------------------------------------------------------------------------- boxes
def test_box_iou_counts_inclusive_pixels():
    a = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    b = np.array([[1, 1, 2, 2]])
    # 2x2 boxes overlapping in one pixel: 1 / (4 + 4 - 1); a one-pixel box inside b: 1 / 4
    assert box_iou(a, b)[:, 0].tolist() == [1 / 7, 1 / 4]
    assert box_iou(np.zeros((1, 4), int), np.zeros((1, 4), int))[0, 0] == 1.0  # degenerate boxes: one pixel


def test_contour_boxes_of_a_ring_and_a_dot():
    binary = np.zeros((6, 7), dtype=bool)
    binary[0:5, 0:5] = True
    binary[2, 2] = False  # a one-pixel hole
    binary[5, 6] = True  # a dot in the corner, diagonal to nothing
    which, boxes = contour_boxes(binary[None])
    # outer ring: extent x 0..4, y 0..4 → (x, y, x + w, y + h) = (0, 0, 5, 5)
    # the dot: (6, 5, 7, 6) clipped to (W-1, H-1) = (6, 5); the hole's contour: pixels 1..3 → (1, 1, 4, 4)
    assert sorted(map(tuple, boxes.tolist())) == [(0, 0, 5, 5), (1, 1, 4, 4), (6, 5, 6, 5)]
    assert which.tolist() == [0, 0, 0]


def test_mask_boxes_one_per_8_connected_component_no_holes():
    mask = np.zeros((5, 5), dtype=bool)
    mask[0, 0] = mask[1, 1] = True  # diagonal neighbours: one component
    mask[3:5, 2:5] = True
    mask[4, 3] = False  # a notch, not a box of its own
    assert sorted(map(tuple, mask_boxes(mask).tolist())) == [(0, 0, 2, 2), (2, 3, 4, 4)]


def test_contour_boxes_match_opencv():
    import cv2  # the dev extra's opencv-python-headless

    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = rng.integers(3, 16, size=2)
        binary = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        contours = cv2.findContours(binary.astype(np.uint8) * 255, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        expected = sorted((x, y, min(x + bw, w - 1), min(y + bh, h - 1))
                          for x, y, bw, bh in map(cv2.boundingRect, contours))
        assert sorted(map(tuple, contour_boxes(binary[None])[1].tolist())) == expected


# ----------------------------------------------------------------------------- MaxBoxAccV2
def _box_split():
    """Three images with foreground and one without; see test_maxboxacc_v2_hand_computed."""
    maps, masks = np.zeros((4, 6, 6)), np.zeros((4, 6, 6), dtype=bool)
    masks[0, 1:3, 1:4] = True  # A: GT box (1, 1, 4, 3)
    maps[0, 1:3, 1:4] = 1.0
    maps[0, 3, :] = 0.5  # a row touching the block: merged with it at low thresholds
    masks[1, 3:5, 0:2] = True  # B: GT box (0, 3, 2, 5)
    maps[1, 0:2, 4:6] = 1.0  # the peak is elsewhere
    maps[1, 3:5, 0:2] = 0.5
    masks[2, 0:2, 0:2] = True  # D: an all-zero map → no contour → box (0, 0, 0, 0)
    maps[3, 2, 2] = 1.0  # C: no foreground, not counted
    return maps, masks


def test_maxboxacc_v2_hand_computed():
    maps, masks = _box_split()
    meter = MaxBoxAccV2Meter(n_thresholds=4)  # τ = 0, .25, .5, .75 → s8 > 0, 63, 127, 191
    # Best IoU per τ. A: the block merged with the row (0, 1, 5, 4): 12/24 = .5 at τ ≤ .25, then the
    # block alone: 1. B: its own region at τ ≤ .25 (0.5 → s8 127 > 63): 1, then only the peak: 0.
    # D: the box (0, 0, 0, 0) against (0, 0, 2, 2): 1/9.
    assert meter.best_iou_per_threshold(maps[0], mask_boxes(masks[0])).tolist() == [.5, .5, 1, 1]
    assert meter.best_iou_per_threshold(maps[1], mask_boxes(masks[1])).tolist() == [1, 1, 0, 0]
    assert meter.best_iou_per_threshold(maps[2], mask_boxes(masks[2])).tolist() == pytest.approx([1 / 9] * 4)
    meter.update(torch.as_tensor(maps[:2]), torch.as_tensor(masks[:2]))
    meter.update(torch.as_tensor(maps[2:]), torch.as_tensor(masks[2:]))  # streamed in two batches
    # correct images per τ over the 3 counted: δ .3 and .5: [2, 2, 1, 1]; δ .7: [1, 1, 1, 1]
    out = meter.compute()
    assert out["maxboxacc_v2_iou30"] == pytest.approx(200 / 3)
    assert out["maxboxacc_v2_iou50"] == pytest.approx(200 / 3)
    assert out["maxboxacc_v2_iou70"] == pytest.approx(100 / 3)
    assert out["maxboxacc_v2"] == pytest.approx(500 / 9)


def test_maxboxacc_threshold_is_relative_to_the_map_maximum():
    """wsolevaluation binarises at int(τ·max(s8)): a map scaled by 0.5 gives the same boxes."""
    maps, masks = _box_split()
    meter = MaxBoxAccV2Meter(n_thresholds=4)
    assert meter.best_iou_per_threshold(maps[0] * 0.5, mask_boxes(masks[0])).tolist() == [.5, .5, 1, 1]


def test_maxboxacc_without_foreground_is_nan():
    meter = MaxBoxAccV2Meter(10)
    meter.update(torch.rand(2, 5, 5), torch.zeros(2, 5, 5, dtype=torch.bool))
    assert np.isnan(meter.compute()["maxboxacc_v2"])


# ----------------------------------------------------------------------------- pointing game
def test_pointing_game_hand_computed():
    maps, masks = torch.zeros(4, 4, 4), torch.zeros(4, 4, 4, dtype=torch.bool)
    maps[0, 0, 0], masks[0, :2, :2] = 1.0, True  # hit
    maps[1, 3, 3], masks[1, :2, :2] = 1.0, True  # miss
    maps[2, 0, 0] = maps[2, 3, 3] = 0.7  # a tie, one of the two maxima in the mask: 1/2
    masks[2, 0, 0] = True
    maps[3, 1, 1] = 1.0  # no foreground: not counted
    meter = PointingGameMeter()
    meter.update(maps, masks)
    assert meter.compute() == {"pointing_game": pytest.approx(100 * 1.5 / 3)}


def test_pointing_game_of_a_constant_map_is_the_mean_roi_fraction():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, :1] = True  # 4/16
    masks[1, :2] = True  # 8/16
    meter = PointingGameMeter()
    meter.update(torch.full((2, 4, 4), 0.3), masks)
    assert meter.compute()["pointing_game"] == pytest.approx(100 * (0.25 + 0.5) / 2)


# ----------------------------------------------------------------------------- images with / without a ROI
def test_roi_images_split_the_pooled_pxap_hand_computed():
    # image 0 (ROI): its map ranks the 2 foreground pixels first; image 1 (no ROI): a hot map
    maps = torch.tensor([[[1.0, 0.8], [0.2, 0.0]], [[1.0, 1.0], [0.6, 0.4]]])
    masks = torch.tensor([[[True, True], [False, False]], [[False, False], [False, False]]])
    meter = RoiImagesMeter(10)
    meter.update(maps, masks)
    found = meter.compute()
    assert found["pxap_roi_images"] == pytest.approx(100.0)  # perfect within the image with a ROI
    # FP* = mean over τ = 0.1 … 1.0 of the fraction of ROI-free pixels ≥ τ: (4·4 + 3·2 + 2·2 + 2·2) / 4 / 10
    assert found["fp_roi_free_images"] == pytest.approx(100 * (16 + 6 + 4 + 4) / 40)
    pooled = LocalizationMeter(10)
    pooled.update(maps, masks)
    assert pooled.compute().pxap < 100  # the ROI-free image's hot pixels rank above the foreground


def test_roi_images_equal_the_meters_of_each_group_alone():
    rng = np.random.default_rng(0)
    maps = torch.tensor(rng.random((6, 8, 8)), dtype=torch.float32)
    masks = torch.tensor(rng.random((6, 8, 8)) < 0.3)
    masks[[1, 4]] = False  # two images without a ROI
    meter = RoiImagesMeter(100)
    for lo in range(0, 6, 4):
        meter.update(maps[lo:lo + 4], masks[lo:lo + 4])
    with_roi, roi_free = LocalizationMeter(100), LocalizationMeter(100)
    with_roi.update(maps[[0, 2, 3, 5]], masks[[0, 2, 3, 5]])
    roi_free.update(maps[[1, 4]], masks[[1, 4]])
    found = meter.compute()
    assert found["pxap_roi_images"] == pytest.approx(with_roi.compute().pxap, rel=1e-12)
    assert found["fp_roi_free_images"] == pytest.approx(roi_free.compute().fp, rel=1e-12)
    per_image = meter.per_image()
    assert per_image.shape == (6, 3, 102) and not per_image[[1, 4], :2].any() and not per_image[[0, 2, 3, 5], 2].any()


def test_roi_images_without_one_group_are_nan():
    meter = RoiImagesMeter(10)
    meter.update(torch.rand(2, 4, 4), torch.ones(2, 4, 4, dtype=torch.bool))
    assert np.isnan(meter.compute()["fp_roi_free_images"])
    meter = RoiImagesMeter(10)
    meter.update(torch.rand(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool))
    assert np.isnan(meter.compute()["pxap_roi_images"])


# ----------------------------------------------------------------------------- deletion / insertion
class SumModel(torch.nn.Module):
    """Two classes with p(1) = (sum of the pixels) / 4 on 1×2×2 images (sums in [0, 4])."""

    def forward(self, x):
        s = x.sum(dim=(1, 2, 3))
        return SimpleNamespace(logits=torch.stack([torch.log((4 - s).clamp_min(1e-30)),
                                                   torch.log(s.clamp_min(1e-30))], dim=1))


def _faithfulness(mode, image, saliency, target, steps=4, batch_size=3):
    meter = FaithfulnessMeter(SumModel(), mode, steps=steps, batch_size=batch_size)
    meter.update(saliency, torch.ones_like(saliency, dtype=torch.bool), image, torch.tensor(target))
    return meter.compute()[f"{mode}_auc"]


def test_deletion_hand_computed():
    image = torch.tensor([[[[1.0, 0.5], [0.25, 0.0]]]])
    # Deleting in the order 1, .5, .25, 0: sums 1.75, .75, .25, 0, 0 → p = .4375, .1875, .0625, 0, 0;
    # trapezoid with step 1/4: (.4375/2 + .1875 + .0625 + 0 + 0/2) / 4 = .1171875
    assert _faithfulness("deletion", image, image[:, 0], [1]) == pytest.approx(11.71875)
    # The reverse order (0 first): p = .4375, .4375, .375, .25, 0 → .3203125
    assert _faithfulness("deletion", image, 1 - image[:, 0], [1]) == pytest.approx(32.03125)
    # The other class: p(0) = 1 − p(1)
    assert _faithfulness("deletion", image, image[:, 0], [0]) == pytest.approx(100 - 11.71875)
    # k = 2 steps: fractions 0, .5, 1 → sums 1.75, .25, 0 → (.4375/2 + .0625 + 0) / 2
    assert _faithfulness("deletion", image, image[:, 0], [1], steps=2) == pytest.approx(100 * 0.140625)


def test_insertion_of_a_constant_image_is_flat():
    image = torch.full((1, 1, 2, 2), 0.5)  # its blur is itself: p = 2/4 at every step
    assert _faithfulness("insertion", image, torch.rand(1, 2, 2), [1]) == pytest.approx(50.0)


def test_insertion_matches_a_pixel_by_pixel_reference():
    torch.manual_seed(0)
    image = torch.rand(2, 1, 2, 2)
    saliency = torch.rand(2, 2, 2)
    start = blurred(image)
    expected = []
    for n in range(2):
        order = sorted(range(4), key=lambda i: -float(saliency[n].view(-1)[i]))
        x, curve = start[n].clone().view(-1), []
        for j in range(5):
            curve.append(float(x.sum()) / 4)
            if j < 4:
                x[order[j]] = image[n].view(-1)[order[j]]
        expected.append(np.trapezoid(curve, dx=0.25))
    assert _faithfulness("insertion", image, saliency, [1, 1]) == pytest.approx(100 * np.mean(expected))


# ----------------------------------------------------------------------------- through the engine
class FixedMaps:
    """A method stand-in whose maps are given (the masks, or a constant): CAM-type, min-max normalised."""

    map_kind = "cam"

    def __init__(self, maps):
        self.maps = maps

    def cams(self, model, images, targets):
        return self.maps(images)


class Classifier(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x):
        return SimpleNamespace(logits=self.linear(x.mean(dim=(2, 3))))


def _toy_split():
    torch.manual_seed(0)
    masks = torch.zeros(4, 16, 16, dtype=torch.bool)
    masks[0, 2:8, 3:9] = True
    masks[1, 10:14, 1:5] = masks[1, 1:4, 10:15] = True  # two regions
    masks[2, 5:12, 5:12] = True
    images = torch.randn(4, 3, 16, 16)
    return images, torch.tensor([1, 1, 1, 0]), masks


def _evaluate(maps):
    images, labels, masks = _toy_split()
    loader = DataLoader(TensorDataset(images, labels, masks), batch_size=3)
    by_image = {tuple(images[i].flatten()[:4].tolist()): i for i in range(len(images))}
    method = FixedMaps(lambda x: maps(masks[[by_image[tuple(v.flatten()[:4].tolist())] for v in x]]))
    model = Classifier()
    settings = Evaluation(metrics=ALL, batch_size=5, metric_params={
        "maxboxacc-v2": {"thresholds": 50}, "deletion": {"steps": 4}, "insertion": {"steps": 4}})
    scores = evaluate(model, {"m": method}, loader, torch.device("cpu"), accuracy=True, localize=True,
                      thresholds=100, metrics=metrics.chosen(settings.metrics), settings=settings)
    return scores.localization["m"], scores.metrics["m"], masks


def test_perfect_map_scores_100_everywhere():
    result, extra, _ = _evaluate(lambda m: m.float())
    assert result.pxap == 100 and result.dice_fg == 100 and result.iou_fg == 100
    assert extra["maxboxacc_v2"] == 100 and extra["pointing_game"] == 100
    for name in ("deletion_auc", "insertion_auc"):
        assert 0 <= extra[name] <= 100


def test_constant_map_gives_the_roi_fraction():
    result, extra, masks = _evaluate(lambda m: torch.full(m.shape, 0.5))  # min-max → all zeros
    assert result.pxap == pytest.approx(100 * masks.float().mean().item(), abs=0.1)
    with_roi = [m for m in masks if m.any()]
    assert extra["pointing_game"] == pytest.approx(100 * np.mean([m.float().mean().item() for m in with_roi]))
    assert extra["maxboxacc_v2"] == 0  # box (0, 0, 0, 0) touches no ground-truth box here
    # mIoU: predicting everything (τ = 0) gives ½(ROI fraction + 0) < predicting nothing, ½(0 + bg fraction)
    assert result.threshold > 0 and result.iou_fg == 0 and result.dice_fg == 0


def test_iou_fg_at_the_operating_point():
    # one image, scores .9 on 3 fg pixels + 1 bg pixel, .1 on 1 fg pixel and 3 bg pixels
    scores = torch.tensor([[.9, .9, .9, .9, .1, .1, .1, .1]])
    fg = torch.tensor([[1, 1, 1, 0, 1, 0, 0, 0]], dtype=torch.bool)
    meter = LocalizationMeter(10)
    meter.update(scores, fg)
    result = meter.compute()
    # τ* = .8 (highest among the ties of the best mIoU): TP 3, FN 1, FP 1 → IoU 3/5, Dice 6/8
    assert result.threshold == pytest.approx(0.8)
    assert result.iou_fg == pytest.approx(60.0) and result.dice_fg == pytest.approx(75.0)


# ----------------------------------------------------------------------------- recipes
def test_metric_names_are_checked_with_a_suggestion(tmp_path, tiny_recipe):
    from wsolctl.recipe import RecipeError, load_recipe

    with pytest.raises(RecipeError) as info:
        load_recipe(tiny_recipe, ["evaluation.metrics=[pxap, maxboxacc_v2]"])
    (problem,) = info.value.problems
    assert str(problem) == ("--set evaluation.metrics=[pxap, maxboxacc_v2]: evaluation.metrics[1]: "
                            "unknown metric 'maxboxacc_v2'; did you mean 'maxboxacc-v2'?")
    text = tiny_recipe.read_text().replace("  thresholds: 100\n", "  thresholds: 100\n  metrics: [dice, pxap, dice]\n")
    (tmp_path / "twice.yaml").write_text(text)
    with pytest.raises(RecipeError) as info:
        load_recipe(tmp_path / "twice.yaml")
    assert str(info.value) == f"{tmp_path / 'twice.yaml'}:20:3: evaluation.metrics: a metric is listed twice"


def test_test_time_metrics_do_not_change_run_ids(tiny_recipe):
    from wsolctl.engine.plan import study_runs
    from wsolctl.recipe import load_recipe
    from wsolctl.recipe.sweep import search_variants

    def run_ids(recipe):
        return [r.run_id for r in study_runs(search_variants(recipe))]

    default = run_ids(load_recipe(tiny_recipe))
    chosen = load_recipe(tiny_recipe, [f"evaluation.metrics=[{', '.join(ALL)}]",
                                       "evaluation.metric_params={maxboxacc-v2: {thresholds: 20}, deletion: {steps: 4}}"])
    assert run_ids(chosen) == default


@pytest.mark.slow
def test_a_recipe_asking_for_every_metric_gets_each_in_range(tmp_path, tiny_recipe):
    import polars as pl

    from wsolctl import pipeline

    out = tmp_path / "out"
    pipeline.run(tiny_recipe, out, ["methods=[{name: cam}]"], quiet=True)
    assert "pointing_game" not in pl.read_parquet(out / "results.parquet").columns  # default: pxap, dice
    trained = sorted(p.stat().st_mtime_ns for p in out.glob("runs/*/done.json"))
    # asked for after training: the runs are kept (same ids), the test is scored again
    pipeline.run(tiny_recipe, out, [f"evaluation.metrics=[{', '.join(ALL)}]",
                                    "evaluation.metric_params={deletion: {steps: 4}, insertion: {steps: 4}}",
                                    "methods=[{name: cam}]"], quiet=True)
    assert sorted(p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")) == trained
    results = pl.read_parquet(out / "results.parquet")
    columns = ["pxap", "dice_fg", "iou_fg", "maxboxacc_v2", "maxboxacc_v2_iou30", "maxboxacc_v2_iou50",
               "maxboxacc_v2_iou70", "pointing_game", "pxap_roi_images", "deletion_auc", "insertion_auc"]
    assert len(results) == 2  # cam × (B-LOC, B-CL)
    for column in columns:
        values = results[column].to_numpy()
        assert np.all(np.isfinite(values)) and np.all((values >= 0) & (values <= 100)), column
    report = (out / "report.md").read_text()
    for title in ("Foreground Dice at τ*", "Foreground IoU at τ*", "MaxBoxAccV2, B-LOC", "Pointing game, B-LOC",
                  "PxAP on the images with a region of interest, B-LOC",
                  "Deletion AUC, B-LOC", "Insertion AUC, B-LOC"):
        assert title in report


def test_report_tables_of_the_extra_metrics():
    import polars as pl

    from wsolctl.results import survey

    rows = [{"dataset": "glas", "backbone": "resnet50-wsol", "method": method, "selection": "b-loc", "fold": 0,
             "pxap": 50.0, "dice_fg": dice, "iou_fg": dice / 2, "deletion_auc": deletion, "insertion_auc": None}
            for method, dice, deletion in (("cam", 60.0, 20.0), ("gradcam", 40.0, 10.0))]
    ((_, tables),) = survey.dataset_tables(pl.DataFrame(rows))
    titles = [t.title.split(",")[0] for t in tables]
    # Dice and IoU right after Table 1; a metric without values (insertion) has no table
    assert titles[:3] == ["PxAP", "Foreground Dice at τ*", "Foreground IoU at τ*"]
    assert "Deletion AUC" in titles and "Insertion AUC" not in titles
    dice, deletion = tables[1], tables[titles.index("Deletion AUC")]
    cells = {row[0]: row[1] for t in (dice,) for row in t.rows}
    assert cells["cam"] == "**60.0**" and cells["gradcam"] == "40.0"  # higher is better
    cells = {row[0]: row[1] for row in deletion.rows}
    assert cells["cam"] == "20.0" and cells["gradcam"] == "**10.0**"  # lower is better

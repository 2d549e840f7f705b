"""Probability maps (NEGEV, U-Net) are scored raw; CAM-type maps per-image min-max (survey protocol)."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from wsolctl import plugins
from wsolctl.engine.evaluate import evaluate
from wsolctl.methods.base import Method
from wsolctl.metrics import LocalizationMeter, prepare_cams


def two_image_split():
    """A tumour image (0.9 on its 4 ROI pixels, 0.1 elsewhere) and a normal image (no ROI: 0.05
    with a 2-pixel blob at 0.2). Raw, every ROI pixel scores above every background pixel: PxAP
    100. Per-image min-max maps the ROI and the blob both to exactly 1 and everything else to 0:
    one operating point with TP 4, FP 2, so PxAP = 100 · 4/6."""
    maps = torch.full((2, 4, 4), 0.1)
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[0, 1:3, 1:3] = True
    maps[0][masks[0]] = 0.9
    maps[1] = 0.05
    maps[1, 0, :2] = 0.2
    return maps, masks


def pxap(cams, masks, kind):
    meter = LocalizationMeter(1000)
    meter.update(prepare_cams(cams, masks.shape[-2:], kind), masks)
    return meter.compute().pxap


def test_the_two_treatments_give_different_pxap():
    maps, masks = two_image_split()
    assert pxap(maps, masks, "probability") == pytest.approx(100.0)
    assert pxap(maps, masks, "cam") == pytest.approx(100 * 4 / 6)


def test_probability_maps_are_only_cleaned_and_clamped():
    maps = torch.tensor([[[0.2, float("nan")], [float("inf"), -3.0]], [[0.5, 1.5], [0.25, float("-inf")]]])
    out = prepare_cams(maps, (2, 2), "probability")
    assert torch.equal(out, torch.tensor([[[0.2, 0.0], [1.0, 0.0]], [[0.5, 1.0], [0.25, 0.0]]]))
    with pytest.raises(ValueError, match="kind"):
        prepare_cams(maps, (2, 2), "heatmap")


def _fixed(method_cls, maps):
    """``method_cls`` whose ``cams`` returns ``maps`` (everything else, map_kind included, inherited)."""
    return type(f"Fixed{method_cls.__name__}", (method_cls,), {"cams": lambda self, model, images, targets: maps})()


def test_engine_scores_negev_and_unet_maps_raw_and_cam_maps_min_max():
    maps, masks = two_image_split()
    loader = DataLoader(TensorDataset(torch.zeros(2, 3, 4, 4), torch.tensor([1, 0]), masks), batch_size=2)
    methods = {name: _fixed(plugins.load("methods", name), maps) for name in ("negev", "unet", "cam", "gradcam")}
    scores = evaluate(torch.nn.Identity(), methods, loader, torch.device("cpu"), accuracy=False, localize=True)
    assert scores.localization["negev"].pxap == pytest.approx(100.0)
    assert scores.localization["unet"].pxap == pytest.approx(100.0)
    assert scores.localization["cam"].pxap == pytest.approx(100 * 4 / 6)  # survey: min-max per image
    assert scores.localization["gradcam"].pxap == pytest.approx(100 * 4 / 6)


def test_map_kind_is_declared_by_the_plugin():
    assert Method.map_kind == "cam"
    built_in = {name: cls for name, cls in plugins.load_all("methods").items() if cls.__module__.startswith("wsolctl.")}
    probability = {name for name, cls in built_in.items() if cls.map_kind == "probability"}
    assert probability == {"negev", "pixelcam", "unet"}
    assert all(cls.map_kind == "cam" for name, cls in built_in.items() if name not in probability)


def test_stored_examples_keep_the_kind(tmp_path):
    from wsolctl.engine.final_test import _save_example_cams
    from wsolctl.engine.rundir import RunDir

    maps, masks = two_image_split()
    examples = (torch.zeros(2, 3, 4, 4), torch.tensor([1, 0]), masks)
    methods = {name: _fixed(plugins.load("methods", name), maps) for name in ("negev", "cam")}
    _save_example_cams(torch.nn.Identity(), methods, [("negev", "b-loc"), ("cam", "b-loc")], examples,
                       torch.device("cpu"), RunDir(tmp_path))
    negev, cam = (np.load(tmp_path / "examples" / f"{name}__b-loc.npz") for name in ("negev", "cam"))
    assert str(negev["kind"]) == "probability" and str(cam["kind"]) == "cam"
    assert negev["cams"][1].max() == round(0.2 * 255)  # the normal image stays low
    assert cam["cams"][1].max() == 255  # stretched to 1

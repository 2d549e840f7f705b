"""Issue 19: selection and thresholds without pixel annotations (b-pseudo, pseudo-annotators, Otsu),
the regret table, the model-randomisation sanity check and ROAD."""
import math
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tests.conftest import TINY, backbone_info, build_model
from wsolctl.errors import RecipeError

REDNESS = Path(__file__).parent / "plugins" / "redness"


# ----------------------------------------------------------------------------- recipe
def _load(tmp_path, text: str):
    from wsolctl.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(text)
    return load_recipe(path)


def _tiny(tmp_path, masks: bool = True) -> str:
    text = TINY.format(root=tmp_path / "data")
    return text if masks else text.replace("  params: {size: 64", "  masks: false\n  params: {size: 64")


def test_recipe_selection_rules_need_what_they_read(tmp_path):
    recipe = _load(tmp_path, _tiny(tmp_path) + "  annotator: {name: haematoxylin, params: {sigma: 1}}\n"
                                               "selection: [b-pseudo, b-cl]\n")
    assert recipe.selection == ["b-pseudo", "b-cl"] and recipe.evaluation.annotator.params.sigma == 1
    with pytest.raises(RecipeError, match=r"r.yaml:\d+:\d+: selection: .*b-pseudo needs a pseudo-annotator"):
        _load(tmp_path, _tiny(tmp_path) + "selection: [b-pseudo]\n")
    with pytest.raises(RecipeError, match="b-loc needs the validation masks"):
        _load(tmp_path, _tiny(tmp_path, masks=False) + "selection: [b-loc, b-cl]\n")
    with pytest.raises(RecipeError, match="nowhere: not a finished run directory"):
        _load(tmp_path, _tiny(tmp_path) + "  annotator: {name: run-cams, params: {run: nowhere}}\n")
    with pytest.raises(RecipeError, match="did you mean 'haematoxylin'"):
        _load(tmp_path, _tiny(tmp_path) + "  annotator: {name: haematoxilin}\n")


# ----------------------------------------------------------------------------- annotators and Otsu
def _normalised(rgb: np.ndarray) -> torch.Tensor:
    from wsolctl.recipe.base import IMAGENET

    x = torch.from_numpy(rgb).float().permute(2, 0, 1)[None] / 255
    return (x - torch.tensor(IMAGENET.mean).view(1, 3, 1, 1)) / torch.tensor(IMAGENET.std).view(1, 3, 1, 1)


def test_haematoxylin_annotator_finds_nuclei_dense_tissue():
    from wsolctl.annotators import Haematoxylin

    rgb = np.full((64, 64, 3), (230, 170, 200), np.uint8)  # eosin-pink stroma
    yy, xx = np.mgrid[:64, :64]
    blob = (yy - 30) ** 2 + (xx - 24) ** 2 < 14 ** 2
    rgb[blob] = (70, 40, 140)  # haematoxylin-purple nuclei cluster
    annotator = Haematoxylin(Haematoxylin.Params(sigma=1.0))
    mask = annotator.masks(_normalised(rgb), torch.tensor([1]))[0].numpy()
    assert mask.dtype == bool and (mask & blob).sum() / (mask | blob).sum() > 0.9
    empty = Haematoxylin(Haematoxylin.Params(empty_classes=[0])).masks(_normalised(rgb), torch.tensor([0]))
    assert not empty.any()
    flat = annotator.masks(_normalised(np.full((16, 16, 3), 200, np.uint8)), torch.tensor([1]))
    assert not flat.any()  # a constant image: nothing above Otsu's threshold
    # lymph nodes: the nuclei-dense tissue (lymphocytes) is the background (issue 27)
    sparse = Haematoxylin(Haematoxylin.Params(sigma=1.0, foreground="sparse"))
    assert np.array_equal(sparse.masks(_normalised(rgb), torch.tensor([1]))[0].numpy(), ~mask)
    emptied = Haematoxylin(Haematoxylin.Params(foreground="sparse", empty_classes=[0]))
    assert not emptied.masks(_normalised(rgb), torch.tensor([0])).any()
    from wsolctl.engine.plan import numbers

    assert "foreground" not in numbers(Haematoxylin.Params())  # run ids of earlier recipes unchanged


def test_otsu_matches_skimage_and_its_dice_is_pixel_counts():
    from skimage.filters import threshold_otsu

    from wsolctl.annotators import otsu_thresholds
    from wsolctl.engine.pseudo import OtsuMeter

    maps = torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(0)) ** 2
    assert torch.allclose(otsu_thresholds(maps), torch.tensor([threshold_otsu(m.numpy()) for m in maps]))
    masks = maps > 0.3
    meter = OtsuMeter()
    meter.update(maps[:2], masks[:2])
    meter.update(maps[2:], masks[2:])
    predicted = maps > otsu_thresholds(maps).view(-1, 1, 1)
    tp, fp, fn = (predicted & masks).sum(), (predicted & ~masks).sum(), (~predicted & masks).sum()
    assert meter.compute()["dice_fg_otsu"] == pytest.approx(100 * 2 * tp.item() / (2 * tp + fp + fn).item())


def test_b_pseudo_with_true_masks_as_pseudo_masks_selects_like_b_loc(tmp_path):
    """Two 'epochs' (two model states); pseudo-masks equal to the true masks: same epoch, same τ."""
    from wsolctl.annotators import ValpxMasks
    from wsolctl.engine.build import build_data, build_model as engine_model
    from wsolctl.engine.plan import plan_runs
    from wsolctl.engine.pseudo import WithMasks, pseudo_masks
    from wsolctl.engine.train import _evaluate_epoch, best_epochs
    from wsolctl.recipe import load_recipe
    from wsolctl.recipe.sweep import search_variants

    path = tmp_path / "r.yaml"
    path.write_text(_tiny(tmp_path))
    (spec,) = plan_runs(search_variants(load_recipe(path))[0])
    device = torch.device("cpu")
    data = build_data(spec, device)
    pseudo = WithMasks(data.valpx, pseudo_masks(ValpxMasks(), data.valpx, device))
    methods = {label: m.instantiate() for label, m in zip(spec.labels, spec.methods)}
    history = []
    for epoch, seed in enumerate((0, 3)):
        torch.manual_seed(seed)
        model = engine_model(spec, len(data.classes), pretrained=False)
        history += _evaluate_epoch(spec.recipe.evaluation, model, methods, data, device, None, epoch, pseudo)
    for label in methods:
        best = best_epochs(history, label)
        assert best["b-pseudo"] == best["b-loc"]
        row = next(r for r in history if r["method"] == label and r["epoch"] == best["b-loc"])
        assert row["valpx_pseudo_threshold"] == row["valpx_threshold"]
        assert row["valpx_pseudo_pxap"] == row["valpx_pxap"]
        assert len({r["valpx_pxap"] for r in history if r["method"] == label}) == 2  # the epochs really differ


@pytest.mark.slow
def test_whole_study_b_pseudo_on_true_masks_equals_b_loc(tmp_path):
    """Through train → select: the valpx-masks annotator (the true masks as pseudo-masks) makes
    b-pseudo pick b-loc's epoch, and its val-pseudo τ is b-loc's val-masks τ."""
    from wsolctl import pipeline

    path = tmp_path / "r.yaml"
    path.write_text(_tiny(tmp_path).replace("epochs: 1", "epochs: 2")
                    + "  annotator: {name: valpx-masks}\nselection: [b-loc, b-pseudo]\n")
    out = tmp_path / "out"
    pipeline.train(path, out, quiet=True)
    pipeline.select(out, quiet=True)
    results = pl.read_parquet(out / "results.parquet")
    for method in ("cam", "gradcam"):
        rows = {r["selection"]: r for r in results.filter(pl.col("method") == method).iter_rows(named=True)}
        loc, pseudo = rows["b-loc"], rows["b-pseudo"]
        assert pseudo["epoch"] == loc["epoch"] and pseudo["pxap"] == loc["pxap"]
        assert pseudo["threshold"] == loc["threshold_val_masks"] == pseudo["threshold_val_pseudo"]
        assert pseudo["dice_fg"] == loc["dice_fg_val_masks"]
    epochs = pl.read_parquet(out / "epochs.parquet")
    assert (epochs["valpx_pxap"] == epochs["valpx_pseudo_pxap"]).all()
    assert (epochs["valpx_threshold"] == epochs["valpx_pseudo_threshold"]).all()


def test_mask_reading_annotator_refused_without_masks(tmp_path):
    with pytest.raises(RecipeError, match="reads the validation masks"):
        _load(tmp_path, _tiny(tmp_path, masks=False) + "  annotator: {name: valpx-masks}\nselection: [b-pseudo]\n")


# ----------------------------------------------------------------------------- regret table
def test_regret_table_by_hand_on_a_two_epoch_toy():
    from wsolctl.results.trust import regret_table

    nan = math.nan
    base = {"dataset": "d", "backbone": "b", "method": "cam"}
    rows = [  # b-loc picked epoch 2 (PxAP 60), b-pseudo and b-cl picked epoch 1 (PxAP 50)
        {**base, "selection": "b-loc", "epoch": 2, "pxap": 60.0, "dice_fg_test_masks": 70.0, "dice_fg_val_masks": 66.0,
         "dice_fg_val_pseudo": 64.0, "dice_fg_otsu": 61.0},
        {**base, "selection": "b-pseudo", "epoch": 1, "pxap": 50.0, "dice_fg_test_masks": 58.0,
         "dice_fg_val_masks": 55.0, "dice_fg_val_pseudo": 57.0, "dice_fg_otsu": 52.0},
        {**base, "selection": "b-cl", "epoch": 1, "pxap": 50.0, "dice_fg_test_masks": 58.0, "dice_fg_val_masks": 55.0,
         "dice_fg_val_pseudo": nan, "dice_fg_otsu": 52.0},
    ]
    table = regret_table(pl.DataFrame(rows))
    got = {(r["selection"], r["threshold_rule"]): r for r in table.iter_rows(named=True)}
    assert len(got) == 4 + 4 + 3  # b-cl has no val-pseudo τ
    assert got[("b-loc", "test-masks")]["pxap_regret"] == 0 and got[("b-loc", "test-masks")]["dice_regret"] == 0
    assert got[("b-loc", "otsu")]["dice_regret"] == pytest.approx(70 - 61)
    assert got[("b-pseudo", "val-pseudo")]["pxap_regret"] == pytest.approx(10)
    assert got[("b-pseudo", "val-pseudo")]["dice_regret"] == pytest.approx(70 - 57)
    assert got[("b-pseudo", "otsu")]["dice"] == 52 and got[("b-cl", "val-masks")]["dice_regret"] == pytest.approx(15)
    no_truth = pl.DataFrame([{**rows[1], **{k: nan for k in rows[1] if k.startswith("dice")}, "pxap": nan}])
    assert len(regret_table(no_truth)) == 0  # no true test masks: no table


# ----------------------------------------------------------------------------- randomisation check
def _gaussian_ssim(a, b, sigma=1.5, c1=0.01 ** 2, c2=0.03 ** 2):
    """Wang et al.'s SSIM with an 11×11 Gaussian window (σ 1.5), data range 1, written out."""
    from scipy.ndimage import gaussian_filter

    def blur(x):
        return gaussian_filter(x, sigma, truncate=3.5, mode="reflect")

    ma, mb = blur(a), blur(b)
    va, vb, cov = blur(a * a) - ma ** 2, blur(b * b) - mb ** 2, blur(a * b) - ma * mb
    full = (2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2))
    return full[5:-5, 5:-5].mean()  # skimage leaves out the border the window overhangs


def test_hog_similarity():
    from skimage.feature import hog

    from wsolctl.engine.checks import hog_similarity

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    blob = np.exp(-((yy - 20) ** 2 + (xx - 28) ** 2) / 60.0)
    noise = rng.random((48, 48))
    assert hog_similarity(blob, blob) == pytest.approx(1)
    assert hog_similarity(blob, 0.5 * blob) == pytest.approx(1, abs=1e-6)  # HOG blocks are normalised
    assert hog_similarity(blob, noise) < 0.5
    assert hog_similarity(blob, noise) == pytest.approx(np.corrcoef(hog(blob), hog(noise))[0, 1])
    assert math.isnan(hog_similarity(blob[:16, :16], noise[:16, :16]))  # smaller than one block
    assert math.isnan(hog_similarity(np.ones((48, 48)), blob))


def test_spearman_and_ssim_match_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    from wsolctl.engine.checks import similarities, spearman, ssim

    rng = np.random.default_rng(0)
    a, b = rng.random((16, 16)), rng.random((16, 16))
    b[:4] = a[:4]
    a[0, :3] = 0.5  # ties
    assert spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
    assert ssim(a, b) == pytest.approx(_gaussian_ssim(a, b), abs=1e-9)
    assert ssim(a, a) == pytest.approx(1) and ssim(a, b) != pytest.approx(structural_similarity(a, b, data_range=1.0))
    assert math.isnan(spearman(np.ones((4, 4)), a[:4, :4]))
    raw = (torch.from_numpy(a - 0.5)[None], torch.from_numpy(a)[None])
    other = (torch.from_numpy(b - 0.5)[None], torch.from_numpy(b)[None])
    got = similarities(raw, other)
    assert got["spearman_signed"] == pytest.approx(spearmanr((a - 0.5).ravel(), (b - 0.5).ravel()).statistic)
    assert got["spearman_abs"] == pytest.approx(spearmanr(np.abs(a - 0.5).ravel(), np.abs(b - 0.5).ravel()).statistic)


@pytest.fixture
def redness():
    sys.path.insert(0, str(REDNESS))
    import wsolctl_test_redness

    yield wsolctl_test_redness
    sys.path.remove(str(REDNESS))


def _images(n=4, side=32):
    torch.manual_seed(5)
    return torch.randn(n, 3, side, side), torch.tensor([0, 1, 0, 1][:n])


def test_weight_free_map_stays_identical_and_cam_does_not(redness):
    from wsolctl.backbones.resnet import ResNet18WSOL
    from wsolctl.engine.checks import model_randomisation
    from wsolctl.methods.cam import CAM

    stages = [s.module for s in ResNet18WSOL().info().stages]
    images, targets = _images()
    method = redness.Redness()
    rows, maps = model_randomisation(build_model(method), method, images, targets, stages, seed=0)
    assert [r["layer"] for r in rows] == ["trained", "head", "layer4", "layer3", "layer2", "layer1", "act1"]
    for row in rows:
        assert row["spearman_abs"] == pytest.approx(1) and row["ssim"] == pytest.approx(1)
        assert row["hog"] == pytest.approx(1)
    assert maps.shape == (7, 4, 32, 32) and maps.dtype == np.uint8

    cam = CAM()
    model = build_model(cam)
    with torch.no_grad():  # a "trained" head: class 1 reads the first half of the channels
        model.head.weight.zero_()
        model.head.weight[1, :256] = 1.0
        model.head.weight[0, 256:] = 1.0
    rows, _ = model_randomisation(model, cam, images, targets, stages, seed=0)
    assert rows[0]["ssim"] == pytest.approx(1)
    deepest = rows[-1]
    assert deepest["ssim"] < 0.9 and abs(deepest["spearman_abs"]) < 0.9
    assert all(r["ssim"] < 0.99 for r in rows[1:])
    before = [p.clone() for p in model.parameters()]
    model_randomisation(model, cam, images, targets, stages, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # works on a copy


@pytest.mark.parametrize("backbone, side", [("resnet50-wsol", 32), ("vgg16-wsol", 32), ("inceptionv3-wsol", 48),
                                            ("deit-tiny", 32)])
def test_randomisation_reaches_every_parameter(backbone, side):
    """Issue 27: every module with parameters (stem, patch embedding, class token, position embedding,
    final norm) is re-initialised, stage by stage from the head down; the share reaches 1."""
    from wsolctl.engine.checks import cascade_steps, model_randomisation
    from wsolctl.methods.cam import CAM

    cam = CAM()
    model = build_model(cam, backbone)
    stages = [s.module for s in backbone_info(backbone).stages]
    images, targets = _images(2, side)
    steps = cascade_steps(model, stages, images)
    assert [name for name, _ in steps] == ["head", *reversed(stages)]
    owners = [m for _, modules in steps for m in modules]
    assert len(owners) == len({id(m) for m in owners})  # each module in one step
    covered = {id(p) for m in owners for p in m.parameters(recurse=False)}
    assert covered == {id(p) for p in model.parameters()}
    first = {id(m) for m in steps[-1][1]}
    stem = {"resnet50-wsol": "conv1", "vgg16-wsol": "features.0", "inceptionv3-wsol": "Conv2d_1a_3x3.conv",
            "deit-tiny": "patch_embed.proj"}[backbone]
    assert id(model.backbone.get_submodule(stem)) in first
    if backbone == "deit-tiny":  # class token and position embedding with the first block, final norm with the last
        assert id(model.backbone) in first and id(model.backbone.norm) in {id(m) for m in steps[1][1]}
    rows, _ = model_randomisation(model, cam, images, targets, stages, seed=0)
    shares = [r["params_randomised"] for r in rows]
    assert shares[0] == 0 and shares[-1] == pytest.approx(1) and shares == sorted(shares)


def test_randomisation_summary_flags_a_map_that_barely_changes():
    from wsolctl.results.trust import randomisation_summary

    rows = []
    for method, value in (("redness", 0.98), ("cam", 0.1)):
        for depth in range(3):
            v = 1.0 if depth == 0 else value
            rows.append({"run_id": "r", "dataset": "d", "backbone": "b", "method": method, "selection": "b-loc",
                         "depth": depth, "layer": str(depth), "spearman_abs": v, "spearman_signed": v, "ssim": v})
    summary = {r["method"]: r for r in randomisation_summary(pl.DataFrame(rows)).iter_rows(named=True)}
    assert not summary["redness"]["passes"] and summary["cam"]["passes"] and summary["cam"]["depth"] == 2


# ----------------------------------------------------------------------------- ROAD
class _Net(torch.nn.Module):
    """A tiny fixed CNN with WSOLModel's output (``.logits``)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                          torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                                          torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))

    def forward(self, x):
        from wsolctl.methods.base import Output

        return Output(logits=3 * self.layers(x))


class _Logits(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).logits


def _road_inputs():
    torch.manual_seed(0)
    images, targets = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 1])
    cams = torch.nn.functional.interpolate(torch.rand(4, 1, 8, 8), size=(32, 32), mode="bilinear",
                                           align_corners=False)[:, 0]
    return images, targets, cams


def test_linear_imputation_equals_pytorch_grad_cams():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    from wsolctl.metrics.road import linear_impute

    torch.manual_seed(0)
    image, keep = torch.randn(3, 20, 24), (torch.rand(20, 24) > 0.6).float()
    ours = linear_impute(image.numpy(), keep.numpy() == 0)
    assert np.abs(NoisyLinearImputer(noise=0)(image, keep).numpy() - ours).max() < 1e-5


def test_road_agrees_with_pytorch_grad_cam():
    """Without noise the two are the same computation (agree to float32 rounding); with ROAD's noise
    (σ = 0.01 in input units, each drawing its own) they agree within 4× the spread of
    pytorch-grad-cam's own results over three noise seeds."""
    from pytorch_grad_cam.metrics.perturbation_confidence import (
        AveragerAcrossThresholds,
        PerturbationConfidenceMetric,
        RemoveLeastRelevantFirst,
        RemoveMostRelevantFirst,
    )
    from pytorch_grad_cam.metrics.road import (
        NoisyLinearImputer,
        ROADLeastRelevantFirstAverage,
        ROADMostRelevantFirstAverage,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from wsolctl.metrics.road import RoadMeter

    net = _Net().eval()
    images, targets, cams = _road_inputs()
    callables = [ClassifierOutputSoftmaxTarget(int(t)) for t in targets]
    percentiles = [10, 20, 30, 40, 50, 60, 70, 80, 90]

    def pgc(remove, noise):
        return 100 * float(AveragerAcrossThresholds(
            lambda p: PerturbationConfidenceMetric(remove(p, NoisyLinearImputer(noise=noise))), percentiles)(
            images, cams.numpy(), callables, _Logits(net)).mean())

    exact = RoadMeter(net, percentiles, batch_size=5, noise=0.0)
    exact.update(cams, None, images, targets)
    got = exact.compute()
    assert got["road_morf"] == pytest.approx(pgc(RemoveMostRelevantFirst, 0.0), abs=1e-4)
    assert got["road_lerf"] == pytest.approx(pgc(RemoveLeastRelevantFirst, 0.0), abs=1e-4)
    assert got["road_combined"] == pytest.approx((got["road_lerf"] - got["road_morf"]) / 2)

    reference = {"road_morf": [], "road_lerf": []}
    for seed in range(3):
        torch.manual_seed(seed)
        reference["road_morf"].append(100 * float(ROADMostRelevantFirstAverage(percentiles)(
            images, cams.numpy(), callables, _Logits(net)).mean()))
        reference["road_lerf"].append(100 * float(ROADLeastRelevantFirstAverage(percentiles)(
            images, cams.numpy(), callables, _Logits(net)).mean()))
    noisy = RoadMeter(net, percentiles, batch_size=7)
    noisy.update(cams, None, images, targets)
    for key, values in reference.items():
        tolerance = 4 * (max(values) - min(values)) + 1e-6
        assert abs(noisy.compute()[key] - np.mean(values)) <= tolerance, (key, values, noisy.compute()[key])
    # the maps matter: MoRF and LeRF differ and a flipped map swaps them (noise-free, exact)
    flipped = RoadMeter(net, percentiles, noise=0.0)
    flipped.update(1 - cams, None, images, targets)
    assert flipped.compute()["road_morf"] == pytest.approx(got["road_lerf"], abs=1e-9)
    assert got["road_morf"] != pytest.approx(got["road_lerf"], abs=1e-3)


# ----------------------------------------------------------------------------- a study without masks
def _no_masks_recipe(root: Path) -> str:
    """TINY at 32 px with one method, selected with b-pseudo / b-cl, with ROAD and the checks."""
    import yaml

    recipe = yaml.safe_load(TINY.format(root=root))
    recipe["name"], recipe["image_size"], recipe["methods"] = "nomasks", 32, [{"name": "cam"}]
    recipe["dataset"]["params"].update(size=32, train_per_class=4, test_per_class=2)
    recipe["evaluation"].update(annotator={"name": "haematoxylin"}, metrics=["pxap", "road"],
                                metric_params={"road": {"percentiles": [30, 70]}}, checks=["model-randomisation"], check_images=2)
    recipe["selection"] = ["b-pseudo", "b-cl"]
    return yaml.safe_dump(recipe)


@pytest.mark.slow
def test_study_without_any_mask_trains_selects_and_predicts_a_slide(tmp_path):
    """The data's masks are deleted from disk (and no localization.txt is left): training, b-pseudo
    selection with the val-pseudo threshold, the checks, ROAD, the report and predict on a slide all
    run without reading a mask."""
    import shutil

    from tests.test_predict import write_slide
    from wsolctl import pipeline
    from wsolctl.engine.build import prepare_dataset
    from wsolctl.predict import PredictOptions, predict
    from wsolctl.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(_no_masks_recipe(tmp_path / "data"))
    prepare_dataset(load_recipe(recipe))
    shutil.rmtree(tmp_path / "data" / "masks")
    for path in (tmp_path / "data").rglob("localization.txt"):
        path.unlink()
    out = pipeline.run(recipe, tmp_path / "out", quiet=True).parent
    results = pl.read_parquet(out / "results.parquet")
    pseudo = results.filter(pl.col("selection") == "b-pseudo").row(0, named=True)
    assert pseudo["threshold_rule"] == "val-pseudo" and 0 <= pseudo["threshold"] < 1
    assert pseudo["threshold"] == pseudo["threshold_val_pseudo"] and math.isnan(pseudo["pxap"])
    assert math.isfinite(pseudo["road_morf"]) and math.isfinite(pseudo["road_lerf"])
    assert results.filter(pl.col("selection") == "b-cl")["threshold_rule"].to_list() == ["test-masks"]
    epochs = pl.read_parquet(out / "epochs.parquet")
    assert epochs["valpx_pseudo_pxap"].is_finite().all() and epochs["valpx_pxap"].is_nan().all()
    checks = pl.read_parquet(out / "checks.parquet")
    assert sorted(checks["selection"].unique()) == ["b-cl", "b-pseudo"]
    assert checks["depth"].max() == 6  # the head + 5 stages (act1: conv1 + bn1)
    assert checks.filter(pl.col("depth") == 6)["params_randomised"].min() == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert "Sanity check: cascading model randomisation" in report and "B-PSEUDO" in report
    assert "What annotation-free selection costs" not in report  # no true masks: no regret table
    slides = tmp_path / "slides"
    slides.mkdir()
    write_slide(slides / "tumor_a.tif")
    done = predict(out, [slides], tmp_path / "pred", PredictOptions(selection="b-pseudo", tile_size=256,
                                                                    batch_size=8), quiet=True)
    row = pl.read_parquet(done.path).row(0, named=True)
    assert row["status"] == "ok", row
    import json

    meta = json.loads(next((tmp_path / "pred").rglob("heatmap.json")).read_text())
    assert meta["selection"] == "b-pseudo" and meta["threshold"] == pytest.approx(pseudo["threshold"])

    # that run, named in a later recipe, annotates images with its thresholded CAMs (run-cams)
    from wsolctl.annotators import RunCams
    from wsolctl.engine.pseudo import load_explainer
    from wsolctl.engine.rundir import RunDir
    from wsolctl.metrics import prepare_cams

    run_dir = out / "runs" / pseudo["run_id"]
    annotator = RunCams(RunCams.Params(run=str(run_dir), selection="b-cl"))
    annotator.bind(torch.device("cpu"), load_explainer)
    images, labels = torch.randn(3, 3, 32, 32), torch.tensor([0, 1, 1])
    masks = annotator.masks(images, labels)
    model, spec = RunDir(run_dir).load_model("cam", "b-cl")
    with torch.no_grad():
        maps = prepare_cams(spec.methods[0].instantiate().cams(model, images, labels), (32, 32))
    from skimage.filters import threshold_otsu

    expected = torch.stack([m > threshold_otsu(m.numpy()) for m in maps])
    assert masks.shape == (3, 32, 32) and torch.equal(masks, expected) and 0 < masks.float().mean() < 1
    # selecting CAM by b-pseudo against CAM's own maps is circular: refused at validation (issue 27)
    annotated = _tiny(tmp_path) + f"  annotator: {{name: run-cams, params: {{run: {run_dir}, method: cam}}}}\n"
    with pytest.raises(RecipeError, match=r"selection: b-pseudo would select cam against pseudo-masks made by cam"):
        _load(tmp_path, annotated + "selection: [b-pseudo, b-cl]\n")
    assert _load(tmp_path, annotated + "selection: [b-loc, b-cl]\n").evaluation.annotator.name == "run-cams"


def test_region_threshold_falls_back_to_otsu_per_input():
    from skimage.filters import threshold_otsu

    from wsolctl.predict.scores import region_threshold

    values = np.random.default_rng(0).random(500) ** 3
    assert region_threshold(0.4, values) == 0.4
    assert region_threshold(math.nan, values) == pytest.approx(threshold_otsu(values))
    assert region_threshold(math.nan, np.full(5, 0.3)) == 1.0  # a flat map: no region


def test_predict_warns_when_the_threshold_predicts_nothing():
    """Issue 27: τ* = 2 ("predicting nothing scored best") draws no region; predict says so."""
    import types
    import warnings

    from wsolctl.errors import PredictsNothingWarning
    from wsolctl.predict.run import _warn_if_nothing

    loaded = types.SimpleNamespace(method_label="cam", selection="b-loc", run_id="abc")
    with pytest.warns(PredictsNothingWarning, match=r"cam \(b-loc, run abc\): threshold τ\* = 2 predicts nothing"):
        _warn_if_nothing(loaded, 0, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _warn_if_nothing(loaded, 0, 1.0)  # maps that reach 1 still draw a region
        _warn_if_nothing(loaded, 0, math.nan)  # Otsu per input

"""HaS, ACoL, ADL, CutMix and SPG: their mechanisms on hand-made tensors, then one tiny study."""
import copy
import math

import polars as pl
import pytest
import torch
from torch import nn

from tests.conftest import assert_localizes, backbone_info as info, build_model
from wsolctl import plugins
from wsolctl.engine.evaluate import evaluate
from wsolctl.methods.base import Batch
from wsolctl.methods.cam import CAM
from wsolctl.methods.erasing import (
    ADL,
    ACoL,
    CutMix,
    HaS,
    _adl_layer_class,
    adl_drop_mask,
    cutmix_box,
    erase_mask,
    hide_patches,
    minmax,
)
from wsolctl.methods.spg import IGNORE, SPG, run_with_taps, seed_bce, seed_targets


def test_minmax_per_map_and_constant_map_is_zero():
    maps = torch.tensor([[[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]]])
    out = minmax(maps)
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(out[0, 1], torch.zeros(2, 2))


# ------------------------------------------------------------------ HaS
def test_has_hides_whole_cells_across_channels():
    torch.manual_seed(0)
    images = torch.rand(64, 3, 8, 12) + 1.0  # never 0 before hiding
    hidden = hide_patches(images, grid_size=4, drop_rate=0.5)
    cells = hidden.view(64, 3, 2, 4, 3, 4)  # (n, c, rows, 4, cols, 4)
    zero = (cells == 0).permute(0, 2, 4, 1, 3, 5).reshape(64, 2, 3, -1)
    assert torch.all(zero.all(-1) | ~zero.any(-1))  # a cell is hidden entirely (all channels) or not at all
    kept = ~zero.any(-1)
    assert torch.equal(cells.permute(0, 2, 4, 1, 3, 5).reshape(64, 2, 3, -1)[kept],
                       images.view(64, 3, 2, 4, 3, 4).permute(0, 2, 4, 1, 3, 5).reshape(64, 2, 3, -1)[kept])
    assert 0.4 < zero.all(-1).float().mean() < 0.6  # 384 cells, each hidden w.p. 0.5
    assert torch.equal(hide_patches(images, 4, 0.0), images)
    assert torch.count_nonzero(hide_patches(images, 4, 1.0)) == 0
    # a grid that does not divide the image: the last, partial cells exist too
    assert torch.count_nonzero(hide_patches(torch.ones(1, 1, 7, 7), 5, 1.0)) == 0


def test_has_erases_in_training_only():
    has = HaS(HaS.Params(grid_size=4, drop_rate=0.5))
    model = build_model(has).eval()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    torch.manual_seed(1)
    assert not torch.equal(has.augment(Batch(images, labels)).images, images)
    cam = CAM()
    with torch.no_grad():
        assert torch.equal(has.cams(model, images, labels), cam.cams(model, images, labels))

    def boom(batch):
        raise AssertionError("augment called during evaluation")

    has.augment = boom
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[:, :16] = True
    loader = [(images, labels, masks)]
    scores = evaluate(model, {"has": has}, loader, torch.device("cpu"), accuracy=True, localize=True, thresholds=10)
    assert math.isfinite(scores.localization["has"].pxap)
    assert has.training_key() != cam.training_key()  # trains its own classifier


# ------------------------------------------------------------------ ACoL
def test_acol_erase_mask_threshold():
    attention = torch.tensor([[0.0, 0.59], [0.6, 1.0]])
    assert torch.equal(erase_mask(attention, 0.6), torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


class _Recorder(nn.Module):
    def forward(self, x):
        self.seen = x
        return x


def test_acol_erases_ground_truth_class_in_training_and_prediction_otherwise():
    acol = ACoL(ACoL.Params(erase_threshold=0.5))
    # features = A's class maps (A is the identity): class 0 map rises, class 1 map is larger (predicted)
    features = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[4.0, 3.0], [2.0, 1.0]]]])
    model = nn.Module()
    model.backbone, model.head = nn.Identity(), nn.ModuleDict({"A": nn.Identity(), "B": _Recorder()})
    out = acol.forward(model, features, torch.tensor([0]))  # training: ground truth = class 0
    keep = torch.tensor([[1.0, 1.0], [0.0, 0.0]])  # minmax(class 0) = [[0, 1/3], [2/3, 1]] ≥ 0.5 erased
    assert torch.equal(model.head["B"].seen, features * keep)
    assert torch.allclose(out.extras["logits_b"], (features * keep).mean(dim=(2, 3)))
    assert out.logits.argmax(1).item() == 1
    acol.forward(model, features)  # no labels: the predicted class 1 is erased
    assert torch.equal(model.head["B"].seen, features * torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    cams = acol.cams(model, features, torch.tensor([0]))  # max of the two normalised maps of class 0
    b0 = minmax(features * keep)[0, 0]
    assert torch.allclose(cams[0], torch.maximum(minmax(features)[0, 0], b0))
    loss = acol.loss(out, Batch(features, torch.tensor([0])))
    expected = nn.functional.cross_entropy(out.logits, torch.tensor([0])) + \
        nn.functional.cross_entropy(out.extras["logits_b"], torch.tensor([0]))
    assert torch.allclose(loss, expected)


# ------------------------------------------------------------------ ADL
def test_adl_drop_mask_zeroes_the_most_activated_positions():
    attention = torch.tensor([[[[0.1, 0.5], [0.95, 1.0]]], [[[2.0, 0.0], [1.0, 1.9]]]])
    mask = adl_drop_mask(attention, 0.9)  # per image: keep att < 0.9·max
    assert torch.equal(mask, torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 1.0], [1.0, 0.0]]]]))


def test_adl_layer_modes():
    layer_cls = _adl_layer_class()
    x = torch.rand(2, 3, 4, 4)
    attention = x.mean(dim=1, keepdim=True)
    always_drop, never_drop = layer_cls(1.0, 0.9).train(), layer_cls(0.0, 0.9).train()
    assert torch.equal(always_drop(x), x * adl_drop_mask(attention, 0.9))
    assert torch.allclose(never_drop(x), x * torch.sigmoid(attention))
    assert always_drop.eval()(x) is x  # identity at evaluation


def test_adl_positions_and_identity_in_eval():
    adl = ADL(ADL.Params(drop_rate=1.0, drop_threshold=0.5))
    plain = plugins.load("backbones", "resnet18-wsol")().build(False)
    adapted = adl.adapt_backbone(copy.deepcopy(plain), info("resnet18-wsol"))
    names = [n for n, m in adapted.named_modules() if type(m).__name__ == "ADLLayer"]
    assert names == ["layer3.adl0", "layer4.adl1", "layer4.adl2"]
    assert list(adapted.layer3._modules)[:2] == ["0", "adl0"]
    assert list(adapted.layer4._modules) == ["0", "adl1", "1", "adl2"]  # resnet18: last layer4 block is 1
    assert adapted.state_dict().keys() == plain.state_dict().keys()  # pretrained weights still load
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(adapted.eval()(x), plain.eval()(x))
        assert not torch.equal(adapted.train()(x), plain.train()(x))
    assert ADL.unsupported(info("resnet50-wsol")) is None and "WSOL backbones" in ADL.unsupported(info("efficientnet_b0"))


# ------------------------------------------------------------------ CutMix
def test_cutmix_box_is_clipped():
    assert cutmix_box(10, 10, 0.64, 5, 5) == (2, 8, 2, 8)  # side 0.6·10 = 6
    assert cutmix_box(10, 10, 0.64, 0, 9) == (0, 3, 6, 10)  # clipped at the corner
    assert cutmix_box(10, 10, 1.0, 4, 4) == (4, 4, 4, 4)  # λ = 1: empty box


def test_cutmix_label_weight_equals_pasted_area():
    cutmix = CutMix()
    images = torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 3, 16, 16).contiguous()
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    checked = 0
    for seed in range(5):
        torch.manual_seed(seed)
        batch = cutmix.augment(Batch(images, labels))
        lam, partner_labels = batch.extras["cutmix_lambda"], batch.extras["cutmix_labels"]
        for i in range(8):
            pasted = (batch.images[i] != images[i]).all(0).float().mean().item()
            if pasted == 0:
                continue  # partner is itself or the box is empty
            partner = int(batch.images[i, 0][batch.images[i, 0] != images[i, 0, 0, 0]][0].item()) - 1
            assert partner_labels[i] == labels[partner]
            assert math.isclose(pasted, 1 - lam, abs_tol=1e-9)
            checked += 1
        logits = torch.randn(8, 2)
        expected = lam * nn.functional.cross_entropy(logits, labels) + \
            (1 - lam) * nn.functional.cross_entropy(logits, partner_labels)
        assert torch.allclose(cutmix.loss(type("O", (), {"logits": logits})(), batch), expected)
    assert checked > 0
    assert torch.equal(images, torch.arange(1.0, 9.0).view(8, 1, 1, 1).expand(8, 3, 16, 16))  # input untouched
    off = CutMix(CutMix.Params(prob=0.0)).augment(Batch(images, labels))
    assert off.images is images and "cutmix_labels" not in off.extras


# ------------------------------------------------------------------ SPG
def test_spg_seeds_thresholds_and_fallback():
    values = torch.zeros(1, 1, 8, 8)
    values[..., :4, :] = 0.9  # 32 pixels above δh = 0.7
    values[..., 4:6, :] = 0.3  # uncertain
    values[..., 6:, :] = 0.005  # below δl = 0.01
    seeds = seed_targets(values, 0.7, 0.01)[0, 0]
    assert torch.all(seeds[:4] == 1) and torch.all(seeds[4:6] == IGNORE) and torch.all(seeds[6:] == 0)
    few = torch.zeros(1, 1, 8, 8)
    few[..., 0, :2] = 0.6  # nothing above 0.7: fall back to > 0.7·max = 0.42
    few[..., 1, :] = 0.5
    seeds = seed_targets(few, 0.7, 0.01)[0, 0]
    assert torch.all(seeds[0, :2] == 1) and torch.all(seeds[1] == 1)  # 10 pixels > 0.42
    assert torch.all(seeds[0, 2:] == 0) and torch.all(seeds[2:] == 0)
    logits = torch.tensor([[[[2.0, -1.0], [5.0, 0.0]]]])
    targets = torch.tensor([[[[1.0, IGNORE], [IGNORE, 0.0]]]])
    expected = nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0]))
    assert torch.allclose(seed_bce(logits, targets), expected)
    assert seed_bce(logits, torch.full_like(logits, IGNORE)).item() == 0


def test_spg_taps_branches_and_loss():
    spg = SPG()
    model = build_model(spg)
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    backbone = model.backbone
    assert backbone.spg_taps == ("layer3.0", "layer3")
    out, feats = run_with_taps(backbone.eval(), x, backbone.spg_taps)
    with torch.no_grad():
        manual = x
        for name in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2"):
            manual = getattr(backbone, name)(manual)
        assert torch.allclose(feats["layer3.0"], backbone.layer3[0](manual))
        assert torch.allclose(feats["layer3"], backbone.layer3(manual))
        assert torch.allclose(out, backbone(x))
    model.train()
    output = model(x, labels)
    assert {k: tuple(v.shape[1:2]) for k, v in output.extras.items()} == {"b1": (1,), "b2": (1,), "c": (1,)}
    loss = spg.loss(output, Batch(x, labels))
    assert loss.item() > nn.functional.cross_entropy(output.logits, labels).item() and math.isfinite(loss.item())
    loss.backward()
    assert model.head["B_shared"][0].weight.grad.abs().sum() > 0 and model.head["C"][0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        cams = SPG().cams(model, x, labels)  # a fresh (never adapted) instance, as the evaluator uses
    assert cams.shape == (2, 4, 4)
    assert SPG.unsupported(info("deit-small")) and SPG.unsupported(info("inceptionv3-wsol")) is None


# ------------------------------------------------------------------ one tiny study, all five
@pytest.mark.slow
def test_tiny_study_all_five(tmp_path):
    from tests.conftest import TINY
    from wsolctl import pipeline

    recipe = tmp_path / "tiny.yaml"
    text = TINY.format(root=tmp_path / "data").replace(
        "  - name: cam\n  - name: gradcam\n",
        "  - name: has\n  - {name: acol, params: {erase_threshold: 0.7}}\n  - name: adl\n"
        "  - name: cutmix\n  - name: spg\n")
    text = text.replace("image_size: 48", "image_size: 32").replace("size: 64, train_per_class: 6, test_per_class: 3",
                                                                    "size: 32, train_per_class: 4, test_per_class: 2")
    recipe.write_text(text)
    pipeline.run(recipe, tmp_path / "out", quiet=True)
    results = pl.read_parquet(tmp_path / "out" / "results.parquet")
    assert sorted(results["method"].unique()) == ["acol", "adl", "cutmix", "has", "spg"]
    assert results["run_id"].n_unique() == 5  # none shares a classifier
    for row in results.iter_rows(named=True):
        assert row["selection"] in ("b-loc", "b-cl") and math.isfinite(row["pxap"]) and 0 <= row["pxap"] <= 100
    assert len(results) == 10
    assert_localizes(results)

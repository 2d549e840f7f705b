"""NEGEV: seeds from a frozen CAM classifier, negative evidence, frozen parts, the prerequisite run."""
import math

import polars as pl
import pytest
import torch
from pydantic import ValidationError

from tests.conftest import assert_localizes, backbone_info as info, build_model
from wsolctl import pipeline
from wsolctl.engine.train import train_step
from wsolctl.methods.base import Batch, Output
from wsolctl.methods.cam import CAM
from wsolctl.methods.negev import IGNORE, NEGEV, NegevParams, otsu_threshold, sample_seeds


def _blob_cam(n=3, size=32):
    """High (0.6..1) in the top-left 10×10 square, low (0..0.1) elsewhere."""
    g = torch.Generator().manual_seed(0)
    cam = torch.rand(n, size, size, generator=g) * 0.1
    cam[:, :10, :10] = 0.6 + 0.4 * torch.rand(n, 10, 10, generator=g)
    return cam


def test_params_defaults_and_validation():
    p = NegevParams()
    assert (p.n_fg, p.n_bg, p.seed_dilation, p.seed_weight, p.negative_class) == (10, 10, 1, 1.0, None)
    assert p.decoder_channels == [256, 128, 64, 32, 16] and p.size_weight == 0
    for bad in ({"seed_dilation": 2}, {"fg_region": 1.5}, {"fg_region": "max"}, {"crf_weight": 1.0},
                {"size_min": 0.8, "size_max": 0.2}):
        with pytest.raises(ValidationError):
            NegevParams(**bad)
    assert NEGEV.unsupported(info("deit-small")) and NEGEV.unsupported(info("resnet18-wsol")) is None
    assert NEGEV().prerequisite() == {"name": "cam", "params": {}} and NEGEV.prerequisite_rule == "b-loc"


def test_otsu_separates_two_modes():
    values = torch.cat([torch.full((100,), 0.1), torch.full((50,), 0.8)])
    assert 0.1 < otsu_threshold(values) <= 0.8


@pytest.mark.parametrize("fg_region", ["otsu", 0.1])
def test_seeds_fall_where_the_cam_says(fg_region):
    torch.manual_seed(0)
    cam = _blob_cam()
    seeds = sample_seeds(cam, n_fg=7, n_bg=5, fg_region=fg_region, bg_region=0.2, dilation=1)
    assert seeds.dtype == torch.long and seeds.shape == cam.shape
    for i in range(len(cam)):
        fg, bg = seeds[i] == 1, seeds[i] == 0
        assert fg.sum() == 7 and bg.sum() == 5
        assert (cam[i][fg] >= 0.6).all()  # only in the high square
        assert (cam[i][bg] <= torch.quantile(cam[i].flatten(), 0.2)).all()  # only in the lowest 20 %
        assert ((seeds[i] == IGNORE).sum() == cam[i].numel() - 12)


def test_foreground_seeds_favour_high_activation():
    torch.manual_seed(0)
    cam = torch.zeros(1, 8, 8)
    cam[0, 0, :4] = torch.tensor([1.0, 0.02, 0.02, 0.02])  # one strong, three weak in the fg region
    hits = torch.zeros(8, 8)
    for _ in range(200):
        hits += (sample_seeds(cam, 1, 0, fg_region=4 / 64, bg_region=0.5)[0] == 1).float()
    assert hits[0, 0] > 150 and hits.sum() == 200


def test_seed_dilation_and_counts_capped():
    torch.manual_seed(0)
    cam = torch.zeros(1, 21, 21)
    cam[0, 10, 10] = 1.0  # a single high pixel: one fg seed at most
    seeds = sample_seeds(cam, n_fg=5, n_bg=0, fg_region=1 / 441, bg_region=0.5, dilation=3)
    assert (seeds == 1).sum() == 9 and (seeds[0, 9:12, 9:12] == 1).all()
    seeds = sample_seeds(cam, n_fg=0, n_bg=3, fg_region=1 / 441, bg_region=0.5, dilation=5)
    assert (seeds == 0).sum() <= 3 * 25 and (seeds == 1).sum() == 0
    assert (seeds == 0).sum() >= 25


def test_negative_evidence_pushes_every_pixel_to_background():
    method = NEGEV(NegevParams(negative_class=0, n_fg=0, n_bg=0))
    seg = torch.zeros(2, 2, 8, 8, requires_grad=True)
    cams = torch.rand(2, 8, 8)
    output = Output(logits=torch.zeros(2, 2), extras={"seg_logits": seg, "seed_cams": cams})
    terms = method.loss_terms(output, Batch(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1])))
    assert math.isclose(terms["negative"].item(), math.log(2), rel_tol=1e-6)
    method.loss(output, Batch(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))).backward()
    grad = seg.grad
    assert (grad[0, 0] < 0).all() and (grad[0, 1] > 0).all()  # descent raises bg, lowers fg everywhere
    assert (grad[1] == 0).all()  # the positive image gets no negative evidence (and no seeds here)
    positives = method.loss_terms(output, Batch(torch.zeros(2, 3, 8, 8), torch.tensor([1, 1])))
    assert positives["negative"].item() == 0
    off = NEGEV(NegevParams(n_fg=0, n_bg=0)).loss_terms(output, Batch(torch.zeros(2, 3, 8, 8), torch.tensor([0, 0])))
    assert off["negative"].item() == 0  # negative_class None (GlaS): off


def test_load_prerequisite_copies_cam_and_frozen_parts_stay_frozen():
    torch.manual_seed(0)
    cam_model = build_model(CAM())
    cam_model.train()
    cam_model(torch.randn(4, 3, 32, 32))  # move BN statistics away from their init
    state = {k: v.clone() for k, v in cam_model.state_dict().items()}

    method = NEGEV(NegevParams(decoder_channels=[16, 8]))
    model = build_model(method)
    method.load_prerequisite(model, state)
    for k, v in state.items():
        target = model.backbone if k.startswith("backbone.") else model.head.classifier
        assert torch.equal(target.state_dict()[k.split(".", 1)[1]], v)
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    model.eval()
    assert torch.equal(model(images).logits, cam_model.eval()(images).logits)  # accuracy = CAM's
    cam_maps = CAM().cams(cam_model, images, labels)

    model.train()
    decoder_before = [p.clone() for p in model.head.decoder.parameters()]
    optimizer = torch.optim.SGD(model.param_groups(0.1, 10), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for _ in range(2):
        train_step(model, Batch(images, labels), optimizer, torch.amp.GradScaler("cpu", enabled=False), False)
    assert not model.backbone.training and not model.head.classifier.training and model.head.decoder.training
    for k, v in state.items():
        now = model.state_dict()[k.replace("head.", "head.classifier.")]
        assert torch.equal(now, v), k  # weights and BN statistics unchanged
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is None for p in model.head.classifier.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, model.head.decoder.parameters()))
    # the seed CAMs are the frozen CAM classifier's (ground-truth class), upsampled to the input
    out = model(images, labels)
    up = torch.nn.functional.interpolate(cam_maps[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(out.extras["seed_cams"], up, atol=1e-5)
    assert out.extras["seg_logits"].shape == (4, 2, 32, 32)
    model.eval()
    with torch.no_grad():
        maps = method.cams(model, images, labels)
    assert maps.shape == (4, 32, 32) and (maps >= 0).all() and (maps <= 1).all()


def test_cams_are_the_decoders_foreground_probability(monkeypatch):
    """A decoder whose foreground logit is known (high on a square): the map must rank the square
    first and equal softmax over (background, foreground) — channel 1 is the foreground."""
    method = NEGEV(NegevParams(decoder_channels=[16, 8]))
    model = build_model(method).eval()
    images = torch.randn(2, 3, 32, 32)
    seg = torch.zeros(2, 2, 32, 32)
    seg[:, 1] = -2.0
    seg[0, 1, 4:12, 20:30] = 3.0
    seg[1, 1, 18:28, 2:9] = 1.0
    seg[:, 0] = 0.5  # background logit, constant
    monkeypatch.setattr(model.head.decoder, "forward", lambda features, images: seg)
    with torch.no_grad():
        maps = method.cams(model, images, torch.tensor([1, 1]))
    torch.testing.assert_close(maps, torch.sigmoid(seg[:, 1] - seg[:, 0]))
    inside = seg[:, 1] > 0
    for i in range(2):
        assert maps[i][inside[i]].min() > 0.5 > maps[i][~inside[i]].max()


@pytest.mark.slow
def test_pipeline_trains_cam_first_then_negev(tmp_path, tiny_recipe):
    text = tiny_recipe.read_text().replace("synthetic-glas", "synthetic-camelyon")
    text = text.replace("  - name: cam\n  - name: gradcam\n",
                        "  - name: negev\n    params: {negative_class: 0, decoder_channels: [16, 8]}\n")
    text = text.replace("image_size: 48", "image_size: 32")
    (tmp_path / "r.yaml").write_text(text)
    out = pipeline.train(tmp_path / "r.yaml", tmp_path / "out", quiet=True)  # report: not NEGEV's concern
    pipeline.select(out, quiet=True)
    runs = pl.read_parquet(out / "runs.parquet")
    assert sorted(runs["phase"]) == ["prerequisite", "search"]
    results = pl.read_parquet(out / "results.parquet")
    assert set(results["method"]) == {"negev"}
    assert sorted(results["selection"]) == ["b-cl", "b-loc"]
    assert_localizes(results)  # measured: 14.7 against 11.4 for the all-foreground map
    epochs = pl.read_parquet(out / "epochs.parquet").filter(pl.col("method") == "negev")
    assert all(math.isfinite(v) and v > 0 for v in epochs.filter(pl.col("epoch") == 1)["train_loss"])

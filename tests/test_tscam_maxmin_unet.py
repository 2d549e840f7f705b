"""DeiT backbones, TS-CAM, MAXMIN and U-Net: known answers on tiny tensors, one tiny study end to end."""
import math

import polars as pl
import pytest
import torch

from tests.conftest import backbone_info as info, build_model
from wsolctl import plugins
from wsolctl.methods.base import Batch, Output
from wsolctl.methods.decoder import stage_features
from wsolctl.methods.maxmin import MAXMIN, elb, wildcat_pool
from wsolctl.methods.tscam import TSCAM, captured_attention
from wsolctl.methods.unet import UNet


def _true_attention(vit_like) -> list:
    """Hooks on the softmax output of timm's unfused attention path: the attention the model uses."""
    rows, handles = [], []
    for module in vit_like.modules():
        if hasattr(module, "qkv") and hasattr(module, "attn_drop"):
            module.fused_attn = False
            handles.append(module.attn_drop.register_forward_hook(lambda m, a, o: rows.append(a[0][:, :, 0, 1:].mean(1))))
    return rows, handles


# --- DeiT ---------------------------------------------------------------------------------------------

def test_deit_backbone_is_timm_deit_as_a_token_map(tmp_path):
    import timm

    torch.manual_seed(0)
    reference = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    torch.save(reference.state_dict(), tmp_path / "deit.pth")
    backbone = plugins.load("backbones", "deit-tiny")()
    module = backbone.build(str(tmp_path / "deit.pth")).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        tokens = reference.forward_features(x)[:, 1:]  # patch tokens after the final norm
        features = module(x)
        assert features.shape == (2, 192, 14, 14) and module.out_channels == 192
        assert torch.allclose(features.flatten(2).transpose(1, 2), tokens, atol=1e-5)
        # other recipe sizes: position embedding resampled, sides padded up to a multiple of 16
        assert module(torch.randn(1, 3, 64, 64)).shape == (1, 192, 4, 4)
        assert module(torch.randn(1, 3, 50, 50)).shape == (1, 192, 4, 4)
    module.get_submodule(backbone.cam_layer)
    assert len(list(module.blocks)) == 12


# --- TS-CAM --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [True, False])
def test_attention_capture_matches_the_models_own_attention(fused):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, num_classes=0).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), captured_attention(vit) as captured:
        for block in vit.blocks:
            block.attn.fused_attn = fused
        vit(x)
    true, handles = _true_attention(vit)
    with torch.no_grad():
        vit(x)
    for h in handles:
        h.remove()
    assert len(captured) == len(true) == 3
    for got, want in zip(captured, true):
        assert got.shape == (2, 16)  # 4×4 patches
        assert torch.allclose(got, want, atol=1e-6)
        assert (got.sum(1) < 1).all() and (got > 0).all()  # the cls→cls weight is excluded
    vit(x)  # hooks are gone after the context
    assert len(captured) == 3


def test_tscam_cam_is_class_map_times_attention_summed_over_layers():
    method = TSCAM()
    model = build_model(method, "deit-tiny").eval()
    images, targets = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    true, handles = _true_attention(model.backbone)
    with torch.no_grad():
        cams = method.cams(model, images, targets)
        output = model(images)
    for h in handles:
        h.remove()
    assert cams.shape == (2, 4, 4)  # the token grid
    assert len(true) == 24  # 12 layers, two forwards (cams, then model)
    attention = torch.stack(true[:12]).sum(0).reshape(2, 4, 4)
    expected = output.class_maps[torch.arange(2), targets] * attention
    assert torch.allclose(cams, expected, atol=1e-5)
    assert torch.allclose(output.logits, output.class_maps.mean((2, 3)))
    assert output.class_maps.shape == (2, 2, 4, 4)


def test_tscam_refuses_cnn_backbones_at_validation(tmp_path):
    from tests.conftest import TINY
    from wsolctl.recipe import RecipeError, load_recipe

    assert TSCAM.unsupported(info("deit-small")) is None and TSCAM.unsupported(info("vit_tiny_patch16_224")) is None
    assert "class token" in TSCAM.unsupported(info("resnet50-wsol"))
    path = tmp_path / "r.yaml"
    path.write_text(TINY.format(root=tmp_path / "data").replace("  - name: cam\n  - name: gradcam\n", "  - name: tscam\n"))
    with pytest.raises(RecipeError, match="tscam does not support backbone 'resnet18-wsol'"):
        load_recipe(path)


# --- MAXMIN --------------------------------------------------------------------------------------------

def test_elb_is_small_inside_linear_outside_and_differentiable():
    t = 5.0
    z = torch.tensor([-0.9, -0.5, -0.1, -1 / t ** 2, 0.0, 0.1, 0.2], requires_grad=True)
    value = elb(z, t)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(z.grad).all()
    assert value[0] < value[1] < value[2] < value[4] < value[5] < value[6]  # monotone increasing
    assert value[1] < 0.15  # well inside the feasible set: nearly free
    assert math.isclose((value[6] - value[5]).item(), t * 0.1, rel_tol=1e-5)  # slope t outside
    eps = 1e-4  # continuous at the switch point z = -1/t²
    assert abs(float(elb(torch.tensor(-1 / t ** 2 - eps), t) - elb(torch.tensor(-1 / t ** 2 + eps), t))) < 1e-2
    assert (z.grad > 0).all()


def test_wildcat_pool_known_answer():
    maps = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert wildcat_pool(maps, 0.25, 0, 0.6).item() == pytest.approx((15 + 14 + 13 + 12) / 4)
    assert wildcat_pool(maps, 0.25, 0.25, 0.5).item() == pytest.approx(13.5 + 0.5 * 1.5)
    assert wildcat_pool(maps, 2, 1, 1.0).item() == pytest.approx(14.5 + 0.0)  # counts, not fractions


def test_maxmin_mask_is_the_sharpened_minmax_of_the_weighted_cams():
    method = MAXMIN(MAXMIN.Params(w=8, sigma=0.15))
    class_maps = torch.zeros(1, 2, 2, 2)
    class_maps[0, 0] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    class_maps[0, 1] = torch.tensor([[3.0, 2.0], [1.0, 0.0]])
    logits = torch.tensor([[2.0, 0.0]])  # posterior favours class 0
    raw = method.mask_logits(class_maps, logits, (2, 2))
    mask = torch.sigmoid(raw)
    assert ((mask >= 0) & (mask <= 1)).all()
    assert raw.max().item() == pytest.approx(8 * (1 - 0.15), abs=1e-5)
    assert raw.min().item() == pytest.approx(-8 * 0.15, abs=1e-5)
    assert raw[0, 1, 1] == raw.max() and raw[0, 0, 0] == raw.min()  # class 0's peak wins
    assert method.mask_logits(class_maps, logits, (8, 8)).shape == (1, 8, 8)


def test_maxmin_mask_and_cams_rank_the_object_first():
    """A toy where the answer is known: the backbone is the identity and the localizer's class maps
    are the image's first channel, which is bright on a square. The mask must be high (> 0.5) on the
    square and low everywhere else, in the training forward and in ``cams`` alike."""
    from torch import nn

    backbone = nn.Identity()
    backbone.out_channels = 3
    method = MAXMIN(MAXMIN.Params(modalities=1))
    model = build_model(method, backbone)
    with torch.no_grad():
        conv = model.head["localizer"].conv
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[:, 0] = 1.0
    images = torch.zeros(2, 3, 12, 12)
    images[0, 0, 2:6, 3:8] = 1.0
    images[1, 0, 7:11, 1:4] = 1.0
    inside = images[:, 0] > 0
    with torch.no_grad():
        mask = model.train()(images, torch.tensor([1, 1])).extras["mask"]
        cams = method.cams(model.eval(), images, torch.tensor([1, 1]))
    for m in (mask, cams):
        assert (m[inside] > 0.5).all() and (m[~inside] < 0.5).all()
        for i in range(2):
            assert m[i][inside[i]].min() > m[i][~inside[i]].max()
    torch.testing.assert_close(mask, cams)


def test_maxmin_trains_all_parts_and_priors_act():
    method = MAXMIN()
    model = build_model(method).train()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    output = model(images, labels)
    mask = output.extras["mask"]
    assert mask.shape == (2, 32, 32) and ((mask >= 0) & (mask <= 1)).all()
    terms = method.loss_terms(output, Batch(images, labels))
    assert all(torch.isfinite(v) for v in terms.values()) and terms["normal"] == 0
    method.loss(output, Batch(images, labels)).backward()
    for part in (model.head["localizer"], model.head["classifier"], model.backbone.layer1):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    with torch.no_grad():
        model.eval()
        cams = method.cams(model.eval(), images, torch.tensor([1, 1]))
        assert torch.equal(cams, method.cams(model, images, torch.tensor([0, 0])))  # class-agnostic
        assert cams.shape == (2, 32, 32)

    # size prior: a mask that covers everything (or nothing) costs more than a half mask
    def size_term(area: float, labels=None, params=None):
        labels = torch.tensor([1, 1]) if labels is None else labels
        m = MAXMIN(params or MAXMIN.Params())
        fake = Output(torch.zeros(2, 2), extras={"mask": torch.full((2, 4, 4), area),
                                                 "mask_logits": torch.full((2, 4, 4), 3.0),
                                                 "pos_logits": torch.zeros(2, 2), "neg_logits": torch.zeros(2, 2)})
        return m.loss_terms(fake, Batch(torch.zeros(2, 3, 4, 4), labels))

    assert size_term(1.0)["size"] > size_term(0.5)["size"] + 0.5
    assert size_term(0.0)["size"] > size_term(0.5)["size"] + 0.5
    assert size_term(0.5)["neg"] == pytest.approx(0.0, abs=1e-6)  # uniform prediction: KL = 0
    # normal images (CAMELYON): pushed to background, exempt from the other region terms
    normal = size_term(1.0, torch.tensor([0, 0]), MAXMIN.Params(normal_class=0))
    assert normal["size"] == 0 and normal["pos"] == 0 and normal["normal"] > 3.0


# --- U-Net ---------------------------------------------------------------------------------------------

def test_unet_decoder_comes_from_the_declared_stages():
    model = build_model(UNet(UNet.Params(decoder_channels=[16, 8])))
    assert model.head.decoder.stages == ("act1", "layer1", "layer2", "layer3", "layer4")
    assert len(model.head.decoder.blocks) == 5  # the last upsamples without a skip
    assert build_model(UNet(), "deit-tiny").head.decoder.stages == ("",)  # a token model: its output map


@pytest.mark.parametrize("name", ["unet", "negev"])
def test_default_decoder_takes_no_raw_image_skip(name):
    """The reference UnetDecoder: the last block upsamples to the input without a skip. The raw
    image is concatenated only with the documented deviation ``input_skip: true``."""
    cls = plugins.load("methods", name)
    images, other = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    outputs = {}
    for input_skip in (False, True):
        torch.manual_seed(0)
        model = build_model(cls(cls.Params(decoder_channels=[16, 8], input_skip=input_skip))).eval()
        assert model.head.decoder.blocks[-1].conv1[0].in_channels == 8 + (3 if input_skip else 0)
        with torch.no_grad():
            features, _ = stage_features(model.backbone, model.head.decoder.stages, images)
            outputs[input_skip] = [model.head.decoder(features, x) for x in (images, other)]
    same, changed = outputs[False], outputs[True]
    assert same[0].shape[-2:] == (32, 32) and torch.equal(same[0], same[1])  # the image only sets the size
    assert not torch.allclose(changed[0], changed[1])


def test_unet_probe_classifier_leaves_the_encoder_to_the_masks():
    """Issue 27: ``classifier: probe`` (the survey recipes) trains the linear classifier on the detached
    encoder output, so the classification loss sends no gradient into the encoder; ``joint`` (the
    default, left out of run ids) does."""
    from wsolctl.engine.plan import numbers

    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    for classifier in ("joint", "probe"):
        method = UNet(UNet.Params(decoder_channels=[16, 8], classifier=classifier))
        model = build_model(method).train()
        output = model(images, labels)
        method.loss_terms(output, Batch(images, labels, masks))["ce"].backward()
        encoder = [p.grad for p in model.backbone.parameters()]
        assert model.head.classifier.weight.grad.abs().sum() > 0
        assert all(g is None for g in encoder) if classifier == "probe" else any(g is not None for g in encoder)
    assert "classifier" not in numbers(UNet.Params()) and numbers(UNet.Params(classifier="probe"))["classifier"] == "probe"


@pytest.mark.slow  # about 90 s of training steps on 2 loaded cores
def test_unet_overfits_one_batch_through_the_engine_step():
    from wsolctl.engine.train import train_step

    method = UNet(UNet.Params(decoder_channels=[16, 8]))
    model = build_model(method).train()
    torch.manual_seed(1)
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    masks = torch.zeros(2, 32, 32, dtype=torch.bool)
    masks[0, 4:20, 6:22] = True
    masks[1, 16:, :12] = True
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    losses = [train_step(model, Batch(images, labels, masks), optimizer, scaler, False) for _ in range(12)]
    assert losses[-1] < 0.7 * losses[0], losses
    model.eval()
    with torch.no_grad():
        cams = method.cams(model, images, labels)
        assert cams.shape == (2, 32, 32)
        assert torch.equal(cams, method.cams(model, images, 1 - labels))  # target-independent
        assert model(images).extras == {}  # evaluation forward skips the decoder
    model.train()
    with torch.no_grad():
        foreground = torch.sigmoid(model(images, labels).extras["seg_logits"])
    assert foreground[masks].mean() > foreground[~masks].mean() + 0.1  # it learnt the masks


# --- end to end ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_study_with_deit_tscam_maxmin_unet(tmp_path):
    from tests.conftest import TINY, assert_localizes
    from wsolctl import pipeline

    text = (TINY.format(root=tmp_path / "data")
            .replace("image_size: 48", "image_size: 64")
            .replace("  - name: resnet18-wsol\n", "  - name: deit-tiny\n")
            .replace("  - name: cam\n  - name: gradcam\n",
                     "  - name: tscam\n  - name: maxmin\n  - name: unet\n"
                     "    params: {decoder_channels: [32, 16]}\n"))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(text)
    out = tmp_path / "out"
    pipeline.run(recipe, out, quiet=True)
    results = pl.read_parquet(out / "results.parquet")
    assert sorted(results["method"].unique()) == ["maxmin", "tscam", "unet"]
    assert results["run_id"].n_unique() == 3  # each trains its own model
    for row in results.iter_rows(named=True):
        assert row["selection"] in ("b-loc", "b-cl")
        assert math.isfinite(row["pxap"]) and 0 <= row["pxap"] <= 100, row
    assert_localizes(results)  # measured: B-LOC 54.7 (TS-CAM), 55.8 (MaxMin), 62.0 (U-Net) vs 51.1
    epochs = pl.read_parquet(out / "epochs.parquet")
    assert epochs.filter(pl.col("epoch") == 1)["train_loss"].is_finite().all()


def test_maxmin_schedules_follow_the_epoch():
    from wsolctl.methods.maxmin import MAXMIN

    method = MAXMIN(MAXMIN.Params(sigma=0.15, sigma_step=0.001, sigma_max=0.2, elb_t=5.0, elb_t_factor=1.1))
    assert (method.sigma, method.elb_t) == (0.15, 5.0)
    method.set_epoch(10)
    assert abs(method.sigma - 0.16) < 1e-12 and abs(method.elb_t - 5.0 * 1.1 ** 10) < 1e-9
    method.set_epoch(500)
    assert method.sigma == 0.2  # capped
    method.set_epoch(10)
    assert abs(method.sigma - 0.16) < 1e-12  # a function of the epoch only (resume-safe)

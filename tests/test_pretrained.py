"""Pretrained weights through the Hugging Face cache (offline: a cache seeded as a download leaves it),
any timm model / hf-hub: name as a backbone, ViT feature maps, frozen encoders."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch

from tests.hubcache import seed_timm
from wsolctl import plugins
from wsolctl.engine.rundir import RunDir
from wsolctl.errors import InputError

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
VIT = "vit_tiny_patch16_224"
VIT_HUB = "hf-hub:timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty hub cache in a temporary HF_HOME, offline (this process and the CLI's)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def same_weights(module, seeded: dict) -> bool:
    """Every tensor of ``module`` equals the seeded one of the same timm key (the head is not kept)."""
    state = module.state_dict()
    assert state and set(state) <= set(seeded)
    return all(torch.equal(v, seeded[k]) for k, v in state.items())


def test_pretrained_true_and_hf_hub_load_exactly_the_seeded_weights(hub):
    repo, resnet = seed_timm(hub, "resnet18.tv_in1k")
    assert repo == "timm/resnet18.tv_in1k"  # torchvision's ImageNet weights, as the survey
    module = plugins.load("backbones", "resnet18-wsol")().build(True)
    assert same_weights(module, resnet)  # the ImageNet weights of the base arch, stride changed
    assert module.layer4[0].conv1.stride == (1, 1)

    repo, vit = seed_timm(hub, VIT, seed=1, config=True)
    assert VIT_HUB == "hf-hub:" + repo
    for name in (VIT, VIT_HUB):
        module = plugins.load("backbones", name)().build(True)
        assert same_weights(module, vit), name
        assert not same_weights(plugins.load("backbones", name)().build(False), vit)  # false: random


@pytest.mark.parametrize("backbone, repo", [("resnet18-wsol", "timm/resnet18.tv_in1k"),
                                            ("resnet50-wsol", "timm/resnet50.tv_in1k"),
                                            ("vgg16-wsol", "timm/vgg16.tv_in1k"),
                                            ("inceptionv3-wsol", "timm/inception_v3.tv_in1k")])
def test_wsol_backbones_start_from_the_surveys_torchvision_weights(backbone, repo):
    """The survey's WSOL backbones start from torchvision's ImageNet weights (timm's tv_in1k tags),
    not timm's default tags (e.g. resnet50.a1_in1k, timm's own training recipe)."""
    from wsolctl.backbones.weights import HubWeights

    assert HubWeights.of(plugins.load("backbones", backbone)().pretrained_name).repo_id == repo


@pytest.mark.slow
def test_resnet50_wsol_loads_the_seeded_torchvision_weights(hub):
    repo, seeded = seed_timm(hub, "resnet50.tv_in1k")
    module = plugins.load("backbones", "resnet50-wsol")().build(True)
    assert repo == "timm/resnet50.tv_in1k" and same_weights(module, seeded)
    seed_timm(hub, "resnet50", seed=1)  # timm's default tag, cached too: not the one loaded
    assert same_weights(plugins.load("backbones", "resnet50-wsol")().build(True), seeded)


def test_empty_cache_fails_in_one_line_naming_the_model(hub, tmp_path):
    from tests.conftest import TINY

    with pytest.raises(InputError) as err:
        plugins.load("backbones", "resnet18-wsol")().build(True)
    message = str(err.value)
    assert "'resnet18.tv_in1k'" in message and "timm/resnet18.tv_in1k" in message and str(hub) in message
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(root=tmp_path / "data").replace(
        "- name: resnet18-wsol", f"- {{name: resnet18-wsol, pretrained: true}}\n  - name: {VIT}"))
    env = dict(os.environ, HF_HOME=str(hub.parent), HF_HUB_OFFLINE="1")
    validate = subprocess.run([sys.executable, "-m", "wsolctl", "validate", str(recipe)], capture_output=True,
                              text=True, env=env)
    assert validate.returncode == 0, validate.stderr  # validation needs no weights
    run = subprocess.run([sys.executable, "-m", "wsolctl", "run", str(recipe), "--out", str(tmp_path / "out"), "-q"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 2 and run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert line.startswith("error: backbone 'resnet18-wsol': pretrained weights of 'resnet18.tv_in1k' "
                           "(hub id timm/resnet18.tv_in1k): not in the Hugging Face cache")
    assert "HF_HUB_OFFLINE=1" in line and "wsolctl weights fetch" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()  # failed before anything


@pytest.mark.slow
def test_weights_list_and_fetch(hub, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
name: w
dataset: {{name: synthetic-glas, root: {tmp_path / 'data'}}}
backbones:
  - {{name: resnet18-wsol, pretrained: true}}
  - {{name: {VIT_HUB}}}
  - {{name: resnet50-wsol}}
methods:
  - name: cam
""")
    env = dict(os.environ, HF_HOME=str(hub.parent), HF_HUB_OFFLINE="1")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "wsolctl", "weights", *args, str(recipe)], capture_output=True,
                              text=True, env=env)

    listed = cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [(r["backbone"], r["hub_id"], r["files"], r["cached"]) for r in rows] == [
        ("resnet18-wsol", "timm/resnet18.tv_in1k", "weights", None),
        (VIT_HUB, "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", "config", None)]  # not pretrained: config only
    fetch = cli("fetch")
    assert fetch.returncode == 2 and fetch.stderr.count("\n") == 1 and "timm/resnet18.tv_in1k" in fetch.stderr
    seed_timm(hub, "resnet18.tv_in1k")
    seed_timm(hub, VIT, config=True)
    assert cli("fetch").returncode == 0  # everything cached: nothing to download, offline is fine
    rows = json.loads(cli("list", "--json").stdout)
    assert all(r["cached"] for r in rows)
    assert rows[0]["cached"][0].endswith("snapshots/0123456789abcdef0123456789abcdef01234567/model.safetensors")


def test_gated_model_says_where_to_ask_for_access(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from wsolctl.backbones import weights

    class Response:  # what the hub answers a token without access (only what the error reads)
        status_code, headers, request = 403, {"X-Error-Code": "GatedRepo"}, None

    def refuse(*args, **kwargs):
        raise GatedRepoError("403 Client Error. Cannot access gated repo", response=Response())

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(weights, "offline", lambda: False)
    monkeypatch.setattr(weights, "reachable", lambda _weights: None)  # the hub answers, and refuses
    with pytest.raises(InputError) as err:
        weights.download(weights.HubWeights.of("hf-hub:MahmoodLab/UNI"))
    assert str(err.value).startswith("'hf-hub:MahmoodLab/UNI' (hub id MahmoodLab/UNI) is a gated model: ask for "
                                     "access at https://huggingface.co/MahmoodLab/UNI, then set HF_TOKEN")


def test_uncached_hf_hub_backbone_validates_offline(hub, tmp_path):
    """recipes/foundation.yaml validates without the hub: what the model is is checked at the start of a run."""
    from wsolctl.recipe import load_recipe

    recipe = load_recipe(RECIPES / "foundation.yaml", [f"dataset.root={tmp_path / 'data'}"])
    assert any(b.instantiate().pretrained_name.startswith("hf-hub:") and b.pretrained is True and b.freeze is True
               for b in recipe.backbones)
    assert recipe.train.feature_cache
    assert list(hub.iterdir()) == []


def test_vit_backbone_declares_tokens_and_gives_patch_maps_at_any_size():
    backbone = plugins.load("backbones", VIT)()
    info = backbone.info()
    assert (info.kind, info.prefix_tokens, info.cam_layer, len(info.stages)) == ("tokens", 1, "blocks.11.norm1", 12)
    assert info.stages[-1].channels == 192 and info.stages[-1].reduction == 16
    module = backbone.build(False).eval()
    import timm

    reference = timm.create_model(VIT, pretrained=False, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True)
    reference.load_state_dict(module.state_dict())  # same timm keys
    x = torch.randn(2, 3, 80, 48)
    with torch.no_grad():
        maps = module(x)
        tokens = reference.eval().forward_features(x)[:, 1:]  # class token dropped
    assert maps.shape == (2, 192, 5, 3)
    assert torch.allclose(maps.flatten(2).transpose(1, 2), tokens, atol=1e-5)
    module.get_submodule(info.cam_layer)


@pytest.mark.parametrize("name", ["resnet18-wsol", "resnet50-wsol", "vgg16-wsol", "inceptionv3-wsol"])
def test_wsol_backbones_declare_their_stages(name):
    """The declared stages are the modules the built network has, with those channels and strides."""
    backbone = plugins.load("backbones", name)()
    info = backbone.info()
    module = backbone.build(False).eval()
    seen = {}
    handles = [module.get_submodule(s.module).register_forward_hook(
        lambda m, a, out, key=s.module: seen.__setitem__(key, out.shape)) for s in info.stages]
    with torch.no_grad():
        module(torch.zeros(1, 3, 128, 128))
    for handle in handles:
        handle.remove()
    for stage in info.stages:
        _, channels, h, _ = seen[stage.module]
        assert channels == stage.channels, stage
        assert math.isclose(128 / h, stage.reduction, rel_tol=0.25), stage  # inception: valid paddings
    assert info.kind == "cnn" and info.layout and info.out_channels == module.out_channels


def test_freeze_true_and_n_stages():
    from wsolctl.backbones.freeze import freeze
    from wsolctl.engine.model import WSOLModel
    from wsolctl.methods.cam import CAM

    backbone = plugins.load("backbones", "resnet18-wsol")()
    module = backbone.build(False)
    frozen = freeze(module, backbone.info(), 3)  # act1 (the stem), layer1, layer2
    trainable = {n.split(".")[0] for n, p in module.named_parameters() if p.requires_grad}
    assert trainable == {"layer3", "layer4"}
    model = WSOLModel(module, CAM(), 2, backbone.info(), frozen=frozen).train()
    assert not module.layer2.training and not module.bn1.training and module.layer3.training
    assert all(p.requires_grad for g in model.param_groups(0.1, 10) for p in g["params"])
    optimized = sum(p.numel() for g in model.param_groups(0.1, 10) for p in g["params"])
    assert optimized == sum(p.numel() for p in model.parameters() if p.requires_grad) < sum(
        p.numel() for p in model.parameters())

    vit = plugins.load("backbones", VIT)()
    module = vit.build(False)
    freeze(module, vit.info(), 3)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert not {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.2.mlp.fc2.bias"} & trainable
    assert {"blocks.3.attn.qkv.weight", "norm.weight"} <= trainable
    module = vit.build(False)
    assert freeze(module, vit.info(), True) == [module]  # the whole backbone, kept in eval mode
    assert not any(p.requires_grad for p in module.parameters())


def test_gradcam_on_a_frozen_vit_backbone():
    """Top-down methods need gradients at a layer of the frozen part; the frozen part gets none."""
    from wsolctl.backbones.freeze import freeze
    from wsolctl.engine.model import WSOLModel
    from wsolctl.methods.gradcam import GradCAM

    vit = plugins.load("backbones", VIT)()
    module = vit.build(False)
    model = WSOLModel(module, GradCAM(), 2, vit.info(), frozen=freeze(module, vit.info(), True)).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        model.head.weight.normal_()  # (a zero-initialised head would give all-zero maps)
        maps = GradCAM().cams(model, torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))
    assert maps.shape == (2, 4, 4) and torch.isfinite(maps).all() and maps.amax() > 0
    assert all(p.grad is None for p in module.parameters())


def test_topdown_cams_on_a_plain_timm_vit_match_a_reshape_oracle():
    """wsolctl.explain.cams on a timm ViT classifier = Grad-CAM / LayerCAM computed by hand on the
    last block's norm1 tokens reshaped to a 14×14 map (pytorch-grad-cam's reshape_transform recipe;
    benchmarks/bench_vit_topdown.py compares with pytorch-grad-cam itself)."""
    import timm

    from wsolctl.explain import cams

    torch.manual_seed(0)
    net = timm.create_model(VIT, num_classes=3).eval()
    x, targets = torch.randn(2, 3, 224, 224), torch.tensor([0, 2])
    store = {}
    handle = net.blocks[-1].norm1.register_forward_hook(lambda m, a, out: store.setdefault("a", out))
    score = net(x).gather(1, targets[:, None]).sum()
    (g,) = torch.autograd.grad(score, store["a"])
    handle.remove()

    def as_map(t):
        return t[:, 1:].reshape(2, 14, 14, -1).permute(0, 3, 1, 2)

    a, g = as_map(store["a"].detach()), as_map(g)
    expected = {"gradcam": (g.mean(dim=(2, 3), keepdim=True) * a).sum(1).clamp_min(0),
                "layercam": (g.clamp_min(0) * a).sum(1).clamp_min(0)}
    for method, oracle in expected.items():
        ours = cams(net, x, targets, method=method)  # default layer: blocks.11.norm1
        assert ours.shape == (2, 14, 14) and oracle.abs().sum() > 0
        assert torch.allclose(ours, oracle, rtol=1e-4, atol=1e-6), method


@pytest.mark.slow
def test_offline_study_from_a_seeded_cache_with_vits_at_a_non_default_size(hub, tmp_path):
    """cam + gradcam on resnet18-wsol (pretrained: true), vit_tiny_patch16_224 and its hf-hub: name,
    at 48 px (the ViTs were pretrained at 224): finite PxAP everywhere; frozen backbones' checkpoints
    hold exactly the seeded weights."""
    from tests.conftest import TINY

    _, resnet = seed_timm(hub, "resnet18.tv_in1k")
    _, vit = seed_timm(hub, VIT, seed=1, config=True)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(root=tmp_path / "data").replace("  - name: resnet18-wsol\n", f"""\
  - {{name: resnet18-wsol, pretrained: true, freeze: true}}
  - {{name: {VIT}, pretrained: true}}
  - {{name: "{VIT_HUB}", pretrained: true, freeze: true}}
"""))
    out = tmp_path / "out"
    env = dict(os.environ, HF_HOME=str(hub.parent), HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "wsolctl", "run", str(recipe), "--out", str(out), "-q"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    results = pl.read_parquet(out / "results.parquet")
    assert sorted(results["backbone"].unique()) == sorted(["resnet18-wsol", VIT, VIT_HUB])
    assert sorted(results["method"].unique()) == ["cam", "gradcam"]
    assert all(math.isfinite(v) for v in results["pxap"])
    for run_dir in (out / "runs").iterdir():
        backbone = RunDir(run_dir).spec().backbone
        seeded = resnet if backbone.name == "resnet18-wsol" else vit
        for ckpt in (run_dir / "ckpt").glob("*.pt"):
            state = torch.load(ckpt, weights_only=True)
            weights = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
            matches = [torch.equal(v, seeded[k]) for k, v in weights.items()]
            assert matches and (all(matches) or not backbone.freeze), (backbone, ckpt.name)

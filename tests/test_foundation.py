"""Named foundation models (wsolctl/backbones/foundation.py) built on the ``meta`` device from a
config.json written here as the hub publishes it (shapes only, no weights); backbone normalisation;
timm create_model arguments from a recipe (layers by name only)."""
import json

import pytest
import torch

from tests.hubcache import seed_file
from wsolctl import plugins
from wsolctl.errors import InputError
from wsolctl.recipe.base import IMAGENET

IMAGENET_CFG = {"mean": list(IMAGENET.mean), "std": list(IMAGENET.std)}
# What each model's config.json declares (architecture, model_args, pretrained_cfg), as on its hub page.
CONFIGS = {
    "uni": ("vit_large_patch16_224", {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0,
                                      "dynamic_img_size": True}, IMAGENET_CFG),
    "uni2-h": ("vit_giant_patch14_224", {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24,
                                         "init_values": 1e-5, "embed_dim": 1536, "mlp_ratio": 5.33334, "num_classes": 0,
                                         "no_embed_class": True, "reg_tokens": 8, "dynamic_img_size": True},
               IMAGENET_CFG),
    "virchow2": ("vit_huge_patch14_224", {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4,
                                          "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True},
                 IMAGENET_CFG),
    "h-optimus-0": ("vit_giant_patch14_reg4_dinov2", {"num_classes": 0, "img_size": 224, "global_pool": "token",
                                                      "init_values": 1e-5}, {}),
    "h-optimus-1": ("vit_giant_patch14_reg4_dinov2", {"num_classes": 0, "img_size": 224, "global_pool": "token",
                                                      "init_values": 1e-5}, {}),
    "prov-gigapath": ("vit_giant_patch14_dinov2", {"img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536,
                                                   "depth": 40, "num_heads": 24, "init_values": 1e-5,
                                                   "mlp_ratio": 5.33334, "num_classes": 0}, IMAGENET_CFG),
    "kaiko-vits16": ("vit_small_patch16_224", {"num_classes": 0}, {"mean": [0.5] * 3, "std": [0.5] * 3}),
    "kaiko-vitb16": ("vit_base_patch16_224", {"num_classes": 0}, {"mean": [0.5] * 3, "std": [0.5] * 3}),
}
# (patch side, prefix tokens, channels) each model has
SHAPES = {"uni": (16, 1, 1024), "uni2-h": (14, 9, 1536), "virchow2": (14, 5, 1280), "h-optimus-0": (14, 5, 1536),
          "h-optimus-1": (14, 5, 1536), "prov-gigapath": (16, 1, 1536), "kaiko-vits16": (16, 1, 384),
          "kaiko-vitb16": (16, 1, 768)}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from wsolctl.backbones.timm_any import describe

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    describe.cache_clear()
    yield cache
    describe.cache_clear()


def write_config(cache, hub_id: str, architecture: str, model_args: dict, pretrained_cfg: dict) -> None:
    config = {"architecture": architecture, "num_classes": 0, "model_args": model_args,
              "pretrained_cfg": {"input_size": [3, 224, 224], **pretrained_cfg}}
    seed_file(cache, hub_id, "config.json", json.dumps(config).encode())


@pytest.mark.slow  # another meta build of each model (the giant ones take seconds)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_table_alone_describes_the_network(hub, name):
    """A config.json that names only the architecture builds the same network as the full one."""
    from wsolctl.backbones.foundation import CARDS

    arch, model_args, cfg = CONFIGS[name]
    write_config(hub, CARDS[name].hub_id, arch, {}, cfg)
    info = plugins.load("backbones", name)().info()
    patch, prefix, channels = SHAPES[name]
    assert (info.prefix_tokens, info.reduction, info.out_channels, len(info.stages)) == (
        prefix, patch, channels, {"uni": 24, "uni2-h": 24, "virchow2": 32, "prov-gigapath": 40,
                                  "kaiko-vits16": 12, "kaiko-vitb16": 12}.get(name, 40))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_named_model_builds_on_meta_with_its_patch_grid_and_prefix_tokens(hub, name):
    from wsolctl.backbones.featuremap import FeatureMap
    from wsolctl.backbones.foundation import CARDS
    from wsolctl.backbones.timm_any import TOKEN_KWARGS, resolve_layers

    card = CARDS[name]
    write_config(hub, card.hub_id, *CONFIGS[name])
    backbone = plugins.load("backbones", name)()
    info = backbone.info()
    patch, prefix, channels = SHAPES[name]
    assert (info.kind, info.prefix_tokens, info.reduction, info.out_channels) == ("tokens", prefix, patch, channels)
    assert info.normalize == card.normalize
    import timm

    arch, model_args, _ = CONFIGS[name]
    args = {**model_args, **resolve_layers(backbone.model_args()), **TOKEN_KWARGS, "num_classes": 0, "global_pool": ""}
    with torch.device("meta"):  # the module wsolctl builds, without weights
        net = FeatureMap(timm.create_model(arch, pretrained=False, **args), info)
        maps = net(torch.empty(2, 3, 224, 160))
        tokens = net._net.forward_features(torch.empty(1, 3, 224, 224))
    assert maps.shape == (2, channels, -(-224 // patch), -(-160 // patch))  # ceil: padded to whole patches
    assert tokens.shape[1] == prefix + (224 // patch) ** 2
    net.get_submodule(info.cam_layer)


def test_card_layout_is_checked_against_the_config(hub):
    from wsolctl.backbones.foundation import CARDS

    arch, model_args, cfg = CONFIGS["uni2-h"]
    write_config(hub, CARDS["uni2-h"].hub_id, arch, {**model_args, "reg_tokens": 4}, cfg)
    backbone = plugins.load("backbones", "uni2-h")(plugins.load("backbones", "uni2-h").Params(
        model_args={"reg_tokens": 4}))  # a recipe's model_args override the card's
    with pytest.raises(InputError, match="builds 5 prefix token.*card says class token \\+ 8 register tokens"):
        backbone.info()


def test_phikon_v2_is_listed_but_says_why_it_cannot_be_used(hub, tmp_path):
    from wsolctl.errors import RecipeError
    from wsolctl.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: p\ndataset: {{name: synthetic-glas, root: {tmp_path}}}\nbackbones:\n  - name: phikon-v2\n"
                      "methods:\n  - name: cam\n")
    with pytest.raises(RecipeError, match="transformers model"):
        load_recipe(recipe)


def test_model_args_take_layers_by_name_from_a_fixed_list():
    from pydantic import ValidationError

    params = plugins.load("backbones", "vit_tiny_patch16_224").Params
    assert params(model_args={"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU", "reg_tokens": 4}).model_args
    for bad in ({"mlp_layer": "os.system"}, {"act_layer": "torch.nn.SiLU"}, {"num_classes": 3}):
        with pytest.raises(ValidationError):
            params(model_args=bad)
    backbone = plugins.load("backbones", "vit_tiny_patch16_224")(params(
        model_args={"reg_tokens": 2, "mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}))
    info = backbone.info()
    assert info.prefix_tokens == 3
    module = backbone.build(False)
    mlp = module.blocks[0].mlp  # SwiGLUPacked: timm's GluMlp, gated SiLU on a packed fc1
    assert type(mlp).__name__ == "GluMlp" and isinstance(mlp.act, torch.nn.SiLU)


def test_backbones_declare_their_normalisation_and_a_recipe_overrides_it(tmp_path):
    from wsolctl.recipe import load_recipe

    assert plugins.load("backbones", "resnet50-wsol")().info().normalize == IMAGENET
    assert plugins.load("backbones", "deit-small")().info().normalize == IMAGENET
    half = plugins.load("backbones", "vit_tiny_patch16_224")().info().normalize  # timm's augreg weights
    assert half.mean == half.std == (0.5, 0.5, 0.5)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
name: n
dataset: {{name: synthetic-glas, root: {tmp_path}}}
backbones:
  - name: resnet18-wsol
  - {{name: vit_tiny_patch16_224, normalize: {{mean: [0.1, 0.2, 0.3], std: [1, 1, 1]}}}}
methods:
  - name: cam
""")
    loaded = load_recipe(recipe)
    assert loaded.backbones[0].normalization() == IMAGENET
    assert loaded.backbones[1].normalization().mean == (0.1, 0.2, 0.3)
    recipe.write_text(recipe.read_text().replace("std: [1, 1, 1]", "std: [1, 0, 1]"))
    from wsolctl.errors import RecipeError

    with pytest.raises(RecipeError, match="normalize.std"):
        load_recipe(recipe)


HALF_VIT = "test-org/vit-half"  # a small ViT whose hub config declares mean = std = 0.5


def seed_half_vit(cache, tmp_path) -> str:
    """Random weights of vit_tiny_patch16_224 published under HALF_VIT with the config.json timm's
    exporter writes, its mean and std set to 0.5."""
    import timm
    from safetensors.torch import save
    from timm.models._hub import save_config_for_hf

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    seed_file(cache, HALF_VIT, "model.safetensors", save({k: v.contiguous() for k, v in net.state_dict().items()}))
    save_config_for_hf(net, tmp_path / "config.json")
    config = json.loads((tmp_path / "config.json").read_text())
    config["pretrained_cfg"].update(mean=[0.5] * 3, std=[0.5] * 3)
    seed_file(cache, HALF_VIT, "config.json", json.dumps(config).encode())
    return "hf-hub:" + HALF_VIT


@pytest.mark.slow
def test_hub_config_normalisation_reaches_training_examples_and_predict(hub, tmp_path):
    """Offline, from a seeded cache: a trained run's stored examples and predict's tiles were
    normalised with the config's 0.5, not ImageNet's."""
    import numpy as np
    from PIL import Image

    from tests.conftest import TINY
    from wsolctl import pipeline
    from wsolctl.data.folds import read_split
    from wsolctl.engine.rundir import RunDir
    from wsolctl.predict.model import TileScorer, load_selected

    name = seed_half_vit(hub, tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(TINY.format(root=tmp_path / "data").replace(
        "  - name: resnet18-wsol\n", f"  - {{name: \"{name}\", pretrained: true, freeze: true}}\n"))
    out = pipeline.run(recipe, tmp_path / "out", quiet=True).parent
    (run_dir,) = (out / "runs").iterdir()
    assert RunDir(run_dir).spec().identity()["normalize"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    examples = np.load(run_dir / "examples" / "images.npz")
    assert examples["mean"].tolist() == examples["std"].tolist() == [0.5, 0.5, 0.5]
    folds = pipeline.recipe_of(out).dataset.instantiate().folds_dir(tmp_path / "data")
    test = {s.image: s for s in read_split(folds, 0, "test")}
    for image, sample_id in zip(examples["images"], examples["ids"]):  # un-normalised with the values used
        source = np.asarray(Image.open(tmp_path / "data" / test[str(sample_id)].image).convert("RGB").resize(
            (48, 48), Image.BILINEAR), np.int16)
        assert np.abs(image.astype(np.int16) - source).max() <= 1

    loaded = load_selected(out, method="cam")
    assert loaded.mean == loaded.std == (0.5, 0.5, 0.5)
    seen = []
    loaded.model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    probabilities, _ = TileScorer(loaded, 1)(np.full((2, 48, 48, 3), 255, np.uint8))
    assert torch.allclose(seen[0], torch.ones_like(seen[0]))  # white: (1 - 0.5) / 0.5; ImageNet's would be > 2
    assert probabilities.shape == (2,)


@pytest.mark.slow
def test_named_model_runs_end_to_end_offline_with_the_feature_cache(hub, tmp_path):
    """kaiko-vits16 from a seeded cache (timm's exported config of a ViT-S, random weights): trained
    frozen on cached features, selected and reported; the checkpoints hold the seeded encoder."""
    import math

    import numpy as np
    import polars as pl
    import timm
    from safetensors.torch import save
    from timm.models._hub import save_config_for_hf

    from tests.test_feature_cache import recipe_text
    from wsolctl import pipeline
    from wsolctl.backbones.foundation import CARDS

    torch.manual_seed(0)
    net = timm.create_model("vit_small_patch16_224", pretrained=False)
    seeded = {k: v.contiguous() for k, v in net.state_dict().items()}
    repo = CARDS["kaiko-vits16"].hub_id
    seed_file(hub, repo, "model.safetensors", save(seeded))
    save_config_for_hf(net, tmp_path / "config.json")
    seed_file(hub, repo, "config.json", (tmp_path / "config.json").read_bytes())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(recipe_text(tmp_path / "data", backbone="{name: kaiko-vits16, pretrained: true, freeze: true}"))
    out = pipeline.run(recipe, tmp_path / "out", quiet=True).parent
    results = pl.read_parquet(out / "results.parquet")
    assert sorted(results["method"].unique()) == ["cam", "gradcam"] and all(map(math.isfinite, results["pxap"]))
    (run_dir,) = (out / "runs").iterdir()
    assert np.load(run_dir / "examples" / "images.npz")["mean"].tolist() == [0.5] * 3  # the card's
    for ckpt in (run_dir / "ckpt").glob("*.pt"):
        state = torch.load(ckpt, weights_only=True)
        encoder = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        assert encoder and all(torch.equal(v, seeded[k]) for k, v in encoder.items())
    assert list((tmp_path / "data" / "features").iterdir())  # trained on the stored outputs


def test_backbones_command_lists_named_models_with_gated_and_cached_state(hub, tmp_path):
    from typer.testing import CliRunner

    from wsolctl.backbones.foundation import CARDS
    from wsolctl.cli import app

    write_config(hub, CARDS["kaiko-vits16"].hub_id, *CONFIGS["kaiko-vits16"])
    result = CliRunner().invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(CARDS) | {"resnet50-wsol", "deit-small"} <= set(rows)
    assert rows["kaiko-vits16"]["cached"] == "config only" and rows["uni2-h"]["cached"] == "no"
    assert rows["uni2-h"]["gated"] and not rows["kaiko-vits16"]["gated"]
    assert rows["uni2-h"]["tokens"] == "class token + 8 register tokens"
    assert rows["h-optimus-0"]["normalize"]["mean"] == [0.707223, 0.578729, 0.703617]
    assert rows["resnet50-wsol"]["normalize"] == IMAGENET.model_dump(mode="json")
    assert not rows["phikon-v2"]["usable"] and "transformers" in rows["phikon-v2"]["note"]

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: s\ndataset: {{name: synthetic-glas, root: {tmp_path}}}\nbackbones:\n"
                      "  - name: uni2-h\n  - name: vit_tiny_patch16_224\nmethods:\n  - name: cam\n")
    shown = CliRunner().invoke(app, ["show", str(recipe)])
    assert shown.exit_code == 0, shown.output
    assert "#   uni2-h: mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225] (the backbone's)" in shown.output
    assert "#   vit_tiny_patch16_224: mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5] (the backbone's)" in shown.output


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_named_model_loads_a_local_file_with_no_hub_access(hub, tmp_path, monkeypatch, suffix):
    """`name: kaiko-vits16` + `pretrained: PATH` (depth cut to 2 to keep it small): validated, planned
    and built from the card alone, the file's weights loaded exactly; the hub cache is never read."""
    import timm

    from wsolctl.backbones import weights
    from wsolctl.backbones.foundation import HALF
    from wsolctl.recipe import load_recipe

    torch.manual_seed(0)
    net = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=2)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / f"kaiko{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub cache was consulted")

    monkeypatch.setattr(weights, "cached_file", no_hub)
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(f"name: r\ndataset: {{name: synthetic-glas, root: {tmp_path / 'data'}}}\n"
                           f"backbones: [{{name: kaiko-vits16, pretrained: {path}, params: {{model_args: {{depth: 2}}}}}}]\n"
                           "methods: [{name: cam}]\n")
    recipe = load_recipe(recipe_path)
    assert weights.needs(recipe) == [] and recipe.backbones[0].normalization() == HALF
    built = recipe.backbones[0].instantiate().build(recipe.backbones[0].pretrained)
    loaded = built._net.state_dict()
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_bare_timm_name_with_a_local_file_asks_for_its_normalisation(tmp_path):
    from wsolctl.errors import RecipeError
    from wsolctl.recipe import load_recipe

    path = tmp_path / "w.pt"
    torch.save({}, path)
    recipe = tmp_path / "r.yaml"
    text = (f"name: r\ndataset: {{name: synthetic-glas, root: {tmp_path / 'data'}}}\n"
            f"backbones: [{{name: vit_tiny_patch16_224, pretrained: {path}}}]\nmethods: [{{name: cam}}]\n")
    recipe.write_text(text)
    with pytest.raises(RecipeError, match=r"backbones\[0\]\.normalize: 'vit_tiny_patch16_224' with a local weights file: "
                                          r"the file cannot say .*mean \[0.5, 0.5, 0.5\].*set normalize:"):
        load_recipe(recipe)
    assert load_recipe(recipe, ["backbones[0].normalize={mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}"]) \
        .backbones[0].normalization() == IMAGENET


def test_an_unreachable_hub_fails_at_once_with_the_real_cause(hub, monkeypatch):
    """Without HF_HUB_OFFLINE, a missing file and no network: one line naming the connection failure
    (huggingface_hub alone retries, then blames a missing config.json)."""
    from huggingface_hub import constants

    from wsolctl.backbones.weights import HubWeights, ensure_cached

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(InputError, match=r"'hf-hub:org/model' \(hub id org/model\): not in the Hugging Face cache .*"
                                         r"the hub \(http://127.0.0.1:9\) cannot be reached: \w+"):
        ensure_cached(HubWeights.of("hf-hub:org/model", weights=False))

"""train.feature_cache: frozen encoders' outputs computed once, stored in chunks next to the data,
heads trained on them; refused (validation) where it cannot give the same training."""
import json

import numpy as np
import pytest

from tests.conftest import TINY
from wsolctl.errors import RecipeError

DETERMINISTIC = "  augment: {crop: false, hflip: 0, vflip: 0, color_jitter: [0, 0, 0, 0]}\n"


def recipe_text(root, backbone="{name: vit_tiny_patch16_224, freeze: true}", methods=("cam", "gradcam"),
                cache=True, augment=DETERMINISTIC, epochs=2) -> str:
    text = TINY.format(root=root).replace("  - name: resnet18-wsol\n", f"  - {backbone}\n")
    text = text.replace("  - name: cam\n  - name: gradcam\n", "".join(f"  - name: {m}\n" for m in methods))
    text = text.replace("  epochs: 1\n", f"  epochs: {epochs}\n  feature_cache: {str(cache).lower()}\n" + augment)
    return text.replace("image_size: 48", "image_size: 32")


def load(tmp_path, **kwargs):
    from wsolctl.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(recipe_text(tmp_path / "data", **kwargs))
    return load_recipe(path)


def test_methods_that_alter_their_input_or_backbone_refuse_the_cache(tmp_path):
    for method, reason in (("has", "overrides augment"), ("cutmix", "overrides augment"),
                           ("adl", "overrides adapt_backbone"), ("tscam", "does not declare trains_on_features")):
        backbone = "{name: deit-tiny, freeze: true}" if method == "tscam" else "{name: resnet18-wsol, freeze: true}"
        with pytest.raises(RecipeError) as err:
            load(tmp_path, backbone=backbone, methods=("cam", method))
        (line,) = [ln for ln in str(err.value).splitlines() if "feature_cache" in ln]
        assert "methods[1].name" in line and reason in line, line
    with pytest.raises(RecipeError, match=r"backbones\[0\].freeze.*needs freeze: true"):
        load(tmp_path, backbone="{name: resnet18-wsol, freeze: 2}")
    assert load(tmp_path, methods=("cam", "gradcam", "wildcat", "deepmil")).train.feature_cache


def test_cache_off_by_default_keeps_run_ids():
    from wsolctl.engine.plan import numbers
    from wsolctl.recipe.training import Train

    assert "feature_cache" not in numbers(Train()) and "feature_copies" not in numbers(Train())
    assert numbers(Train(feature_cache=True))["feature_cache"] is True


@pytest.mark.slow
def test_cached_training_matches_uncached_and_stores_chunks_once(tmp_path):
    """Deterministic augment, one copy: the heads see exactly the encoder outputs uncached training
    computes, so losses and validation scores agree; the cache is built once and reused."""
    from wsolctl import pipeline

    histories = {}
    for cache in (False, True):
        recipe = load(tmp_path, cache=cache)
        out = pipeline.train(recipe, tmp_path / f"out-{cache}", quiet=True)
        (run_dir,) = (out / "runs").iterdir()
        histories[cache] = json.loads((run_dir / "epochs.json").read_text())
    for plain, cached in zip(*histories.values()):
        assert plain["epoch"] == cached["epoch"]
        for key in ("train_loss", "valcl_acc", "valpx_pxap"):
            assert np.isclose(plain[key], cached[key], rtol=1e-4, atol=1e-5, equal_nan=True), (key, plain, cached)
    (folder,) = (tmp_path / "data" / "features").iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    chunks = sorted((folder / "copy-00").glob("chunk-*.npy"))
    assert len(chunks) == -(-meta["count"] // meta["chunk"]) and meta["shape"] == [192, 2, 2]
    assert sum(len(np.load(c, mmap_mode="r")) for c in chunks) == meta["count"]
    valcl = [np.load(c) for c in sorted((folder / "valcl").glob("chunk-*.npy"))]  # valcl accuracy reads these
    assert sum(len(c) for c in valcl) == len(np.load(folder / "valcl" / "labels.npy")) > 0
    assert all(c.shape[1:] == tuple(meta["shape"]) for c in valcl)
    stamp = chunks[0].stat().st_mtime_ns
    pipeline.train(load(tmp_path, cache=True, epochs=3), tmp_path / "out-again", quiet=True)
    assert chunks[0].stat().st_mtime_ns == stamp  # reused, not recomputed


@pytest.mark.slow
def test_random_augment_uses_the_declared_number_of_copies(tmp_path):
    from wsolctl import pipeline

    recipe = load(tmp_path, augment="  feature_copies: 2\n")  # default augment: random crops, flips, jitter
    pipeline.train(recipe, tmp_path / "out", quiet=True)
    (folder,) = (tmp_path / "data" / "features").iterdir()
    copies = [np.concatenate([np.load(c) for c in sorted((folder / f"copy-{i:02d}").glob("*.npy"))]) for i in (0, 1)]
    assert copies[0].shape == copies[1].shape and not np.allclose(copies[0], copies[1])  # two different draws


def test_the_cache_folder_moves_with_the_recipe_or_the_environment(tmp_path, monkeypatch):
    """Fast: train.feature_cache_dir, else $WSOLCTL_FEATURE_CACHE, else <dataset root>/features; the
    folder is not part of the run id (the same numbers wherever they are stored)."""
    from types import SimpleNamespace

    from wsolctl.engine.features import CACHE_ENV, cache_root
    from wsolctl.engine.plan import numbers

    data = SimpleNamespace(root=tmp_path / "data")
    recipe = load(tmp_path)
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_root(recipe.train, data) == tmp_path / "data" / "features"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root(recipe.train, data) == tmp_path / "env"
    moved = recipe.train.model_copy(update={"feature_cache_dir": str(tmp_path / "mine")})
    assert cache_root(moved, data) == tmp_path / "mine"
    assert numbers(moved) == numbers(recipe.train)

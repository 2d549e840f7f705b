"""The fold-format reader/writer and the synthetic dataset plugins."""
import json

import numpy as np
import pytest
from PIL import Image

from wsolctl.data.folds import Sample, read_encoding, read_split, safe_join, write_encoding, write_split
from wsolctl.data.synthetic import SyntheticCamelyon, SyntheticGlaS
from wsolctl.errors import DataError, FoldFormatError


def test_round_trip_with_instances_and_empty_masks(tmp_path):
    samples = [Sample("img/a.png", 1, (10, 20), ("m/a0.png", "m/a1.png")), Sample("img/b.png", 0, (5, 6), ())]
    write_split(tmp_path, 0, "test", samples)
    assert read_split(tmp_path, 0, "test") == samples
    loc = (tmp_path / "fold-0/test/localization.txt").read_text().splitlines()
    assert loc == ["img/a.png,m/a0.png,", "img/a.png,m/a1.png,", "img/b.png,,"]  # empty path = all-negative


def test_reads_wsolevaluation_layout_without_sizes_or_ignore(tmp_path):
    split = tmp_path / "fold-2" / "valpx"
    split.mkdir(parents=True)
    (split / "image_ids.txt").write_text("x/1.bmp\nx/2.bmp\n")
    (split / "class_labels.txt").write_text("x/1.bmp,0\nx/2.bmp,1\n")
    (split / "localization.txt").write_text("x/1.bmp,\nx/2.bmp,x/2_anno.bmp\n")
    one, two = read_split(tmp_path, 2, "valpx")
    assert (one.masks, two.masks, two.label, two.size) == ((), ("x/2_anno.bmp",), 1, (0, 0))


def test_malformed_lines_name_file_and_line(tmp_path):
    split = tmp_path / "fold-0" / "train"
    split.mkdir(parents=True)
    (split / "image_ids.txt").write_text("a.png\n")
    (split / "class_labels.txt").write_text("a.png,notanint\n")
    with pytest.raises(FoldFormatError, match=r"class_labels.txt:1: expected integers"):
        read_split(tmp_path, 0, "train")
    (split / "class_labels.txt").write_text("b.png,1\n")
    with pytest.raises(FoldFormatError, match=r"no label for 'a.png'"):
        read_split(tmp_path, 0, "train")


def test_paths_cannot_leave_the_root(tmp_path):
    assert safe_join(tmp_path, "a/b.png", "x") == (tmp_path / "a/b.png").resolve()
    for bad in ("../secret.png", "/etc/passwd", "a/../../x"):
        with pytest.raises(FoldFormatError, match="leaves the dataset root"):
            safe_join(tmp_path, bad, "x")


def test_encoding(tmp_path):
    write_encoding(tmp_path, {"benign": 0, "malignant": 1})
    assert read_encoding(tmp_path) == {"benign": 0, "malignant": 1}
    (tmp_path / "encoding.yaml").write_text("{a: 0, b: 2}")
    with pytest.raises(FoldFormatError):
        read_encoding(tmp_path)


@pytest.mark.parametrize("plugin", [SyntheticGlaS, SyntheticCamelyon])
def test_synthetic_dataset_follows_the_protocol(tmp_path, plugin):
    params = plugin.Params(size=48, train_per_class=10, test_per_class=4, folds=3)
    dataset = plugin(params)
    dataset.name = plugin.__name__
    root = tmp_path / "ds"
    dataset.prepare(root, 0)
    test = read_split(root, 0, "test")
    assert len(test) == 8 and sorted(s.label for s in test) == [0] * 4 + [1] * 4
    for fold in range(3):
        train, valcl, valpx = (read_split(root, fold, s) for s in ("train", "valcl", "valpx"))
        assert {s.image for s in train}.isdisjoint(s.image for s in valcl)
        assert len(train) + len(valcl) == 20 and [s.label for s in valcl].count(0) == 2  # 80/20 per class
        assert {s.image for s in valpx} <= {s.image for s in valcl}
        assert read_split(root, fold, "test") == test
    splits = [tuple(s.image for s in read_split(root, f, "valcl")) for f in range(3)]
    assert len(set(splits)) > 1  # folds differ
    image = np.asarray(Image.open(root / test[-1].image))
    assert image.shape == (48, 48, 3)
    if plugin is SyntheticCamelyon:
        assert all(not s.masks for s in test if s.label == 0) and all(s.masks for s in test if s.label == 1)
    stamp = json.loads((root / "wsolctl-dataset.json").read_text())
    assert stamp["params"]["size"] == 48
    before = (root / test[0].image).stat().st_mtime_ns
    dataset.prepare(root, 1)  # reused, not regenerated
    assert (root / test[0].image).stat().st_mtime_ns == before
    with pytest.raises(DataError, match="fold 3 does not exist"):
        dataset.prepare(root, 3)
    other = plugin(plugin.Params(size=48, train_per_class=10, test_per_class=4, folds=3, seed=1))
    other.name = plugin.__name__
    with pytest.raises(DataError, match="already holds a different generated dataset"):
        other.prepare(root, 0)


def test_generation_is_deterministic(tmp_path):
    params = SyntheticGlaS.Params(size=40, train_per_class=3, test_per_class=1, folds=1, valpx_per_class=1)
    for name in ("a", "b"):
        ds = SyntheticGlaS(params)
        ds.name = "synthetic-glas"
        ds.prepare(tmp_path / name, 0)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_training_augmentation_keeps_masks_aligned(tmp_path):
    import torch

    from wsolctl.data.images import FoldImages, unnormalize
    from wsolctl.recipe.base import IMAGENET
    from wsolctl.recipe.training import Augment

    (tmp_path / "img").mkdir()
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[5:20, 8:30] = 255  # white where the mask is
    mask = np.zeros((40, 40), np.uint8)
    mask[5:20, 8:30] = 255
    Image.fromarray(rgb).save(tmp_path / "img/a.png")
    Image.fromarray(mask).save(tmp_path / "img/a_mask.png")
    sample = Sample("img/a.png", 1, (40, 40), ("img/a_mask.png",))
    dataset = FoldImages(tmp_path, [sample], 32, augment=Augment(color_jitter=(0, 0, 0, 0)), with_masks=True)
    for seed in range(5):
        torch.manual_seed(seed)
        image, label, m = dataset[0]
        white = unnormalize(image[None], IMAGENET)[0, 0] > 0.5
        assert m.dtype == torch.bool and m.shape == (32, 32)
        assert (white == m).float().mean() > 0.93  # same geometry; only resampled edges may differ
        assert (white == m.flip(0)).float().mean() < 0.85  # a misaligned flip would be caught

"""The survey's WSOL backbones: output stride 8, expected channels, CAM layer present, local weights."""
import pathlib
import pickle

import pytest
import torch

from wsolctl import plugins


@pytest.mark.parametrize("name,channels,side", [
    ("resnet18-wsol", 512, 8),
    ("resnet50-wsol", 2048, 8),
    ("vgg16-wsol", 1024, 8),
    ("inceptionv3-wsol", 1024, 8),
])
def test_wsol_backbones(name, channels, side):
    backbone = plugins.load("backbones", name)()
    module = backbone.build(False).eval()
    with torch.no_grad():
        features = module(torch.zeros(1, 3, 64, 64))
    assert module.out_channels == channels
    assert tuple(features.shape) == (1, channels, side, side)
    module.get_submodule(backbone.cam_layer)
    assert all(any(n.startswith(p) for n, _ in module.named_parameters()) for p in backbone.classifier_prefixes)


def test_resnet50_wsol_gives_28x28_at_224():
    module = plugins.load("backbones", "resnet50-wsol")().build(False).eval()
    with torch.no_grad():
        assert module(torch.zeros(1, 3, 224, 224)).shape[-2:] == (28, 28)  # the survey's CAM size


def test_inceptionv3_wsol_feature_sizes_at_224():
    """Issue 27: the reference's paddings give 112/56/28/28/28 px at the five stages (timm's valid
    paddings gave 109/54/25/25/25)."""
    backbone = plugins.load("backbones", "inceptionv3-wsol")()
    module = backbone.build(False).eval()
    sizes = []
    for stage in backbone.info().stages:
        module.get_submodule(stage.module).register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[-2:])))
    with torch.no_grad():
        module(torch.zeros(1, 3, 224, 224))
    assert sizes == [(112, 112), (56, 56), (28, 28), (28, 28), (28, 28)]
    assert [224 // s.reduction for s in backbone.info().stages] == [112, 56, 28, 28, 28]


def test_local_weights_file_is_loaded(tmp_path):
    import timm

    reference = timm.create_model("resnet18", pretrained=False, num_classes=0)
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "w.pth")
    module = plugins.load("backbones", "resnet18-wsol")().build(str(tmp_path / "w.pth"))
    assert torch.equal(module.conv1.weight, reference.conv1.weight)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    # refused by torch's weights-only unpickler (never the full pickle loader)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        plugins.load("backbones", "resnet18-wsol")().build(str(tmp_path / "bad.pth"))
    # a checkpoint that pickles an arbitrary object: the full unpickler would load it, this one must not
    torch.save({"state_dict": reference.state_dict(), "note": pathlib.PurePosixPath("x")}, tmp_path / "unsafe.pth")
    with pytest.raises(pickle.UnpicklingError, match="(?s)Weights only load failed.*Unsupported global.*PurePosixPath"):
        plugins.load("backbones", "resnet18-wsol")().build(str(tmp_path / "unsafe.pth"))
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no parameter matches"):
        plugins.load("backbones", "resnet18-wsol")().build(str(tmp_path / "other.pth"))

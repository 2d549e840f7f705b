"""Methods that adapt a backbone (ADL, SPG, U-Net, NEGEV) find everything from its declaration
(BackboneInfo: stages, layout), never from its modules' names: each is built on the WSOL backbones
with every child renamed, and must adapt the same modules and compute the same outputs."""
import copy
from collections import OrderedDict
from dataclasses import replace

import pytest
import torch
from torch import nn

from tests.conftest import backbone_info
from wsolctl import plugins
from wsolctl.backbones.base import Stage
from wsolctl.engine.model import WSOLModel

PREFIX = "odd_"


def renamed(module: nn.Module) -> nn.Module:
    """The same modules, every ``nn.Sequential`` child at every depth renamed ``odd_<name>``."""
    if not isinstance(module, nn.Sequential):
        return module
    out = nn.Sequential(OrderedDict((PREFIX + name, renamed(child)) for name, child in module.named_children()))
    if hasattr(module, "out_channels"):
        out.out_channels = module.out_channels
    return out


def renamed_path(path: str) -> str:
    return ".".join(PREFIX + part for part in path.split(".")) if path else path


def renamed_info(info):
    stages = tuple(Stage(renamed_path(s.module), s.channels, s.reduction) for s in info.stages)
    return replace(info, stages=stages, cam_layer=renamed_path(info.cam_layer))


def build(method_name: str, module: nn.Module, info) -> WSOLModel:
    torch.manual_seed(0)
    return WSOLModel(module, plugins.load("methods", method_name)(), 2, info)


def adl_positions(model) -> list[str]:
    """The modules each ADL layer follows."""
    from wsolctl.backbones.taps import sibling

    return [sibling(model.backbone, n, -1) for n, m in model.backbone.named_modules() if type(m).__name__ == "ADLLayer"]


@pytest.mark.parametrize("backbone", ["resnet18-wsol", pytest.param("vgg16-wsol", marks=pytest.mark.slow),
                                      pytest.param("inceptionv3-wsol", marks=pytest.mark.slow)])
def test_methods_adapt_a_backbone_with_unusual_child_names(backbone):
    torch.manual_seed(0)
    info = backbone_info(backbone)
    plain = plugins.load("backbones", backbone)().build(False).eval()
    odd_info = renamed_info(info)
    images = torch.rand(1, 3, 64, 64)
    for method in ("adl", "spg", "unet", "negev"):
        ours = build(method, copy.deepcopy(plain), info).eval()
        odd = build(method, renamed(copy.deepcopy(plain)), odd_info).eval()
        assert all(name.startswith((PREFIX, "adl")) for name, _ in odd.backbone.named_children())
        if method == "adl":
            assert adl_positions(odd) == [renamed_path(p) for p in adl_positions(ours)]
            assert len(adl_positions(ours)) == 3
        if method == "spg":
            assert odd.backbone.spg_taps == tuple(renamed_path(t) for t in ours.backbone.spg_taps)
            assert [m.weight.shape for m in odd.head.modules() if isinstance(m, nn.Conv2d)] == \
                [m.weight.shape for m in ours.head.modules() if isinstance(m, nn.Conv2d)]
        if method in ("unet", "negev"):
            assert odd.head.decoder.stages == tuple(renamed_path(s) for s in ours.head.decoder.stages)
        odd.load_state_dict({renamed_key(k, odd): v for k, v in ours.state_dict().items()})
        labels = torch.tensor([1])
        with torch.no_grad():
            torch.testing.assert_close(odd.method.cams(odd, images, labels), ours.method.cams(ours, images, labels))


def renamed_key(key: str, model: nn.Module) -> str:
    """A state-dict key of the plainly named model, in the renamed one (Sequential children renamed)."""
    parts, out, module = key.split("."), [], model
    for part in parts:
        candidate = PREFIX + part if isinstance(module, nn.Sequential) and part not in module._modules else part
        out.append(candidate)
        module = module._modules.get(candidate, module) if hasattr(module, "_modules") else module
    return ".".join(out)


def test_spg_and_adl_positions_on_the_wsol_backbones():
    """The reference's positions, found from the declarations."""
    from wsolctl.methods.layout import wsol_taps

    expected = {
        "resnet50-wsol": (("layer3.0", "layer4.0", "layer4.2"), ("layer3.0", "layer3"), None),
        "vgg16-wsol": (("features.16", "features.22", "features.28"), ("features.22", "features.28"), 512),
        "inceptionv3-wsol": (("Mixed_5d", "Mixed_6e", "SPG_A3_2b"), ("Mixed_5d", "Mixed_6d"), 512),
    }
    for name, (adl, spg, width) in expected.items():
        module = plugins.load("backbones", name)().build(False)
        taps = wsol_taps(module, backbone_info(name))
        assert (taps.adl, taps.spg, taps.spg_width) == (adl, spg, width), name


def test_a_one_argument_adapt_backbone_still_works():
    """Third-party methods written before ``adapt_backbone`` received the declaration."""
    from wsolctl.methods.cam import CAM

    class OldStyle(CAM):
        def adapt_backbone(self, backbone):
            backbone.seen = True
            return backbone

    module = plugins.load("backbones", "resnet18-wsol")().build(False)
    assert WSOLModel(module, OldStyle(), 2, backbone_info("resnet18-wsol")).backbone.seen


def test_adl_and_spg_support_what_declares_their_positions():
    """Support follows the declaration (``BackboneInfo.wsol_taps``), not a layout's name."""
    from dataclasses import replace

    info = backbone_info("resnet18-wsol")
    for name in ("adl", "spg"):
        method = plugins.load("methods", name)()
        assert method.unsupported(info) is None
        assert "declares no ADL / SPG positions" in method.unsupported(replace(info, wsol_taps=None))
        assert method.unsupported(replace(info, layout=None)) is None  # the declared function is what counts

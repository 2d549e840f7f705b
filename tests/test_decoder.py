"""The survey's U-Net decoder (reference dlib/unet/decoder.py + model.py) built from what each backbone
declares: block count and each block's input / skip / output channels against the reference's layouts
(issue 16's table), the centre block on VGG only, nearest ×2 + bilinear resize, the 3×3 head, the
reference initialisation, and the forward contract PixelCAM and NEGEV / U-Net rely on."""
import pytest
import torch
from torch import nn

from tests.conftest import backbone_info, build_model
from wsolctl import plugins
from wsolctl.backbones.base import BackboneInfo, Stage
from wsolctl.methods.decoder import UNetDecoder, build_decoder, decoder_stages, stage_features

# (in + skip → out) per block, as the reference builds them (encoder out_channels of its
# resnet50 / vgg16 (WSOL16, depth 3) / inceptionv3 encoders, decoder_channels (256, 128, 64, 32, 16)
# or (256, 128, 64) for VGG).
REFERENCE = {
    "resnet50-wsol": [(2048, 1024, 256), (256, 512, 128), (128, 256, 64), (64, 64, 32), (32, 0, 16)],
    "vgg16-wsol": [(1024, 256, 256), (256, 128, 128), (128, 0, 64)],
    "inceptionv3-wsol": [(1024, 768, 256), (256, 288, 128), (128, 80, 64), (64, 64, 32), (32, 0, 16)],
}


def blocks(decoder: UNetDecoder) -> list[tuple[int, int, int]]:
    return [(b.in_channels, b.skip_channels, b.out_channels) for b in decoder.blocks]


@pytest.mark.parametrize("backbone", sorted(REFERENCE))
def test_decoder_blocks_match_the_reference(backbone):
    decoder = build_decoder(backbone_info(backbone))
    assert blocks(decoder) == REFERENCE[backbone]
    assert isinstance(decoder.centre, nn.Sequential) == (backbone == "vgg16-wsol")  # centre: VGG only
    assert decoder.head.kernel_size == (3, 3) and decoder.head.in_channels == REFERENCE[backbone][-1][2]
    assert decoder.blocks[0].conv1[0].in_channels == sum(REFERENCE[backbone][0][:2])


@pytest.mark.parametrize("method", ["unet", "negev"])
@pytest.mark.parametrize("backbone", sorted(REFERENCE))
def test_unet_and_negev_build_the_reference_decoder(method, backbone):
    """The methods as the engine builds them on each WSOL backbone, and a forward at the input's size."""
    cls = plugins.load("methods", method)
    model = build_model(cls(), backbone).eval()
    assert blocks(model.head.decoder) == REFERENCE[backbone]
    assert model.head.decoder.head.out_channels == (2 if method == "negev" else 1)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        features, _ = stage_features(model.backbone, model.head.decoder.stages, images)
        assert [f.shape[1] for f in features] == [s.channels for s in decoder_stages(backbone_info(backbone))]
        assert model.head.decoder(features, images).shape[-2:] == (64, 64)


def test_stages_used_are_the_declared_ones_below_the_input_resolution():
    assert [s.module for s in decoder_stages(backbone_info("resnet18-wsol"))] == \
        ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert [s.module for s in decoder_stages(backbone_info("vgg16-wsol"))] == ["features.8", "features.15", "relu6"]
    vit = BackboneInfo("tokens", (Stage("blocks.0", 192, 16), Stage("blocks.1", 192, 16)), "blocks.1.norm1", 1)
    assert decoder_stages(vit) == (Stage("", 192, 16),)  # a token model: its output map, no skips


def test_one_stage_backbone_gets_a_decoder_without_skips():
    info = BackboneInfo("cnn", (Stage("", 8, 4),), cam_layer="")
    decoder = build_decoder(info, widths=(6, 4))
    assert blocks(decoder) == [(8, 0, 6)]
    out = decoder([torch.rand(2, 8, 4, 4)], torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 1, 16, 16)  # ×2 then resized to the input


def test_block_upsamples_nearest_then_resizes_bilinearly_to_the_skip():
    """A block whose convolutions pass their input through shows the resize: nearest ×2 of a 3×3 map
    is 6×6, then a bilinear (align_corners=True) resize to the 5×5 skip."""
    torch.manual_seed(0)
    info = BackboneInfo("cnn", (Stage("a", 1, 2), Stage("b", 1, 4)), cam_layer="b")
    block = build_decoder(info, widths=(2, 2)).blocks[0]
    seen = {}
    block.conv1.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0]))
    x, skip = torch.rand(1, 1, 3, 3), torch.rand(1, 1, 5, 5)
    block(x, skip)
    up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    expected = torch.nn.functional.interpolate(up, size=(5, 5), mode="bilinear", align_corners=True)
    torch.testing.assert_close(seen["x"], torch.cat([expected, skip], 1))


def test_reference_initialisation():
    torch.manual_seed(0)
    decoder = build_decoder(backbone_info("resnet18-wsol"))
    bn = [m for m in decoder.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bn)
    assert torch.all(decoder.head.bias == 0)
    conv = decoder.blocks[0].conv1[0]
    bound = (6 / conv.weight[0].numel()) ** 0.5  # Kaiming-uniform, fan-in, ReLU gain
    assert conv.weight.abs().max() <= bound and conv.weight.abs().max() > 0.9 * bound
    head = decoder.head.weight
    xavier = (6 / (head.shape[0] * 9 + head.shape[1] * 9)) ** 0.5
    assert head.abs().max() <= xavier and head.abs().max() > 0.9 * xavier


def test_stage_features_collects_declared_modules_in_one_forward():
    backbone = plugins.load("backbones", "resnet18-wsol")().build(False).eval()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        features, out = stage_features(backbone, ["act1", "layer1", "layer4"], images)
        assert [f.shape[1:] for f in features] == [(64, 16, 16), (64, 8, 8), (512, 4, 4)]
        torch.testing.assert_close(out, backbone(images))
    assert not backbone.layer1._forward_hooks  # the hooks are removed


def test_decoder_rejects_a_wrong_number_of_features():
    decoder = build_decoder(backbone_info("resnet18-wsol"))
    with pytest.raises(ValueError, match="takes 5 stage features, got 1"):
        decoder([torch.rand(1, 512, 4, 4)], torch.rand(1, 3, 32, 32))

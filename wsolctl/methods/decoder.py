"""The survey's U-Net decoder (reference ``dlib/unet/decoder.py`` and ``model.py``), built on any
backbone from the stages it declares (:class:`wsolctl.backbones.base.BackboneInfo`). NEGEV, the U-Net
upper bound and other decoder methods share it.

Layout, as the reference builds it from its encoder's stages:

- The stages used are the declared ones below the input resolution (reduction > 1; the reference
  drops its first, full-resolution feature). The deepest is the head; each other is a skip. A token
  model (ViT) is decoded from its output map alone; a backbone that declares one stage gets a
  decoder without skips.
- One block per stage used, deepest first: nearest ×2 upsampling, then (when the block has a skip)
  a bilinear resize (``align_corners=True``) to the skip's size and concatenation, then two 3×3
  conv-BN-ReLU. The last block has no skip. Widths: ``widths[i]`` for block i (the reference's
  (256, 128, 64, 32, 16); VGG16's three blocks take the first three), the last width repeating
  if there are more blocks.
- A centre block (two 3×3 conv-BN-ReLU at the head's width) ahead of the blocks on the VGG layout
  (the reference adds it to VGG encoders only).
- Head: a 3×3 convolution to ``out_channels`` logits.
- Initialisation as the reference: decoder convolutions Kaiming-uniform (fan-in, ReLU), BN weight 1
  and bias 0; head Xavier-uniform, bias 0.

Deviations: when the decoder's output is not at the input's size (a backbone whose valid paddings
shrink the maps, e.g. a timm CNN with valid stem paddings, or a one-stage / token backbone), the logits are
resized bilinearly (``align_corners=True``) to the input; on the survey's backbones with their
reference paddings this is the identity. ``input_skip`` (off by default) concatenates the raw image
in the last block, which the reference never does.

Forward contract (:meth:`UNetDecoder.forward`): ``features`` are the outputs of ``decoder.stages``
(the backbone modules named there, in forward order; :func:`stage_features` collects them in one
forward), ``images`` the input batch; it returns ``(N, out_channels, H, W)`` logits at the images'
size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from wsolctl._lazy import F, nn, torch

if TYPE_CHECKING:
    from torch import Tensor

    from wsolctl.backbones.base import BackboneInfo, Stage

WIDTHS = (256, 128, 64, 32, 16)  # the reference's decoder_channels (VGG16 uses the first three)
CENTRE_LAYOUTS = ("vgg",)  # the reference adds a centre block to VGG encoders only


def decoder_stages(info: "BackboneInfo") -> tuple["Stage", ...]:
    """The declared stages the decoder uses, in forward order (see the module's docstring)."""
    from wsolctl.backbones.base import Stage

    if info.kind != "cnn":  # token blocks are no maps: the backbone's output map only
        return (Stage("", info.out_channels, info.reduction),)
    used = tuple(s for s in info.stages if s.reduction > 1)
    return used or info.stages[-1:]


def _conv_bn_relu(cin: int, cout: int) -> "nn.Sequential":
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Reference ``DecoderBlock``: nearest ×2, bilinear resize to the skip, concat, two conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.in_channels, self.skip_channels, self.out_channels = in_channels, skip_channels, out_channels
        self.conv1 = _conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = _conv_bn_relu(out_channels, out_channels)

    def forward(self, x: "Tensor", skip: Optional["Tensor"] = None) -> "Tensor":
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        if skip is not None:
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """See the module's docstring. ``stages``: the backbone modules whose outputs it takes."""

    def __init__(self, stages: Sequence["Stage"], widths: Sequence[int] = WIDTHS, out_channels: int = 1,
                 centre: bool = False, input_skip: bool = False):
        super().__init__()
        self.stages = tuple(s.module for s in stages)
        self.input_skip = input_skip
        deepest = stages[-1].channels
        skips = [s.channels for s in reversed(stages[:-1])] + [3 if input_skip else 0]
        self.centre = nn.Sequential(_conv_bn_relu(deepest, deepest), _conv_bn_relu(deepest, deepest)) \
            if centre else nn.Identity()
        blocks, cin = [], deepest
        for i, skip in enumerate(skips):
            blocks.append(DecoderBlock(cin, skip, widths[min(i, len(widths) - 1)]))
            cin = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(cin, out_channels, kernel_size=3, padding=1)
        self._initialise()

    def _initialise(self) -> None:
        for m in [*self.centre.modules(), *self.blocks.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: Sequence["Tensor"], images: "Tensor") -> "Tensor":
        """``features``: the outputs of ``self.stages`` in forward order; logits at the images' size."""
        if len(features) != len(self.stages):
            raise ValueError(f"the decoder takes {len(self.stages)} stage features, got {len(features)}")
        *skips, deepest = features
        skips = [*reversed(skips), images if self.input_skip else None]
        x = self.centre(deepest)
        for block, skip in zip(self.blocks, skips):
            if skip is images:  # the raw-image skip (deviation): the input's own size
                x = F.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=True)
            x = block(x, skip)
        logits = self.head(x)
        if logits.shape[-2:] != images.shape[-2:]:
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=True)
        return logits


def build_decoder(info: "BackboneInfo", widths: Sequence[int] = WIDTHS, out_channels: int = 1,
                  input_skip: bool = False) -> UNetDecoder:
    """The reference U-Net decoder for a backbone that declares ``info`` (forward contract: see
    :meth:`UNetDecoder.forward`; collect its ``features`` with :func:`stage_features`)."""
    return UNetDecoder(decoder_stages(info), widths, out_channels, centre=info.layout in CENTRE_LAYOUTS,
                       input_skip=input_skip)


def stage_features(backbone: "nn.Module", stages: Sequence[str], images: "Tensor") -> tuple[list["Tensor"], "Tensor"]:
    """Run ``backbone`` once on ``images``: (the outputs of the modules named in ``stages``, in that
    order; the backbone's output). ``""`` names the backbone itself."""
    seen: dict[str, "Tensor"] = {}
    hooks = [backbone.get_submodule(name).register_forward_hook(
        lambda _m, _a, out, key=name: seen.__setitem__(key, out)) for name in dict.fromkeys(stages)]
    try:
        output = backbone(images)
    finally:
        for hook in hooks:
            hook.remove()
    return [seen[name] for name in stages], output

"""U-Net (Ronneberger et al., 2015): the survey's fully supervised upper bound, trained on pixel masks.

- Encoder: the recipe's backbone, run stage by stage. For each distinct spatial resolution below the
  input's, the last stage at that resolution is a skip connection; the deepest output is the
  bottleneck. (A ResNet-WSOL gives skips at 1/2 (``act1``) and 1/4 (``layer1``) and the bottleneck at
  1/8; a DeiT gives only its token map, so its decoder has no feature skips.)
- Decoder (randomly initialised), as the reference ``UnetDecoder``: per skip, bilinear upsampling to
  the skip's size, concatenation, two 3×3 conv-BN-ReLU; then a last block that upsamples to the input
  resolution **without** a skip (the reference drops the full-resolution skip and never sees the raw
  image). Widths ``decoder_channels`` from the deepest level (NEGEV's U-Net: 256, 128, 64, 32, 16;
  the last width repeats if there are more levels); a 1×1 conv to one foreground logit.
  Deviation, off by default: ``input_skip: true`` concatenates the raw input image in that last
  block (this tool's decoder before the fix: a raw-colour shortcut that lets an untrained decoder
  score well on colour-separable data).
- Classification: GAP of the bottleneck → linear, trained with cross-entropy (weight ``cls_weight``),
  so that accuracy and B-CL selection are meaningful.
- Loss: BCE(foreground logit, mask) + ``dice_weight``·soft Dice + ``cls_weight``·CE.
- CAM: the foreground probability (sigmoid), the same whatever the target class; scored raw
  (``map_kind = "probability"``), not min-max normalised per image.

The skip layout is found in ``adapt_backbone`` with one dry run on a 64×64 zero image (eval mode,
no gradient) and stored on the head, so ``forward``/``cams`` of any instance can use it.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import F, nn, torch
from wsolctl.methods.base import Method, Output

PROBE_SIZE = 64


class UNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decoder_channels: list[int] = Field([256, 128, 64, 32, 16], min_length=1,
                                        description="decoder widths from the deepest level up")
    dice_weight: float = Field(0.0, ge=0, description="weight of the soft Dice loss added to the BCE")
    cls_weight: float = Field(1.0, ge=0, description="weight of the classification cross-entropy")
    input_skip: bool = Field(False, description="deviation from the reference decoder: concatenate the raw "
                                                "input image as a full-resolution skip in the last block")


def stages(backbone) -> list:
    """(name, module) stages run one after the other: the children of an ``nn.Sequential`` (the WSOL
    backbones); any other backbone (a timm model) is a single stage, its output map."""
    return list(backbone.named_children()) if isinstance(backbone, nn.Sequential) else [("features", backbone)]


def skip_layout(backbone) -> tuple[list[tuple[str, int]], str]:
    """Run ``backbone`` stage by stage on a probe image: ([(skip stage, channels)] deepest first,
    bottleneck stage). Stages whose output is not a 4-D map (e.g. ViT tokens) are ignored, and so
    are skips at the input's own resolution (the reference decoder drops that first skip)."""
    was_training = backbone.training
    backbone.eval()
    try:
        last_at_size: dict[tuple[int, int], tuple[str, int]] = {}
        x = torch.zeros(1, 3, PROBE_SIZE, PROBE_SIZE, device=next(backbone.parameters()).device)
        with torch.no_grad():
            for name, stage in stages(backbone):
                x = stage(x)
                if x.dim() == 4:
                    last_at_size.pop(tuple(x.shape[-2:]), None)  # keep insertion order = depth order
                    last_at_size[tuple(x.shape[-2:])] = (name, x.shape[1])
    finally:
        backbone.train(was_training)
    levels = list(last_at_size.values())
    if not levels:
        raise ValueError("U-Net: the backbone returns no spatial feature map")
    *skips, (bottleneck, _) = levels
    full = (PROBE_SIZE, PROBE_SIZE)
    return [level for size, level in zip(last_at_size, skips) if size != full][::-1], bottleneck


def _conv_block(cin: int, cout: int):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def decoder_head(in_channels: int, num_classes: int, skips: list[tuple[str, int]], widths: list[int],
                 out_channels: int = 1, input_skip: bool = False):
    """A classifier on the deepest features plus a U-Net decoder whose ``decode`` returns
    (N, out_channels, H, W) logits at the images' resolution."""
    class UNetHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.skip_names = [name for name, _ in skips]
            self.input_skip = input_skip
            self.classifier = nn.Linear(in_channels, num_classes)
            channels = [c for _, c in skips] + [3 if input_skip else 0]  # last block: the image level
            blocks, cin = [], in_channels
            for i, skip_channels in enumerate(channels):
                width = widths[min(i, len(widths) - 1)]
                blocks.append(_conv_block(cin + skip_channels, width))
                cin = width
            self.decoder = nn.ModuleList(blocks)
            self.out = nn.Conv2d(cin, out_channels, kernel_size=1)

        def decode(self, bottom, skip_maps, images):
            """``skip_maps`` deepest first; ``images`` sets the output size (and is the last
            block's skip only with ``input_skip``)."""
            x = bottom
            for block, skip in zip(self.decoder, [*skip_maps, images]):
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
                concat = skip is not images or self.input_skip
                x = block(torch.cat([x, skip], dim=1) if concat else x)
            return self.out(x)

    return UNetHead()


class UNet(Method):
    survey_rank = 1
    in_survey = True
    kind = "fully-supervised"
    Params = UNetParams
    needs_masks = True
    map_kind = "probability"

    def __init__(self, params=None):
        super().__init__(params)
        self._skips: list[tuple[str, int]] = []

    def adapt_backbone(self, backbone):
        self._skips, _ = skip_layout(backbone)
        return backbone

    def build_head(self, in_channels: int, num_classes: int):
        return decoder_head(in_channels, num_classes, self._skips, self.params.decoder_channels,
                            input_skip=self.params.input_skip)

    def _run(self, model, images, segment: bool):
        head, features, x = model.head, {}, images
        for name, stage in stages(model.backbone):
            x = stage(x)
            if name in head.skip_names:
                features[name] = x
        logits = head.classifier(x.mean(dim=(2, 3)))
        seg = head.decode(x, [features[n] for n in head.skip_names], images)[:, 0] if segment else None
        return logits, seg

    def forward(self, model, images, labels=None) -> Output:
        logits, seg = self._run(model, images, segment=labels is not None or model.training)
        return Output(logits=logits, extras={} if seg is None else {"seg_logits": seg})

    def loss_terms(self, output: Output, batch) -> dict:
        if batch.masks is None:
            raise ValueError("U-Net is trained on pixel masks: the batch has none")
        seg = output.extras["seg_logits"].float()  # fp32 under AMP (the Dice sums)
        target = batch.masks.to(seg.dtype)
        terms = {"bce": F.binary_cross_entropy_with_logits(seg, target),
                 "ce": F.cross_entropy(output.logits, batch.labels)}
        prob = torch.sigmoid(seg).flatten(1)
        flat = target.flatten(1)
        terms["dice"] = (1 - (2 * (prob * flat).sum(1) + 1) / (prob.sum(1) + flat.sum(1) + 1)).mean()
        return terms

    def loss(self, output: Output, batch):
        t = self.loss_terms(output, batch)
        return t["bce"] + self.params.dice_weight * t["dice"] + self.params.cls_weight * t["ce"]

    def cams(self, model, images, targets):
        return torch.sigmoid(self._run(model, images, segment=True)[1])

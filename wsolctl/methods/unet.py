"""U-Net (Ronneberger et al., 2015): the survey's fully supervised upper bound, trained on pixel masks.

- Encoder: the recipe's backbone; decoder: the survey's reference U-Net decoder on the stages the
  backbone declares (:mod:`wsolctl.methods.decoder`: one block per stage below the input
  resolution, skips from every stage but the deepest, nearest ×2 + bilinear resize, a centre block on
  VGG, 3×3 head to one foreground logit, the reference initialisation). ``decoder_channels``: the
  blocks' widths (the reference's 256, 128, 64, 32, 16; VGG16's three blocks take the first three).
  Deviation, off by default: ``input_skip: true`` concatenates the raw input image in the last
  block (a raw-colour shortcut that lets an untrained decoder score well on colour-separable data).
- Classification (an extension: the survey's U-Net is a 2-class segmentation network with no
  classifier): GAP of the backbone's output → linear (Xavier-initialised like the reference's
  heads), trained with cross-entropy (weight ``cls_weight``), so that accuracy is reported.
  ``classifier: joint`` (default) sends that cross-entropy through the shared encoder, which then
  learns from the labels as well as the masks; ``classifier: probe`` trains the linear layer on the
  detached encoder output, so the encoder learns from the segmentation loss alone, as the
  reference's (the survey recipes, ``recipes/paper/*`` and ``recipes/bottom-up.yaml``, use it).
- Optimiser: every parameter at ``train.lr`` (the reference's segmentation task; no classifier-side
  ratio).
- Loss: BCE(foreground logit, mask) + ``dice_weight``·soft Dice + ``cls_weight``·CE.
- CAM: the foreground probability (sigmoid), the same whatever the target class; scored raw
  (``map_kind = "probability"``), not min-max normalised per image.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import F, nn, torch
from wsolctl.methods.base import Method, Output
from wsolctl.methods.decoder import WIDTHS, build_decoder, stage_features
from wsolctl.recipe.base import NEW_DEFAULT

if TYPE_CHECKING:
    from wsolctl.backbones.base import BackboneInfo


class UNetParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decoder_channels: list[int] = Field(list(WIDTHS), min_length=1,
                                        description="decoder block widths from the deepest level up")
    dice_weight: float = Field(0.0, ge=0, description="weight of the soft Dice loss added to the BCE")
    cls_weight: float = Field(1.0, ge=0, description="weight of the classification cross-entropy")
    classifier: Literal["joint", "probe"] = Field(
        "joint", json_schema_extra=NEW_DEFAULT,
        description="joint: the cross-entropy trains the encoder too; probe: only the linear classifier, on "
                    "the detached encoder output (the encoder learns from the masks alone, as the survey's U-Net)")
    input_skip: bool = Field(False, description="deviation from the reference decoder: concatenate the raw "
                                                "input image as a full-resolution skip in the last block")


def decoder_head(info: "BackboneInfo", in_channels: int, num_classes: int, widths, out_channels: int = 1,
                 input_skip: bool = False) -> "nn.Module":
    """A linear classifier on the backbone's pooled output (``classifier``) and the reference decoder
    on its declared stages (``decoder``)."""
    head = nn.Module()
    head.classifier = nn.Linear(in_channels, num_classes)
    nn.init.xavier_uniform_(head.classifier.weight)
    nn.init.zeros_(head.classifier.bias)
    head.decoder = build_decoder(info, widths, out_channels, input_skip)
    return head


def encode(model, images):
    """(the decoder's stage features, the backbone's output) in one backbone forward."""
    return stage_features(model.backbone, model.head.decoder.stages, images)


class UNet(Method):
    survey_rank = 1
    in_survey = True
    kind = "fully-supervised"
    Params = UNetParams
    needs_masks = True
    map_kind = "probability"

    single_lr = True  # the reference trains its segmentation models at one lr
    survey_selection = ("b-loc",)  # the survey selects it by B-LOC only; B-CL is an extension here

    def adapt_backbone(self, backbone, info):
        self._info = info  # build_head's decoder is laid out on the declared stages
        return backbone

    def build_head(self, in_channels: int, num_classes: int):
        return decoder_head(self._info, in_channels, num_classes, self.params.decoder_channels,
                            input_skip=self.params.input_skip)

    def _run(self, model, images, segment: bool):
        features, x = encode(model, images)
        pooled = x.mean(dim=(2, 3))
        logits = model.head.classifier(pooled.detach() if self.params.classifier == "probe" else pooled)
        seg = model.head.decoder(features, images)[:, 0] if segment else None
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

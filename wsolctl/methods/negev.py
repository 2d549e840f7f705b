"""NEGEV (Belharbi et al., "Negative evidence for weakly supervised object localization in
histology images", MIDL 2022).

- Prerequisite: a CAM classifier (``cam``: backbone + GAP + linear) trained first on the same data,
  backbone and settings; its ``b-loc`` checkpoint is loaded into this model and **frozen**
  (no gradients, kept in eval mode during training so its BatchNorm statistics do not drift).
- The frozen classifier gives (a) the classification logits (accuracy = CAM's) and (b) the CAM of
  the ground-truth class, from which pixel seeds are sampled at every training step.
- Trainable part: the reference U-Net decoder (:mod:`wsolctl.methods.decoder`, shared with the
  U-Net) on the frozen encoder's declared stages (no raw-image skip unless ``input_skip``),
  producing a 2-channel (background, foreground) map at input resolution. It trains at the lr the
  reference gives it on each backbone (``decoder_lr_ratio`` of the backbone: ``lr × ratio`` on
  VGG16 and InceptionV3, ``lr`` on ResNet50).
  Evaluation CAM = softmax channel 1, a probability scored raw (``map_kind = "probability"``).
- Loss = ``seed_weight`` · partial CE on the seeds (images not of ``negative_class``)
  + ``negative_weight`` · CE of **all** pixels → background on ``negative_class`` images (negative
  evidence; CAMELYON normal patches = 0; None turns it off, e.g. GlaS where both classes contain glands)
  + ``size_weight`` · ELB size term (off by default).
- Seeds (per image, from the ground-truth class CAM upsampled to the input and min-max normalised):
  ``n_fg`` foreground pixels drawn without replacement with probability ∝ CAM among the
  high-activation pixels (``fg_region``: above Otsu's threshold, or the top fraction), ``n_bg``
  background pixels with probability ∝ 1 − CAM among the lowest ``bg_region`` fraction; each seed is
  dilated to a ``seed_dilation`` square; pixels claimed by both are dropped.

No CRF term (not implemented, so not exposed). See docs/methods/negev.md for deviations from the
reference code.
"""
from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wsolctl._lazy import F, torch
from wsolctl.methods.base import Method, Output
from wsolctl.methods.decoder import WIDTHS
from wsolctl.methods.maxmin import elb
from wsolctl.methods.ops import minmax
from wsolctl.methods.unet import decoder_head, encode

IGNORE = -100  # F.cross_entropy's default ignore_index: unlabelled pixels


class NegevParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decoder_channels: list[int] = Field(list(WIDTHS), min_length=1,
                                        description="U-Net decoder block widths from the deepest level up "
                                                    "(VGG16's three blocks take the first three)")
    n_fg: int = Field(10, ge=0, description="foreground seed pixels per image (reference sl_ng_max)")
    n_bg: int = Field(10, ge=0, description="background seed pixels per image (reference sl_ng_min)")
    seed_dilation: int = Field(1, ge=1, description="odd side of the square each seed is dilated to "
                                                    "(reference sl_ng_ksz; 1 = the pixel only)")
    fg_region: Union[Literal["otsu"], float] = Field(
        "otsu", description="where foreground seeds may fall: 'otsu' = pixels above Otsu's threshold of the "
                            "CAM, or a number q in (0, 1] = the top q fraction of pixels")
    bg_region: float = Field(0.2, gt=0, le=1, description="background seeds fall in the lowest fraction of "
                                                          "pixels (reference sl_ng_min_p)")
    seed_weight: float = Field(1.0, ge=0, description="weight of the partial CE on the seeds (sl_ng_lambda)")
    negative_class: Optional[int] = Field(None, ge=0, description="class whose images are fully negative: all "
                                          "their pixels are pushed to background (CAMELYON normal = 0); "
                                          "None: off (GlaS)")
    negative_weight: float = Field(1.0, ge=0, description="weight of the all-background CE on negative images "
                                                          "(neg_samples_ng_lambda)")
    size_weight: float = Field(0.0, ge=0, description="weight of the ELB size term (max_sizepos_ng; 0 = off)")
    size_min: float = Field(0.0, ge=0, le=1, description="lower bound of the foreground area fraction")
    size_max: float = Field(1.0, ge=0, le=1, description="upper bound of the foreground area fraction")
    elb_t: float = Field(1.0, gt=0, description="ELB barrier parameter t (elb_init_t; constant, no schedule)")
    input_skip: bool = Field(False, description="deviation from the reference decoder: concatenate the raw "
                                                "input image as a full-resolution skip in the last block")

    @field_validator("fg_region")
    @classmethod
    def _fraction(cls, v):
        if not isinstance(v, str) and not 0 < v <= 1:
            raise ValueError("fg_region must be 'otsu' or a fraction in (0, 1]")
        return v

    @field_validator("seed_dilation")
    @classmethod
    def _odd(cls, v):
        if v % 2 == 0:
            raise ValueError("seed_dilation must be odd")
        return v

    @model_validator(mode="after")
    def _bounds(self):
        if self.size_min > self.size_max:
            raise ValueError("size_min must not exceed size_max")
        return self


def otsu_threshold(values, bins: int = 256):
    """Otsu's threshold of a 1-D tensor of values in [0, 1] (maximises the between-class variance)."""
    hist = torch.histc(values.float(), bins=bins, min=0.0, max=1.0)
    centers = (torch.arange(bins, device=values.device, dtype=torch.float32) + 0.5) / bins
    w0 = hist.cumsum(0)
    w1 = hist.sum() - w0
    m0 = (hist * centers).cumsum(0)
    mean0 = m0 / w0.clamp_min(1)
    mean1 = (m0[-1] - m0) / w1.clamp_min(1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return (between.argmax().float() + 1) / bins  # upper edge of the best lower class


def _draw(weights, region, n: int):
    """Indices of ``n`` pixels (at most the region's size) drawn without replacement ∝ ``weights``
    inside the boolean ``region`` (both flat)."""
    count = min(n, int(region.sum()))
    if count == 0:
        return weights.new_zeros(0, dtype=torch.long)
    return (weights * region).multinomial(count, replacement=False)


def sample_seeds(cams, n_fg: int, n_bg: int, fg_region="otsu", bg_region: float = 0.2,
                 dilation: int = 1, eps: float = 1e-6, bg_uniform: bool = False):
    """Pixel pseudo-labels from CAMs (N, H, W): 1 = foreground seed, 0 = background seed,
    ``IGNORE`` elsewhere (long, N × H × W). ``fg_region`` None: foreground seeds anywhere (the
    reference probability seeder; the background region then keeps the pixels it shares with it).
    Background seeds are drawn ∝ 1 − CAM inside their region, or uniformly there (``bg_uniform``)."""
    cams = minmax(cams.detach().float())
    n, h, w = cams.shape
    fg = torch.zeros(n, h * w, device=cams.device)
    bg = torch.zeros_like(fg)
    for i, cam in enumerate(cams.flatten(1)):
        order = cam.argsort()
        if fg_region is None:
            high = torch.ones_like(cam, dtype=torch.bool)
        elif fg_region == "otsu":
            high = cam > otsu_threshold(cam)
        else:
            high = torch.zeros_like(cam, dtype=torch.bool)
            high[order[h * w - max(1, round(fg_region * h * w)):]] = True
        low = torch.zeros_like(high)
        low[order[: max(1, round(bg_region * h * w))]] = True
        if fg_region is not None:
            low &= ~high  # a flat CAM: no pixel is both
        fg[i, _draw(cam + eps, high, n_fg)] = 1
        bg[i, _draw(torch.ones_like(cam) if bg_uniform else 1 - cam + eps, low, n_bg)] = 1
    fg, bg = fg.view(n, 1, h, w), bg.view(n, 1, h, w)
    if dilation > 1:
        fg = F.max_pool2d(fg, dilation, stride=1, padding=dilation // 2)
        bg = F.max_pool2d(bg, dilation, stride=1, padding=dilation // 2)
    both = (fg > 0) & (bg > 0)
    seeds = torch.full((n, h, w), IGNORE, dtype=torch.long, device=cams.device)
    seeds[((fg > 0) & ~both)[:, 0]] = 1
    seeds[((bg > 0) & ~both)[:, 0]] = 0
    return seeds


class NEGEV(Method):
    survey_rank = 15
    in_survey = True
    for_histology = True
    kind = "bottom-up"
    Params = NegevParams
    map_kind = "probability"
    prerequisite_rule = "b-loc"  # one checkpoint for both the classifier and the seed CAMs
    head_is_decoder = True  # its trainable head is a decoder: the backbone's decoder lr applies
    survey_selection = ("b-loc",)  # the survey selects it by B-LOC only; B-CL is an extension here

    @classmethod
    def unsupported(cls, backbone) -> Optional[str]:
        if backbone.kind == "cnn":
            return None
        return ("NEGEV decodes the multi-scale feature maps of a CNN encoder (the survey runs it on ResNet50, "
                "VGG16 and InceptionV3); a token model (ViT) gives a single patch map")

    def prerequisite(self) -> dict:
        return {"name": "cam", "params": {}}

    # --- model ---------------------------------------------------------------------------------
    def adapt_backbone(self, backbone, info):
        self._info = info  # build_head's decoder is laid out on the declared stages
        return backbone.requires_grad_(False)  # the CAM classifier's encoder: frozen

    def build_head(self, in_channels: int, num_classes: int):
        head = decoder_head(self._info, in_channels, num_classes, self.params.decoder_channels, out_channels=2,
                            input_skip=self.params.input_skip)
        head.classifier.requires_grad_(False)  # the CAM classifier's linear layer: frozen
        return head

    def load_prerequisite(self, model, state: dict) -> None:
        backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        classifier = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
        model.backbone.load_state_dict(backbone)
        model.head.classifier.load_state_dict(classifier)
        self.freeze(model)

    @staticmethod
    def frozen(model) -> list:
        return [model.backbone, model.head.classifier]

    def freeze(self, model) -> None:
        """No gradients, and eval mode whatever ``model.train()`` said (BN statistics stay fixed)."""
        for part in self.frozen(model):
            part.requires_grad_(False)
            part.eval()

    def _encode(self, model, images):
        """Frozen encoder: (the decoder's stage features, the backbone's output)."""
        self.freeze(model)
        with torch.no_grad():
            return encode(model, images)

    def forward(self, model, images, labels=None) -> Output:
        stage_maps, features = self._encode(model, images)
        with torch.no_grad():
            logits = model.head.classifier(features.mean(dim=(2, 3)))
        if labels is None and not model.training:
            return Output(logits=logits)
        extras = {"seg_logits": model.head.decoder(stage_maps, images)}
        if labels is not None:
            weight = model.head.classifier.weight[labels]  # (N, C): the ground-truth class's fc row
            cams = torch.einsum("nc,nchw->nhw", weight, features).float()
            extras["seed_cams"] = F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear",
                                                align_corners=False)[:, 0]
        return Output(logits=logits, extras=extras)

    # --- loss ----------------------------------------------------------------------------------
    def negative_mask(self, labels):
        if self.params.negative_class is None:
            return torch.zeros_like(labels, dtype=torch.bool)
        return labels == self.params.negative_class

    def loss_terms(self, output: Output, batch) -> dict:
        p = self.params
        seg = output.extras["seg_logits"].float()  # fp32 under AMP
        negative = self.negative_mask(batch.labels)
        positive = ~negative
        zero = seg.sum() * 0
        terms = {"seeds": zero, "negative": zero, "size": zero}
        if positive.any():
            seeds = sample_seeds(output.extras["seed_cams"][positive], p.n_fg, p.n_bg, p.fg_region,
                                 p.bg_region, p.seed_dilation)
            if (seeds != IGNORE).any():
                terms["seeds"] = F.cross_entropy(seg[positive], seeds, ignore_index=IGNORE)
            if p.size_weight > 0:
                area = seg[positive].softmax(dim=1)[:, 1].flatten(1).mean(dim=1)
                terms["size"] = (elb(p.size_min - area, p.elb_t) + elb(area - p.size_max, p.elb_t)).mean()
        if negative.any():
            neg = seg[negative]
            terms["negative"] = F.cross_entropy(neg, torch.zeros(neg.shape[0], *neg.shape[2:], dtype=torch.long,
                                                                 device=neg.device))
        return terms

    def loss(self, output: Output, batch):
        p, t = self.params, self.loss_terms(output, batch)
        return p.seed_weight * t["seeds"] + p.negative_weight * t["negative"] + p.size_weight * t["size"]

    def cams(self, model, images, targets):
        stage_maps, _ = self._encode(model, images)
        return model.head.decoder(stage_maps, images).float().softmax(dim=1)[:, 1]

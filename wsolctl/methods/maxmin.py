"""MAXMIN (Belharbi et al., "Min-max entropy for weakly supervised pointwise localization", TMI 2022).

A localizer and a classifier share the backbone; each has a WILDCAT-style head (1×1 conv to
C × modalities maps, averaged per class, top-k max + α·bottom-k min pooling).

1. Localizer: class maps A_c and logits s = pool(A) of the image x.
2. Mask: M = minmax(upsample(Σ_c softmax(s)_c · A_c)) at input resolution (per image),
   mask = sigmoid(w · (M − σ)).
3. Classifier on x ⊙ mask (positive region: should carry the class evidence, cross-entropy) and on
   x ⊙ (1 − mask) (negative region: should carry none, KL(uniform ‖ softmax) = max entropy).
4. Histology priors: the mask area of every image whose class is not ``normal_class`` is kept in
   [size_min, size_max] with extended log-barrier (ELB) penalties (foreground and background both
   present); with ``normal_class`` set (CAMELYON: 0 = normal), those images' masks are pushed to all
   background (BCE of the pre-sigmoid mask towards 0) and they skip the size/positive/negative terms.

Loss = CE(s, y) + λ_pos·CE(pos) + λ_neg·KL-uniform(neg) + λ_size·ELB(area) + λ_normal·BCE(normal → 0).
Classification (accuracy) uses the localizer's logits; the evaluation CAM is the mask (class-agnostic:
it is the posterior-weighted sum, whatever the target). See docs/methods/tscam-maxmin-unet.md for
what differs from the survey's and the original code.
"""
from __future__ import annotations

import math
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsolctl._lazy import F, nn, torch
from wsolctl.methods.base import Method, Output
from wsolctl.methods.ops import minmax


class MaxMinParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # WILDCAT heads (survey config defaults)
    modalities: int = Field(5, ge=1, description="WILDCAT maps per class")
    kmax: float = Field(0.5, gt=0, description="top-k of the pooling: a fraction of h·w if < 1, else a count")
    kmin: float = Field(0.1, ge=0, description="bottom-k of the pooling (0: none); fraction if < 1, else a count")
    alpha: float = Field(0.6, ge=0, description="weight of the bottom-k (min) term")
    # mask
    w: float = Field(8.0, gt=0, description="sigmoid sharpness (survey 8; original paper 5)")
    sigma: float = Field(0.15, ge=0, le=1, description="sigmoid offset on the min-max normalised map")
    # loss weights
    lambda_pos: float = Field(1.0, ge=0, description="CE of the classifier on x·mask")
    lambda_neg: float = Field(1e-7, ge=0, description="KL(uniform ‖ p) of the classifier on x·(1−mask) (original repo: 1e-7)")
    lambda_size: float = Field(1e-3, ge=0, description="ELB size prior on the mask area (survey code: 1e-3)")
    size_min: float = Field(0.1, ge=0, le=1, description="lower bound of the mask area fraction")
    size_max: float = Field(0.9, ge=0, le=1, description="upper bound of the mask area fraction")
    sigma_step: float = Field(0.001, ge=0, description="σ grows by this much per epoch (original: 0.001)")
    sigma_max: float = Field(0.2, ge=0, le=1, description="σ stops growing here (original: 0.2)")
    elb_t: float = Field(5.0, gt=0, description="ELB barrier parameter t at epoch 0")
    elb_t_factor: float = Field(1.0, ge=1, description="t is multiplied by this per epoch (ELB paper: 1.1; 1 = constant)")
    normal_class: Optional[int] = Field(None, ge=0, description="class whose masks are pushed to all background "
                                        "(CAMELYON normal = 0); None: no such class (GlaS)")
    lambda_normal: float = Field(1.0, ge=0, description="BCE(mask → 0) weight for normal_class images")

    @model_validator(mode="after")
    def _bounds(self):
        if self.size_min > self.size_max:
            raise ValueError("size_min must not exceed size_max")
        return self


def elb(z, t: float):
    """Extended log-barrier (Kervadec et al., 2019) of the constraint z ≤ 0:
    −log(−z)/t when z ≤ −1/t², else the tangent continuation t·z − log(1/t²)/t + 1/t. Finite and
    differentiable everywhere; small inside the feasible set, growing linearly (slope t) outside."""
    threshold = -1.0 / t ** 2
    feasible = z <= threshold
    inside = -torch.log(-torch.where(feasible, z, torch.full_like(z, threshold))) / t
    outside = t * z - math.log(1.0 / t ** 2) / t + 1.0 / t
    return torch.where(feasible, inside, outside)


def _count(k: float, n: int) -> int:
    return max(1, min(n, round(k * n) if k < 1 else int(k)))


def wildcat_pool(maps, kmax: float, kmin: float, alpha: float):
    """(N, C, h, w) → (N, C): mean of the top-k values + α · mean of the bottom-k values."""
    flat = maps.flatten(2)
    n = flat.shape[-1]
    ordered = flat.sort(dim=-1, descending=True).values
    score = ordered[..., : _count(kmax, n)].mean(dim=-1)
    if kmin > 0 and alpha > 0:
        score = score + alpha * ordered[..., n - _count(kmin, n):].mean(dim=-1)
    return score


def _wildcat_head(in_channels: int, num_classes: int, modalities: int):
    class WildcatHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, num_classes * modalities, kernel_size=1)

        def forward(self, features):
            maps = self.conv(features)
            n, _, h, w = maps.shape
            return maps.reshape(n, num_classes, modalities, h, w).mean(dim=2)

    return WildcatHead()


class MAXMIN(Method):
    survey_rank = 14
    in_survey = True
    for_histology = True
    kind = "bottom-up"
    Params = MaxMinParams

    def __init__(self, params=None):
        super().__init__(params)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """The original's schedules: σ grows linearly (capped), the ELB t geometrically."""
        p = self.params
        self.sigma = min(p.sigma + epoch * p.sigma_step, max(p.sigma, p.sigma_max))
        self.elb_t = p.elb_t * p.elb_t_factor ** epoch

    def build_head(self, in_channels: int, num_classes: int):
        p = self.params
        return nn.ModuleDict({"localizer": _wildcat_head(in_channels, num_classes, p.modalities),
                              "classifier": _wildcat_head(in_channels, num_classes, p.modalities)})

    def _classify(self, model, head: str, images):
        p = self.params
        maps = model.head[head](model.backbone(images))
        return wildcat_pool(maps, p.kmax, p.kmin, p.alpha), maps

    def mask_logits(self, class_maps, logits, size):
        """w·(minmax(upsampled Σ_c p_c·A_c) − σ): the pre-sigmoid mask, (N, H, W)."""
        weights = logits.softmax(dim=1)
        combined = torch.einsum("nc,nchw->nhw", weights, class_maps).float()  # fp32 under AMP
        combined = F.interpolate(combined[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        return self.params.w * (minmax(combined) - self.sigma)

    def forward(self, model, images, labels=None) -> Output:
        logits, class_maps = self._classify(model, "localizer", images)
        if labels is None:
            return Output(logits=logits, class_maps=class_maps)
        raw = self.mask_logits(class_maps, logits, images.shape[-2:])
        mask = torch.sigmoid(raw)[:, None]
        pos, _ = self._classify(model, "classifier", images * mask)
        neg, _ = self._classify(model, "classifier", images * (1 - mask))
        return Output(logits=logits, class_maps=class_maps,
                      extras={"mask_logits": raw, "mask": mask[:, 0], "pos_logits": pos, "neg_logits": neg})

    def loss_terms(self, output: Output, batch) -> dict:
        p, ex, labels = self.params, output.extras, batch.labels
        terms = {"ce": F.cross_entropy(output.logits, labels)}
        normal = (labels == p.normal_class) if p.normal_class is not None else torch.zeros_like(labels, dtype=torch.bool)
        regular = ~normal
        zero = output.logits.sum() * 0
        if regular.any():
            pos, neg = ex["pos_logits"][regular], ex["neg_logits"][regular]
            terms["pos"] = F.cross_entropy(pos, labels[regular])
            log_p = F.log_softmax(neg, dim=1)
            terms["neg"] = (-math.log(neg.shape[1]) - log_p.mean(dim=1)).mean()  # KL(uniform ‖ p)
            area = ex["mask"][regular].flatten(1).mean(dim=1)
            terms["size"] = (elb(p.size_min - area, self.elb_t) + elb(area - p.size_max, self.elb_t)).mean()
        else:
            terms.update(pos=zero, neg=zero, size=zero)
        if normal.any():
            raw = ex["mask_logits"][normal]
            terms["normal"] = F.binary_cross_entropy_with_logits(raw, torch.zeros_like(raw))
        else:
            terms["normal"] = zero
        return terms

    def loss(self, output: Output, batch):
        p, t = self.params, self.loss_terms(output, batch)
        return (t["ce"] + p.lambda_pos * t["pos"] + p.lambda_neg * t["neg"] + p.lambda_size * t["size"]
                + p.lambda_normal * t["normal"])

    def cams(self, model, images, targets):
        logits, class_maps = self._classify(model, "localizer", images)
        return torch.sigmoid(self.mask_logits(class_maps, logits, images.shape[-2:]))

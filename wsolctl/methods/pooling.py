"""The spatial-pooling family of bottom-up methods (survey §2.2): GAP, MAX-Pool, LSE, WILDCAT,
Deep MIL and PRM.

All but Deep MIL share one head: a 1x1 convolution turns the backbone features into per-class maps
``M`` (N, C, h, w), the class score is a spatial pooling of ``M`` and the CAM is ``M`` itself. Each
method only says how it pools (``pool``); WILDCAT also makes several maps per class. Deep MIL scores
every position with an attention network; its per-class attention map is the CAM.

The pooling functions are plain module-level functions so they can be tested on hand-made maps.
See docs/methods/pooling.md for the mechanisms, the search spaces and the deviations from the
survey's reference code.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wsolctl._lazy import nn, torch
from wsolctl.methods.base import Method, Output

if TYPE_CHECKING:
    from torch import Tensor


# --------------------------------------------------------------------------- pooling functions


def lse_pool(maps: "Tensor", r: float) -> "Tensor":
    """Log-sum-exp pooling (1/r)·log((1/hw)·Σ exp(r·m)) of (N, C, h, w) maps → (N, C).

    Computed with ``logsumexp`` (stable for any r and map scale); it tends to the spatial mean as
    r → 0 and to the spatial max as r → ∞."""
    flat = maps.flatten(2)
    return (torch.logsumexp(r * flat, dim=2) - math.log(flat.shape[2])) / r


def region_count(k: float, n: int) -> int:
    """The number of regions a WILDCAT fraction ``k`` of ``n`` positions selects: round(k·n),
    at least 1 when k > 0 (0 when k == 0) and at most n."""
    if k <= 0:
        return 0
    return min(n, max(1, round(k * n)))


def wildcat_pool(maps: "Tensor", kmax: float, kmin: float, alpha: float) -> "Tensor":
    """WILDCAT spatial pooling (Durand et al., 2017, Eq. 6 of the survey) of (N, C, h, w) → (N, C):
    the mean of the k⁺ = kmax·hw highest values plus α times the mean of the k⁻ = kmin·hw lowest
    values (the "negative evidence"). Gradients reach only the selected positions."""
    flat = maps.flatten(2)
    n = flat.shape[2]
    k_top, k_bottom = region_count(kmax, n), region_count(kmin, n)
    scores = flat.topk(k_top, dim=2, largest=True).values.mean(dim=2)
    if k_bottom and alpha:
        scores = scores + alpha * flat.topk(k_bottom, dim=2, largest=False).values.mean(dim=2)
    return scores


def find_peaks(maps: "Tensor", kernel_size: int, median_filter: bool = True) -> "Tensor":
    """Local maxima of (N, C, h, w) maps → bool mask of the same shape.

    A position is a peak when it equals the maximum of the ``kernel_size`` × ``kernel_size``
    window centred on it (positions outside the map do not count). With ``median_filter`` (the
    default of the PRM authors' code) peaks below the map's median are dropped, so a flat or
    noisy background does not contribute a crowd of weak peaks."""
    from torch.nn import functional as F

    maps = maps.detach()
    pad = (kernel_size - 1) // 2
    padded = F.pad(maps, (pad, pad, pad, pad), value=float("-inf"))
    peaks = maps == F.max_pool2d(padded, kernel_size, stride=1)
    if median_filter:
        median = maps.flatten(2).median(dim=2).values[..., None, None]
        peaks &= maps >= median
    return peaks


def peak_stimulation(maps: "Tensor", kernel_size: int, median_filter: bool = True) -> "Tensor":
    """PRM's class score (Zhou et al., 2018): the mean of the peak responses of each map,
    (N, C, h, w) → (N, C). The peak mask carries no gradient, so the gradient of a score is
    1/N_c at each of its N_c peaks and 0 elsewhere ("peak back-propagation" of the training)."""
    peaks = find_peaks(maps, kernel_size, median_filter).to(maps.dtype)
    # Every map has at least one peak (its global maximum, which is ≥ its median).
    return (maps * peaks).sum(dim=(2, 3)) / peaks.sum(dim=(2, 3)).clamp_min(1)


def mil_attention(scores: "Tensor") -> "Tensor":
    """Per-class softmax over the spatial positions of (N, C, h, w) attention scores: each
    (image, class) map sums to 1."""
    return scores.flatten(2).softmax(dim=2).view_as(scores)


# --------------------------------------------------------------------------- params


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LSEParams(_Params):
    r: float = Field(10.0, gt=0, description="smoothness q of the log-sum-exp (→0: mean, →∞: max)",
                     json_schema_extra={"search": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]})


class WILDCATParams(_Params):
    kmax: float = Field(0.5, gt=0, le=1, description="fraction of the positions pooled as the highest",
                        json_schema_extra={"search": [0.1, 0.3, 0.5, 0.6, 0.7]})
    kmin: float = Field(0.1, ge=0, le=1, description="fraction of the positions pooled as the lowest (0: none)",
                        json_schema_extra={"search": [0.1, 0.2, 0.3]})
    alpha: float = Field(0.6, ge=0, description="weight of the lowest-regions term",
                         json_schema_extra={"search": [0.1, 0.6]})
    modalities: int = Field(5, ge=1, description="maps per class, averaged by the class-wise pooling")


class DeepMILParams(_Params):
    mid_channels: int = Field(128, ge=1, description="width of the attention network")
    gated: bool = Field(False, description="gated attention tanh(V·f)⊙sigmoid(U·f) instead of tanh(V·f)",
                        json_schema_extra={"search": [False, True]})


class PRMParams(_Params):
    kernel_size: int = Field(3, ge=1, description="window r of the local-maximum (peak) search; odd",
                             json_schema_extra={"search": [3, 5, 7, 9, 11, 13]})
    median_filter: bool = Field(True, description="ignore peaks below the map's median (PRM authors' code)")

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("kernel_size must be odd (the window is centred on each position)")
        return value


# --------------------------------------------------------------------------- methods


class ClassMapPooling(Method):
    """1x1 conv → ``modalities`` maps per class, averaged per class (class-wise pooling) →
    class maps (the CAM) → ``pool`` → logits. Subclasses define ``pool`` (and may set
    ``modalities``)."""

    kind = "bottom-up"
    trains_on_features = True

    @property
    def modalities(self) -> int:
        return 1

    def pool(self, maps: "Tensor") -> "Tensor":
        """(N, C, h, w) class maps → (N, C) class scores."""
        raise NotImplementedError

    def build_head(self, in_channels: int, num_classes: int):
        return nn.Conv2d(in_channels, num_classes * self.modalities, kernel_size=1)

    def class_maps(self, model, images) -> "Tensor":
        maps = model.head(model.backbone(images))
        n, cm, h, w = maps.shape
        if self.modalities > 1:
            maps = maps.view(n, cm // self.modalities, self.modalities, h, w).mean(dim=2)
        return maps

    def forward(self, model, images, labels=None) -> Output:
        maps = self.class_maps(model, images)
        return Output(logits=self.pool(maps), class_maps=maps)


class GAP(ClassMapPooling):
    """GAP (Lin et al., 2013): the class score is the spatial mean of the class map."""

    survey_rank = 1
    in_survey = True

    def pool(self, maps):
        return maps.mean(dim=(2, 3))


class MaxPool(ClassMapPooling):
    """MAX-Pool (Oquab et al., 2015): the class score is the spatial maximum of the class map."""

    survey_rank = 2
    in_survey = True

    def pool(self, maps):
        return maps.amax(dim=(2, 3))


class LSE(ClassMapPooling):
    """LSE (Sun et al., 2016): log-sum-exp pooling, a smooth max of sharpness ``r``."""

    survey_rank = 3
    in_survey = True
    Params = LSEParams

    def pool(self, maps):
        return lse_pool(maps, self.params.r)


class WILDCAT(ClassMapPooling):
    """WILDCAT (Durand et al., 2017): several modality maps per class, averaged; class score =
    mean of the top kmax regions + α · mean of the bottom kmin regions."""

    survey_rank = 6
    in_survey = True
    Params = WILDCATParams

    @property
    def modalities(self) -> int:
        return self.params.modalities

    def pool(self, maps):
        p = self.params
        return wildcat_pool(maps, p.kmax, p.kmin, p.alpha)


class PRM(ClassMapPooling):
    """PRM (Zhou et al., 2018): peak stimulation, the class score is the mean of the local maxima
    of the class response map; gradients flow through the peaks only."""

    survey_rank = 10
    in_survey = True
    Params = PRMParams

    def pool(self, maps):
        return peak_stimulation(maps, self.params.kernel_size, self.params.median_filter)


class DeepMIL(Method):
    """Deep MIL (Ilse et al., 2018): attention-based MIL pooling over the spatial positions.

    Per class c, attention scores a_c(i) = w_c · tanh(V f_i) [⊙ sigmoid(U f_i) if gated] (1x1
    convs), softmax over the positions → A_c (the CAM, sums to 1), bag feature z_c = Σ_i A_c(i) f_i,
    logit_c = θ_c · z_c + b_c (one linear classifier per class)."""

    survey_rank = 9
    in_survey = True
    kind = "bottom-up"
    Params = DeepMILParams
    trains_on_features = True

    def build_head(self, in_channels: int, num_classes: int):
        p = self.params
        layers = {
            "v": nn.Sequential(nn.Conv2d(in_channels, p.mid_channels, 1), nn.Tanh()),
            "w": nn.Conv2d(p.mid_channels, num_classes, 1),
            # row c is class c's own linear classifier of its attention-pooled feature
            "classifier": nn.Linear(in_channels, num_classes),
        }
        if p.gated:
            layers["u"] = nn.Sequential(nn.Conv2d(in_channels, p.mid_channels, 1), nn.Sigmoid())
        return nn.ModuleDict(layers)

    def forward(self, model, images, labels=None) -> Output:
        head = model.head
        features = model.backbone(images)
        hidden = head["v"](features)
        if self.params.gated:
            hidden = hidden * head["u"](features)
        attention = mil_attention(head["w"](hidden))  # (N, C, h, w)
        pooled = torch.einsum("nchw,nkhw->nck", attention, features)  # (N, C, K)
        logits = torch.einsum("nck,ck->nc", pooled, head["classifier"].weight) + head["classifier"].bias
        return Output(logits=logits, class_maps=attention)

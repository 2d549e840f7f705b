"""Erasing / augmentation bottom-up methods (survey §2.2): HaS, ACoL, ADL and CutMix.

- HaS (Singh & Lee, 2017): hide random grid cells of the training images.
- ACoL (Zhang et al., 2018): two classifiers; the second sees the features with the first one's
  most discriminative region erased.
- ADL (Choe & Shim, 2019): attention-based dropout layers inserted in the backbone (training only).
- CutMix (Yun et al., 2019): paste a box of a partner image, mix the labels by the pasted area.

HaS, ADL and CutMix keep CAM's head (GAP + linear, class maps from the linear weights) but train
their own classifier (they do not share CAM's ``training_key``). See docs/methods/erasing.md for
defaults, search spaces and where this differs from the survey's reference code.
"""
from __future__ import annotations

import functools
import math

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import F, nn, torch
from wsolctl.methods.base import Batch, Method, Output
from wsolctl.methods.cam import CAM
from wsolctl.methods.layout import wsol_layout_only, wsol_taps
from wsolctl.methods.ops import minmax, select


# ----------------------------------------------------------------------------- shared helpers
def insert_after(root: "nn.Module", path: str, name: str, module: "nn.Module") -> None:
    """Insert ``module`` (as child ``name``) right after the submodule at dotted ``path``, in place.
    The parent must be an ``nn.Sequential``; existing parameter names do not change."""
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    if not isinstance(parent, nn.Sequential) or child not in parent._modules:
        raise ValueError(f"cannot insert after {path!r}: its parent is not an nn.Sequential")
    items = list(parent._modules.items())
    parent._modules.clear()
    for key, value in items:
        parent._modules[key] = value
        if key == child:
            parent._modules[name] = module


def _search(values: list) -> dict:
    return {"search": values}


class _TrainsOwnCAM(CAM):
    """CAM's head, but its own trained classifier (the training differs from plain CAM)."""

    def training_key(self) -> dict:
        return Method.training_key(self)


# ----------------------------------------------------------------------------- HaS
class HaSParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grid_size: int = Field(5, ge=0, description="side of a hidden cell in pixels (0 = off)",
                           json_schema_extra=_search([8, 16, 32, 44, 56]))
    drop_rate: float = Field(0.5, ge=0, le=1, description="probability of hiding each cell",
                             json_schema_extra=_search([0.2, 0.3, 0.4, 0.5, 0.6]))


def hide_patches(images: "torch.Tensor", grid_size: int, drop_rate: float) -> "torch.Tensor":
    """Set each ``grid_size``² cell of each image to 0 (the dataset mean after normalisation)
    with probability ``drop_rate``; all channels of a cell together. Returns a new tensor."""
    if grid_size <= 0 or drop_rate <= 0:
        return images
    n, _, h, w = images.shape
    cells = (n, 1, math.ceil(h / grid_size), math.ceil(w / grid_size))
    keep = (torch.rand(cells, device=images.device) >= drop_rate).to(images.dtype)
    keep = keep.repeat_interleave(grid_size, 2).repeat_interleave(grid_size, 3)[..., :h, :w]
    return images * keep


class HaS(_TrainsOwnCAM):
    """Hide-and-Seek: random grid cells of each training image are hidden; CAM head."""

    survey_rank = 5
    in_survey = True
    kind = "bottom-up"
    Params = HaSParams

    def augment(self, batch: Batch) -> Batch:
        p = self.params
        return Batch(hide_patches(batch.images, p.grid_size, p.drop_rate), batch.labels, batch.masks,
                     dict(batch.extras))


# ----------------------------------------------------------------------------- ACoL
class ACoLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    erase_threshold: float = Field(
        0.1, ge=0, le=1, description="δ: erase feature positions where A's normalised class map ≥ δ",
        json_schema_extra=_search([0.5, 0.6, 0.7, 0.8, 0.9]))


def erase_mask(attention: "torch.Tensor", threshold: float) -> "torch.Tensor":
    """1 where the (min-max normalised) attention is below ``threshold``, 0 where it is erased."""
    return (attention < threshold).to(attention.dtype)


def _acol_branch(in_channels: int, num_classes: int) -> "nn.Sequential":
    return nn.Sequential(
        nn.Conv2d(in_channels, 1024, 3, padding=1), nn.ReLU(inplace=False),
        nn.Conv2d(1024, 1024, 3, padding=1), nn.ReLU(inplace=False),
        nn.Conv2d(1024, num_classes, 1),
    )


class ACoL(Method):
    """Adversarial Complementary Learning: classifier A, and classifier B on the features where
    A's map of the ground-truth class (predicted class at inference / CAM target in ``cams``) is
    erased. Loss CE(A) + CE(B); class maps max(minmax(A), minmax(B))."""

    survey_rank = 7
    in_survey = True
    kind = "bottom-up"
    Params = ACoLParams

    def build_head(self, in_channels, num_classes):
        return nn.ModuleDict({"A": _acol_branch(in_channels, num_classes),
                              "B": _acol_branch(in_channels, num_classes)})

    def forward(self, model, images, labels=None) -> Output:
        features = model.backbone(images)
        maps_a = model.head["A"](features)
        logits = maps_a.mean(dim=(2, 3))
        target = labels if labels is not None else logits.argmax(dim=1)
        attention = minmax(select(maps_a.detach(), target))
        erased = features * erase_mask(attention, self.params.erase_threshold).unsqueeze(1)
        maps_b = model.head["B"](erased)
        class_maps = torch.maximum(minmax(maps_a), minmax(maps_b))
        return Output(logits=logits, class_maps=class_maps,
                      extras={"logits_b": maps_b.mean(dim=(2, 3)), "erased_target": target})

    def loss(self, output, batch):
        return F.cross_entropy(output.logits, batch.labels) + F.cross_entropy(output.extras["logits_b"], batch.labels)

    def cams(self, model, images, targets):
        # B's map depends on which class was erased: erase the CAM target, as the reference does.
        return select(self.forward(model, images, targets).class_maps, targets)


# ----------------------------------------------------------------------------- ADL
class ADLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    drop_rate: float = Field(0.4, ge=0, le=1, description="probability of using the drop mask "
                             "instead of the importance map, per layer and batch",
                             json_schema_extra=_search([0.0, 0.25, 0.35, 0.45, 0.50, 0.75]))
    drop_threshold: float = Field(0.1, ge=0, le=1, description="γ: the drop mask zeroes positions "
                                  "whose attention is ≥ γ·max",
                                  json_schema_extra=_search([0.75, 0.85, 0.90]))


def adl_drop_mask(attention: "torch.Tensor", threshold: float) -> "torch.Tensor":
    """For (N, 1, h, w) attention: 1 where attention < threshold × the image's maximum, else 0."""
    peak = attention.flatten(1).max(dim=1).values.view(-1, 1, 1, 1)
    return (attention < threshold * peak).to(attention.dtype)


@functools.lru_cache(maxsize=None)
def _adl_layer_class():
    class ADLLayer(nn.Module):
        """Attention-based dropout; identity in eval mode."""

        def __init__(self, drop_rate: float, drop_threshold: float):
            super().__init__()
            self.drop_rate, self.drop_threshold = drop_rate, drop_threshold

        def forward(self, x):
            if not self.training:
                return x
            attention = x.mean(dim=1, keepdim=True)
            if float(torch.rand(())) < self.drop_rate:
                return x * adl_drop_mask(attention, self.drop_threshold)
            return x * torch.sigmoid(attention)

        def extra_repr(self):
            return f"drop_rate={self.drop_rate}, drop_threshold={self.drop_threshold}"

    return ADLLayer


class ADL(_TrainsOwnCAM):
    """Attention-based Dropout Layer inserted at three backbone positions; CAM head."""

    survey_rank = 11
    in_survey = True
    kind = "bottom-up"
    Params = ADLParams

    @classmethod
    def unsupported(cls, backbone):
        return wsol_layout_only(backbone, "ADL is inserted at fixed stages of the WSOL backbones")

    def adapt_backbone(self, backbone, info):
        """ADL layers where the reference puts them (:func:`wsolctl.methods.layout.wsol_taps`): ResNet
        after layer3 block 0 and layer4 blocks 0 and last; VGG16 after pool3, conv4_3 and conv5_3;
        InceptionV3 after Mixed_5d, Mixed_6e and SPG_A3_2b."""
        layer = _adl_layer_class()
        for i, path in enumerate(wsol_taps(backbone, info).adl):
            insert_after(backbone, path, f"adl{i}", layer(self.params.drop_rate, self.params.drop_threshold))
        return backbone


# ----------------------------------------------------------------------------- CutMix
class CutMixParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alpha: float = Field(1.0, gt=0, description="λ ~ Beta(α, α)", json_schema_extra=_search([1.0]))
    prob: float = Field(1.0, ge=0, le=1, description="probability of mixing a batch",
                        json_schema_extra=_search([0.5, 0.6, 0.7, 0.8, 0.9, 1.0]))


def cutmix_box(height: int, width: int, lam: float, cy: int, cx: int) -> tuple[int, int, int, int]:
    """Box (y1, y2, x1, x2) of sides ≈ √(1−λ)·(H, W) centred at (cy, cx), clipped to the image."""
    ratio = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    return (min(max(cy - half_h, 0), height), min(max(cy + half_h, 0), height),
            min(max(cx - half_w, 0), width), min(max(cx + half_w, 0), width))


class CutMix(_TrainsOwnCAM):
    """CutMix: a box from a shuffled partner is pasted into each image; the loss mixes the two
    labels by the exact kept area λ; CAM head."""

    survey_rank = 12
    in_survey = True
    kind = "bottom-up"
    Params = CutMixParams

    def augment(self, batch: Batch) -> Batch:
        p = self.params
        if p.prob <= 0 or float(torch.rand(())) >= p.prob:
            return batch
        images = batch.images.clone()
        n, _, h, w = images.shape
        alpha = torch.tensor(float(p.alpha))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        partner = torch.randperm(n, device=images.device)
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y1, y2, x1, x2 = cutmix_box(h, w, lam, cy, cx)
        images[:, :, y1:y2, x1:x2] = batch.images[partner, :, y1:y2, x1:x2]
        lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
        extras = {**batch.extras, "cutmix_labels": batch.labels[partner], "cutmix_lambda": lam,
                  "cutmix_box": (y1, y2, x1, x2)}
        return Batch(images, batch.labels, batch.masks, extras)

    def loss(self, output, batch):
        ce = F.cross_entropy(output.logits, batch.labels)
        if "cutmix_labels" not in batch.extras:
            return ce
        lam = batch.extras["cutmix_lambda"]
        return lam * ce + (1.0 - lam) * F.cross_entropy(output.logits, batch.extras["cutmix_labels"])

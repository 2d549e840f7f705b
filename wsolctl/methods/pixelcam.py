"""PixelCAM (Guichemerre, Belharbi, Shater, McCaffrey, Granger, "PixelCAM: Pixel Class Activation
Mapping for Histology Image Classification and ROI Localization", MIDL 2025; code
``AlexisGuichemerreCode/PixelCAM``, where the method is called ``EnergyCAM``).

- Prerequisite: a WSOL model of CAM type (``cams_from``, default ``cam``; the paper's examples use
  LayerCAM's), trained first on the same data, backbone and settings. Its ``b-loc`` checkpoint
  (a) initialises this model's encoder and image classifier (the prerequisite's own head), and
  (b) is kept, **frozen**, outside the trained model to give the pseudo-labels: the CAM of the
  ground-truth class, bilinearly resized to the input and min-max normalised.
- Pixel-wise classifier: a 1×1 convolution from the encoder's output features (the pixel-feature
  space F, shared with the image classifier) to 2 channels (background, foreground); no decoder.
- Both classifiers are trained **jointly** (encoder included):
  loss = CE(image logits, label) + ``seed_weight`` · partial CE(pixel logits, seeds), the pixel
  logits bilinearly upsampled to the input, unseeded pixels ignored.
- Seeds, re-drawn at every step (reference ``probability_negative_salloarea_seeder``): ``n_fg``
  foreground pixels drawn without replacement ∝ CAM over the whole image, ``n_bg`` background pixels
  drawn uniformly among the lowest ``bg_region`` fraction of the CAM (as the reference; before
  issue 27 ∝ 1 − CAM there, NEGEV's rule); each dilated to a ``seed_dilation``
  square, a pixel claimed by both dropped. With ``negative_class`` (CAMELYON16 normal patches),
  images of that class get no pseudo-labels (reference default), or with ``negative_seeds``
  ``n_bg`` background seeds drawn over the whole image (reference ``neg_samples_partial``).
- Localization map: softmax(pixel logits)[foreground] at the feature resolution, a probability
  (``map_kind = "probability"``: scored raw, resized bilinearly like every map).

Deviations from the reference code: docs/methods/pixelcam.md.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsolctl import plugins
from wsolctl._lazy import F, nn, torch
from wsolctl.errors import UnknownPlugin
from wsolctl.methods.base import Method, Output
from wsolctl.methods.negev import IGNORE, sample_seeds


class PixelCAMParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cams_from: str = Field("cam", description="the WSOL method (CAM-type maps) trained first whose b-loc model gives "
                                              "the initial weights and the pseudo-labels (reference path_cam)")
    cams_params: dict[str, Any] = Field(default_factory=dict, description="that method's params")
    n_fg: int = Field(5, ge=0, description="foreground seed pixels per image (reference sl_max, README: 5)")
    n_bg: int = Field(5, ge=0, description="background seed pixels per image (reference sl_min, README: 5)")
    bg_region: float = Field(0.2, gt=0, le=1, description="background seeds fall in this lowest fraction of the "
                                                          "CAM (reference sl_ng_min_p, the value its seeder reads)")
    seed_dilation: int = Field(1, ge=1, description="odd side of the square each seed is dilated to (sl_ksz)")
    seed_weight: float = Field(1.0, ge=0, description="weight of the partial CE on the seeds (ece_lambda)")
    negative_class: Optional[int] = Field(None, ge=0, description="class whose images hold no foreground "
                                          "(CAMELYON normal = 0): no foreground seeds there; None: off (GlaS)")
    negative_seeds: bool = Field(False, description="with negative_class: n_bg background seeds over the whole image of "
                                                    "those images (reference neg_samples_partial); else none")

    @model_validator(mode="after")
    def _cam_type_prerequisite(self):
        try:
            seeder = plugins.load("methods", self.cams_from)
        except UnknownPlugin as exc:
            raise ValueError(f"cams_from: {exc}") from None
        params = seeder.Params.model_validate(self.cams_params)
        if seeder.map_kind != "cam" or seeder.needs_masks or seeder(params).prerequisite() is not None:
            raise ValueError(f"cams_from: {self.cams_from!r} is not a weakly supervised method of CAM-type maps "
                             "trained on its own (PixelCAM takes its pseudo-labels from one)")
        if self.seed_dilation % 2 == 0:
            raise ValueError("seed_dilation must be odd")
        return self


class PixelCAMHead(nn.Module):
    """The prerequisite method's head (the image classifier) and the pixel-wise classifier."""

    def __init__(self, classifier: "nn.Module", in_channels: int):
        super().__init__()
        self.classifier = classifier
        self.pixel = nn.Conv2d(in_channels, 2, kernel_size=1)


class _Part:
    """What a method's ``forward`` sees of a model (:class:`wsolctl.methods.base.Model`): the shared
    backbone with another head."""

    def __init__(self, model, head, method):
        self.backbone, self.head, self.method = model.backbone, head, method
        self.cam_layer, self.training = model.cam_layer, model.training

    def __call__(self, images, labels=None) -> Output:
        return self.method.forward(self, images, labels)


class PixelCAM(Method):
    kind = "bottom-up"
    Params = PixelCAMParams
    map_kind = "probability"
    prerequisite_rule = "b-loc"  # one checkpoint for the initial weights and the pseudo-labels

    def __init__(self, params=None):
        super().__init__(params)
        seeder = plugins.load("methods", self.params.cams_from)
        self.seeder: Method = seeder(seeder.Params.model_validate(self.params.cams_params))
        self._teacher: Optional["nn.Module"] = None  # the frozen prerequisite; never part of the trained model

    def prerequisite(self) -> dict:
        return {"name": self.params.cams_from, "params": self.params.cams_params}

    def adapt_backbone(self, backbone, info):
        return self.seeder.adapt_backbone(backbone, info)

    def build_head(self, in_channels: int, num_classes: int):
        return PixelCAMHead(self.seeder.build_head(in_channels, num_classes), in_channels)

    def load_prerequisite(self, model, state: dict) -> None:
        model.backbone.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
        model.head.classifier.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
        teacher = copy.deepcopy(model)
        teacher.head, teacher.method = teacher.head.classifier, self.seeder
        self._teacher = teacher.requires_grad_(False).eval()

    def forward(self, model, images, labels=None) -> Output:
        features: list = []
        hook = model.backbone.register_forward_hook(lambda module, args, out: features.append(out))
        try:
            output = _Part(model, model.head.classifier, self.seeder)(images, labels)
        finally:
            hook.remove()
        if labels is None:
            return Output(logits=output.logits)
        extras = {"pixel_logits": model.head.pixel(features[-1]), "seed_cams": self.seed_cams(images, labels)}
        return Output(logits=output.logits, extras=extras)

    def seed_cams(self, images, labels):
        """The frozen prerequisite's maps of the ground-truth classes at the input size, (N, H, W)."""
        if self._teacher is None:
            raise RuntimeError("PixelCAM is trained from its prerequisite's model: load_prerequisite was not called")
        self._teacher.eval()
        with torch.no_grad():  # gradient-based (top-down) seeders turn gradients back on for their layer
            cams = self.seeder.cams(self._teacher, images, labels).detach().float()
        return F.interpolate(cams[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

    def seeds(self, cams, labels):
        """Pixel pseudo-labels (N, H, W): 1 foreground, 0 background, ``IGNORE`` elsewhere."""
        p = self.params
        seeds = sample_seeds(cams, p.n_fg, p.n_bg, None, p.bg_region, p.seed_dilation, bg_uniform=True)
        if p.negative_class is not None:
            negative = labels == p.negative_class
            seeds[negative] = IGNORE
            if p.negative_seeds and negative.any():
                seeds[negative] = sample_seeds(cams[negative], 0, p.n_bg, None, 1.0, p.seed_dilation, bg_uniform=True)
        return seeds

    def loss_terms(self, output: Output, batch) -> dict:
        pixel = output.extras["pixel_logits"].float()
        pixel = F.interpolate(pixel, size=batch.images.shape[-2:], mode="bilinear", align_corners=False)
        seeds = self.seeds(output.extras["seed_cams"], batch.labels)
        seeded = (seeds != IGNORE).any()
        return {"ce": F.cross_entropy(output.logits, batch.labels),
                "seeds": F.cross_entropy(pixel, seeds, ignore_index=IGNORE) if seeded else pixel.sum() * 0}

    def loss(self, output: Output, batch):
        terms = self.loss_terms(output, batch)
        return terms["ce"] + self.params.seed_weight * terms["seeds"]

    def cams(self, model, images, targets):
        return model.head.pixel(model.backbone(images)).float().softmax(dim=1)[:, 1]

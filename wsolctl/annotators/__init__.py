"""Pseudo-annotators: plugins (entry point group ``wsolctl.annotators``) that draw a mask on an image
without a pathologist, for model selection (``b-pseudo``) and thresholds (``val-pseudo``) in a study
with image labels only.

Inspired by, not the same as, Murtaza et al.'s protocol (WACV 2025, "A realistic protocol for
evaluation of weakly supervised object localization"): there, each validation image gets **one
pseudo-box built independently of any WSOL model being evaluated** (selective search, a region
proposal network or CLIP), and models are selected by their box accuracy against those boxes, on
natural images (CUB, ILSVRC). ``b-pseudo`` differs: its pseudo-*masks* come from the annotator the
recipe names (a stain heuristic, an earlier model's maps, or, to calibrate, the true masks), models
are selected by PxAP against them, and the annotator is only as independent as it is: ``run-cams``
uses a trained model, so it must not be the method being selected (a validation error: selecting a
method against its own maps favours the checkpoint closest to them).

An annotator is a small class: ``Params`` (its settings, validated in the recipe), ``bind(device,
load_model)`` (load what it needs once, e.g. a reference model with the loader the engine hands it:
``load_model(run, method, selection, device)`` → (model, method plugin)) and ``masks(images, labels)`` → ``(N, H, W)`` bool
at the images' size, ``images`` normalised as fed to the model (the backbone's mean / std: ``Annotator.normalize``). Importing this
module imports no torch (``wsolctl validate`` stays instant).

Built in:

* ``haematoxylin``: no model. Colour deconvolution (Ruifrok & Johnston 2001, ``skimage.color.rgb2hed``)
  gives the haematoxylin density per pixel; it is smoothed with a Gaussian (``sigma`` px) and
  thresholded per image by Otsu's rule on the smoothed density (or a fixed ``threshold`` t).
  ``foreground: dense`` (default): foreground = density > t, for tissue where the region of interest
  is the nuclei-dense one (GlaS: glands' epithelium and tumour against stroma and lumen).
  ``foreground: sparse``: foreground = density ≤ t, for tissue where the background is the denser
  (lymph nodes, CAMELYON16: lymphocytes are the densest tissue; metastases have larger, paler
  nuclei); glass, fat and lumen, the palest of all, then count as foreground too. A stain heuristic
  in both cases, not a model of the lesion. A constant image gives an empty mask.
* ``run-cams``: the thresholded maps of a model trained earlier: the checkpoint that ``selection``
  (default ``b-cl``: needs no mask) picked for ``method`` in the finished run directory ``run``
  (``OUT/runs/<id>``), each map min-max normalised (CAM-type) and thresholded per image by Otsu (or
  at a fixed ``threshold``), target = the image's label. Not model-independent, unlike the WACV 2025
  pseudo-boxes: its ``method`` must not be one the recipe selects by ``b-pseudo``.

* ``valpx-masks``: the valpx true masks themselves (declares ``reads_masks``). Not annotation-free:
  a calibration, with it ``b-pseudo`` must select exactly as ``b-loc`` and ``val-pseudo`` give
  ``val-masks``' τ (the upper bound of any annotator, as U-Net is of the methods).

``empty_classes`` (the first two): classes whose pseudo-mask is all background whatever the image shows, e.g.
``[0]`` for CAMELYON16's normal patches (GlaS: none, benign glands are foreground too).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wsolctl._lazy import torch
from wsolctl.plugins import NoParams, Plugin
from wsolctl.recipe.base import NEW_DEFAULT
from wsolctl.selection import RuleName

Threshold = Union[Literal["otsu"], float]
# (run directory, method label or None, selection rule, device) -> (trained model in eval mode, method plugin)
ModelLoader = Callable[[str, Optional[str], str, Any], tuple[Any, Any]]


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: Threshold = Field("otsu", description="otsu (per image) or a fixed value")
    empty_classes: list[int] = Field([], description="classes whose pseudo-mask is all background")


class HaematoxylinParams(_Common):
    sigma: float = Field(2.0, ge=0, description="Gaussian smoothing of the density, in pixels")
    foreground: Literal["dense", "sparse"] = Field(
        "dense", json_schema_extra=NEW_DEFAULT,
        description="dense: foreground = density above the threshold (GlaS: epithelium, tumour); sparse: at or "
                    "below it (lymph nodes, where lymphocytes are the densest tissue)")


class RunCamsParams(_Common):
    run: str = Field(min_length=1, description="a finished run directory OUT/runs/<id> of an earlier study")
    method: Optional[str] = Field(None, description="method label in that run; default: its first")
    selection: RuleName = "b-cl"

    @field_validator("run")
    @classmethod
    def _finished(cls, run: str) -> str:
        if not Path(run).is_dir():  # whether it finished: said by the model loader
            raise ValueError(f"{run}: not a finished run directory (OUT/runs/<id>)")
        return run


class Annotator(Plugin):
    """Base class: thresholds a per-image score map (``scores``) and empties ``empty_classes``.
    ``reads_masks``: the annotator is handed the split's true masks (``masks(images, labels, truth)``;
    None for the others)."""

    Params = _Common
    reads_masks: ClassVar[bool] = False

    def __init__(self, params: Optional[BaseModel] = None, normalize=None):
        from wsolctl.recipe.base import IMAGENET

        self.params = params if params is not None else self.Params()
        self.normalize = IMAGENET if normalize is None else normalize  # of the images it is handed

    @classmethod
    def source_method(cls, params: BaseModel) -> Optional[str]:
        """The method whose maps the pseudo-masks come from (None: no model, or not named), so that
        validation can refuse to select that method against its own maps."""
        return None

    def bind(self, device, load_model: ModelLoader) -> None:
        """Load what the annotator needs (called once before :meth:`masks`); ``load_model``: how to
        load a trained model, given by the engine."""

    def scores(self, images, labels):
        """(N, H, W) float scores; foreground where above the threshold rule."""
        raise NotImplementedError

    def foreground(self, scores):
        """(N, H, W) bool: where ``scores`` pass the threshold rule."""
        return threshold_maps(scores, self.params.threshold)

    def masks(self, images, labels, truth=None):
        masks = self.foreground(self.scores(images, labels).float())
        if self.params.empty_classes:
            empty = torch.isin(labels.to(masks.device), torch.tensor(self.params.empty_classes, device=masks.device))
            masks[empty] = False
        return masks


def otsu_thresholds(maps: torch.Tensor) -> torch.Tensor:
    """(N,) Otsu threshold of each (H, W) map (``skimage.filters.threshold_otsu``, 256 bins over the
    map's range); foreground = map > t, so a constant map gives an empty mask."""
    from skimage.filters import threshold_otsu

    values = maps.detach().float().cpu().numpy()
    return torch.tensor([float(threshold_otsu(m)) for m in values], dtype=maps.dtype, device=maps.device)


def threshold_maps(scores, rule: Threshold):
    """Binary masks ``scores > t``, ``t`` per image by Otsu (``rule="otsu"``) or fixed."""
    if rule == "otsu":
        return scores > otsu_thresholds(scores).view(-1, 1, 1)
    return scores > float(rule)


class Haematoxylin(Annotator):
    """Haematoxylin density by colour deconvolution, smoothed, thresholded per image."""

    Params = HaematoxylinParams

    def foreground(self, scores):
        dense = super().foreground(scores)
        return dense if self.params.foreground == "dense" else ~dense

    def scores(self, images, labels):
        import numpy as np
        from scipy.ndimage import gaussian_filter
        from skimage.color import rgb2hed

        from wsolctl.data.images import unnormalize

        rgb = unnormalize(images.detach().float().cpu(), self.normalize).permute(0, 2, 3, 1).numpy()
        density = np.stack([rgb2hed(image)[..., 0] for image in rgb])
        if self.params.sigma > 0:
            density = gaussian_filter(density, sigma=(0, self.params.sigma, self.params.sigma))
        return torch.from_numpy(density).to(images.device)


class RunCams(Annotator):
    """Thresholded maps of an earlier run's selected model."""

    Params = RunCamsParams

    @classmethod
    def source_method(cls, params: BaseModel) -> Optional[str]:
        # only a named method: the run's default one is known once the engine loads it (no run file is
        # read at validation, which stays below the engine)
        return params.method.split("[", 1)[0] if params.method else None

    def bind(self, device, load_model: ModelLoader) -> None:
        self.model, self.method = load_model(self.params.run, self.params.method, self.params.selection, device)

    def scores(self, images, labels):
        from wsolctl.metrics import prepare_cams

        with torch.no_grad():
            cams = self.method.cams(self.model, images, labels.to(images.device))
        return prepare_cams(cams, images.shape[-2:], self.method.map_kind)


class ValpxMasks(Annotator):
    """The true masks as pseudo-masks (a calibration of the pipeline, not annotation-free)."""

    Params = NoParams
    reads_masks = True

    def masks(self, images, labels, truth=None):
        return truth.bool()

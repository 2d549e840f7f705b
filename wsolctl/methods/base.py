"""The method plugin interface (plugin API version 2).

A method is a small, torch-free-at-import class; the shared engine (``wsolctl.engine``) owns the
training loop, evaluation, selection and outputs. A method says only what differs:

- ``Params``: a pydantic model of its hyper-parameters (defaults from the survey).
- ``adapt_backbone(backbone, info)``: change the backbone (e.g. ADL inserts layers) or read what the
  decoder needs from it, using only its declaration ``info`` (:class:`BackboneInfo`: stages,
  layout), never its modules' names; identity by default. (A plugin written for the one-argument
  form ``adapt_backbone(backbone)`` still works: the engine passes ``info`` only to methods that
  take it.)
- ``build_head(in_channels, num_classes)``: the trainable layers on top of the backbone features.
- ``augment(batch)``: training-only batch transform (e.g. HaS erasing, CutMix); identity by default.
- ``forward(model, images, labels)``: logits (and class maps, if the head makes them).
- ``loss(output, batch)``: the training loss (cross-entropy on ``batch.labels`` by default).
- ``needs_masks``: True for fully-supervised methods (the training batches then carry masks).
- ``survey_selection``: the selection rules the survey applies to this method; the report marks
  the others (NEGEV and U-Net: B-LOC only, so their B-CL rows are marked as an extension).
- ``single_lr`` / ``head_is_decoder``: the optimiser groups. By default the head and the backbone's
  ``classifier_prefixes`` train at ``lr × lr_classifier_ratio``, the rest at ``lr`` (the survey).
  ``single_lr``: every parameter at ``lr`` (the reference's U-Net). ``head_is_decoder``: the head
  trains at the lr the backbone declares for decoders (``Backbone.decoder_at_classifier_lr``; NEGEV).
- ``prerequisite()`` / ``load_prerequisite(model, state)``: a method built on another trained
  classifier (NEGEV on CAM's) names it; the engine trains it first, once, and hands over the state
  dict of its ``prerequisite_rule`` checkpoint.
- ``cams(model, images, targets)``: one localization map per image, ``(N, h, w)``.
- ``map_kind``: what those maps are. ``"cam"`` (default): activations on any scale, min-max
  normalised per image before scoring, as the survey does for CAM-type maps. ``"probability"``:
  foreground probabilities in [0, 1] (NEGEV, U-Net), scored raw as the survey's reference code does:
  PxAP pools all pixels of a split under shared thresholds, so a per-image rescale would change it.
- ``training_key()``: what identifies the classifier it trains. Methods with equal keys on the same
  backbone and data share a single training run ("train once, explain many").
- ``unsupported(backbone)``: a reason string when it cannot run on a backbone, decided from what
  the backbone declares (:class:`wsolctl.backbones.base.BackboneInfo`: CNN or token model, stages,
  prefix tokens, stage layout), never from its name.
- ``trains_on_features``: True when the head learns from the backbone's output map alone
  (``forward`` passes the images through ``model.backbone`` once and uses nothing else of them): with
  a frozen backbone the engine may then train it on stored encoder outputs (``train.feature_cache``).
  :meth:`Method.feature_cache_refusal` says why a method cannot, from what it declares.
- ``kind`` and ``survey_rank``: the report's grouping (bottom-up / top-down / fully supervised) and
  order within the group (the survey's; other plugins come after, by name).
- ``in_survey``: True only for the survey's own methods (its Table 1 and the U-Net bound). It counts
  only where a class sets it itself (a subclass of a survey method is not the survey's method); every
  other method is reported in the report's "Beyond the survey" group, after the survey's tables.

See docs/plugins.md for a worked example.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Optional, Protocol, get_args

from pydantic import BaseModel

from wsolctl._lazy import F
from wsolctl.methods.ops import select
from wsolctl.plugins import API_VERSION, NoParams, Plugin, name_of  # noqa: F401  (NoParams: for plugins)
from wsolctl.recipe.base import numbers

if TYPE_CHECKING:
    from torch import Tensor, nn

    from wsolctl.backbones.base import BackboneInfo

Kind = Literal["bottom-up", "top-down", "fully-supervised"]
KINDS: tuple[str, ...] = get_args(Kind)


@dataclass
class Batch:
    """A training batch. ``masks`` is set only for methods with ``needs_masks``; ``extras`` carries
    what ``augment`` wants ``loss`` to see (e.g. CutMix's partner labels and mixing ratio)."""

    images: "Tensor"
    labels: "Tensor"
    masks: Optional["Tensor"] = None  # (N, H, W) bool
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Output:
    """What a method's forward returns."""

    logits: "Tensor"
    class_maps: Optional["Tensor"] = None  # (N, num_classes, h, w) when the head computes them
    extras: dict[str, Any] = field(default_factory=dict)


class Model(Protocol):
    """What a method sees of the model it is part of (the engine's ``WSOLModel``: the adapted
    backbone, the method's head, and the method itself)."""

    backbone: "nn.Module"
    head: "nn.Module"
    method: "Method"
    cam_layer: str

    def __call__(self, images: "Tensor", labels: Optional["Tensor"] = None) -> Output: ...


class Method(Plugin):
    api_version: ClassVar[int] = API_VERSION
    kind: ClassVar[Kind] = "bottom-up"  # the report's method groups, in this order: KINDS
    in_survey: ClassVar[bool] = False  # one of the survey's methods: set on the class itself, never inherited
    for_histology: ClassVar[bool] = False  # designed for histology images (the survey's Sec. 4.1 compares these)
    needs_masks: ClassVar[bool] = False
    map_kind: ClassVar[Literal["cam", "probability"]] = "cam"  # how cams() maps are scored and drawn
    prerequisite_rule: ClassVar[str] = "b-loc"  # which selected checkpoint of the prerequisite
    survey_selection: ClassVar[tuple[str, ...]] = ("b-loc", "b-cl")  # the rules the survey selects it by
    single_lr: ClassVar[bool] = False  # every parameter at train.lr (the reference's segmentation models)
    head_is_decoder: ClassVar[bool] = False  # the trainable head is a decoder: the backbone's decoder lr
    trains_on_features: ClassVar[bool] = False  # the head learns from model.backbone(images) alone
    report_note: ClassVar[str] = ""  # a convention readers need, added to the caption of its group's first table

    def __init__(self, params: Optional[BaseModel] = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def unsupported(cls, backbone: "BackboneInfo") -> Optional[str]:
        """Why this method cannot run on a backbone that declares ``backbone``, or None when it can."""
        return None

    def backbone_modules(self) -> tuple[str, ...]:
        """Backbone modules this method's params name (e.g. a top-down method's ``layer``): checked
        against the backbone's modules when the recipe is validated. Default: none."""
        return ()

    @classmethod
    def feature_cache_refusal(cls) -> Optional[str]:
        """Why this method cannot train on stored encoder outputs, or None when it can: its training
        must leave the input images and the backbone as they are and use nothing but the backbone's map."""
        if cls.augment is not Method.augment:
            return "its training changes the input images (it overrides augment), so they cannot be encoded once"
        if cls.adapt_backbone is not Method.adapt_backbone:
            return "it changes the backbone (it overrides adapt_backbone)"
        if not cls.trains_on_features:
            return "it does not declare trains_on_features (its training uses more than the backbone's output map)"
        return None

    def training_key(self) -> dict:
        return {"method": name_of(self), "params": numbers(self.params)}  # new defaults left out, as in run ids

    def prerequisite(self) -> Optional[dict]:
        """A method spec (``{"name": ..., "params": {...}}``) whose trained model this method needs,
        trained on the same data, backbone and settings; None when it needs none."""
        return None

    def load_prerequisite(self, model: "Model", state: dict) -> None:
        """Receive the prerequisite's selected state dict (keys of its own model) before training."""

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch's training and evaluation (and with the selected epoch before
        the test), for per-epoch schedules. Must depend on ``epoch`` only, so resumed runs match."""

    def adapt_backbone(self, backbone: "nn.Module", info: "BackboneInfo") -> "nn.Module":
        """The backbone this method trains on (``backbone`` itself by default); ``info`` is its
        declaration: where its stages are, their channels and reductions, its stage layout."""
        return backbone

    def build_head(self, in_channels: int, num_classes: int) -> "nn.Module":
        raise NotImplementedError

    def augment(self, batch: Batch) -> Batch:
        """Training-only change of a batch (the engine never calls it during evaluation)."""
        return batch

    def forward(self, model: "Model", images: "Tensor", labels: Optional["Tensor"] = None) -> Output:
        """``labels`` is given during training only; use ``model.backbone`` and ``model.head``."""
        raise NotImplementedError

    def loss(self, output: Output, batch: Batch) -> "Tensor":
        return F.cross_entropy(output.logits, batch.labels)

    def cams(self, model: "Model", images: "Tensor", targets: "Tensor") -> "Tensor":
        """Default: the head's class map of each image's target class."""
        output = model(images)
        return select(output.class_maps, targets)

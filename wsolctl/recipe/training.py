"""The recipe's ``train`` section (and a method's partial override of it): optimizer, schedule,
augmentation, epochs. Defaults: the survey's protocol (see :mod:`wsolctl.recipe.schema`)."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import (
    Field,
)

from wsolctl.recipe.base import NEW_DEFAULT, Strict, partial


class Optimizer(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    lr_classifier_ratio: float = Field(10.0, gt=0, description="lr multiplier of the classifier part (survey: 10).")


class Scheduler(Strict):
    name: Literal["step", "cosine", "constant"] = "step"
    step_size: int = Field(40, ge=1, description="epochs between decays (step)")
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(1e-6, ge=0)


class Augment(Strict):
    resize: Optional[int] = Field(None, ge=8, description="resize side before the random crop; default image_size·256/224")
    crop: bool = True
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.5, ge=0, le=1)
    color_jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.05)


class Train(Strict):
    epochs: int = Field(150, ge=0)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    augment: Augment = Field(default_factory=Augment)
    amp: Literal["auto", True, False] = Field("auto", description="mixed precision; auto = on for CUDA only")
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    feature_cache: bool = Field(
        False, json_schema_extra=NEW_DEFAULT,
        description="frozen backbones (freeze: true): encode the training set and valcl once, store the output maps "
        "on disk next to the data, train the heads and score valcl accuracy on them (valpx maps, test and predict "
        "still run the whole model)")
    feature_cache_dir: Optional[str] = Field(
        None, json_schema_extra={"display_only": True},
        description="feature_cache: the folder caches are kept in (default: $WSOLCTL_FEATURE_CACHE, else "
        "<dataset root>/features, which fails on read-only shared storage); not part of run ids")
    feature_copies: int = Field(
        1, ge=1, json_schema_extra=NEW_DEFAULT,
        description="feature_cache: augmented copies of the training set encoded once; epoch e trains on copy "
        "(e-1) mod feature_copies. With a deterministic augment (crop: false, no flips, no colour jitter) one "
        "copy gives exactly the uncached training inputs")


TrainOverride = partial(Train)

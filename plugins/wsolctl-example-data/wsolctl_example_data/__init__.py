"""A dataset and a backbone as third-party plugins (example).

A dataset plugin writes the fold format under ``dataset.root`` in ``prepare(root, fold)`` and says
where it is with ``folds_dir(root)``; a backbone plugin builds an ``nn.Sequential`` with an
``out_channels`` attribute and declares what it is (``info()``: CNN or token model, stages, default
CAM layer). Everything else comes from wsolctl.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import nn
from wsolctl.backbones.base import Backbone, BackboneInfo, Stage, load_local_weights, sequential
from wsolctl.data.folds import SPLITS, Sample, write_encoding, write_split


class SquaresParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(32, ge=16, le=256, description="image side in pixels")
    per_class: int = Field(4, ge=1, le=100, description="images per class in every split")
    seed: int = Field(0, ge=0, description="generator seed")


class Squares:
    """Class 1 (``square``): a bright square, which is its pixel mask, on noise; class 0 (``plain``):
    noise only."""

    Params = SquaresParams

    def __init__(self, params: SquaresParams | None = None):
        self.params = params or SquaresParams()

    def folds_dir(self, root: Path) -> Path:
        return Path(root)

    def prepare(self, root: Path, fold: int) -> None:
        import numpy as np

        root = Path(root)
        if (root / "encoding.yaml").is_file():  # written last: the data set is complete
            return
        rng = np.random.default_rng(self.params.seed)
        for split in SPLITS:
            samples = [self._render(root, rng, f"{split}-{label}-{i}", label)
                       for label in (0, 1) for i in range(self.params.per_class)]
            write_split(root, fold, split, samples)
        write_encoding(root, {"plain": 0, "square": 1})

    def _render(self, root: Path, rng, stem: str, label: int) -> Sample:
        import numpy as np
        from PIL import Image

        size = self.params.size
        image = rng.uniform(0, 0.4, (size, size, 3))
        mask = np.zeros((size, size), dtype=bool)
        if label:
            side = size // 3
            top, left = rng.integers(0, size - side, 2)
            mask[top:top + side, left:left + side] = True
            image[mask] = rng.uniform(0.8, 1.0, (int(mask.sum()), 3))
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(root / "images" / f"{stem}.png")
        masks: tuple[str, ...] = ()
        if label:
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "images" / f"{stem}-mask.png")
            masks = (f"images/{stem}-mask.png",)
        return Sample(f"images/{stem}.png", label, (size, size), masks)


class TinyCNN(Backbone):
    """Two 3×3 conv stages with a 2× max pool between them (output stride 2)."""

    classifier_prefixes = ("stage2",)

    def info(self) -> BackboneInfo:
        """What methods decide support from: a CNN of two stages (channels, cumulative stride)."""
        return BackboneInfo("cnn", (Stage("stage1", 16, 2), Stage("stage2", 32, 2)), cam_layer="stage2")

    def build(self, pretrained: Union[bool, str] = False) -> "nn.Sequential":
        module = sequential([
            ("stage1", nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))),
            ("stage2", nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())),
        ], out_channels=32)
        if pretrained:
            load_local_weights(module, Path(pretrained))
        return module

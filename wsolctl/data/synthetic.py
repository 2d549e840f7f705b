"""Built-in procedural histology datasets (nothing to download).

``synthetic-glas`` (benign/malignant colon glands) and ``synthetic-camelyon`` (normal/metastatic
lymph-node patches) are rendered by :mod:`wsolctl.data.histology`, written once to the dataset root
in the fold format and reused. Splits mirror the survey's protocol: every fold shares the test set;
the training images are split 80/20 per class into train/valcl, and valpx takes ``valpx_per_class``
images per class from valcl (survey: 3 for GlaS, 5 for CAMELYON16).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, ClassVar, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wsolctl.data.folds import FoldDataset, Sample, write_encoding, write_split
from wsolctl.errors import DataError
from wsolctl.io import atomic_directory
from wsolctl.plugins import name_of

STAMP = "wsolctl-dataset.json"


class SyntheticParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, ge=0, description="generator seed (independent of the training seed)")
    size: int = Field(128, ge=32, le=1024, description="side of the rendered images in pixels")
    train_per_class: int = Field(40, ge=3, description="images per class before the train/valcl split")
    test_per_class: int = Field(20, ge=1)
    folds: int = Field(5, ge=1, le=10)
    valcl_fraction: float = Field(0.2, gt=0, lt=1)
    valpx_per_class: int = Field(3, ge=1)
    roi_scale: float = Field(1.0, gt=0, le=4, description="scales gland / tumour-cluster size")
    similarity: float = Field(0.0, ge=0, le=1, description="0 = ROI clearly distinct, 1 = ROI looks like background")
    stain_jitter: float = Field(0.15, ge=0, le=1)


class _Synthetic(FoldDataset):
    Params = SyntheticParams
    classes: ClassVar[tuple[str, str]] = ("", "")
    prefix: ClassVar[str] = ""

    def __init__(self, params: Optional[SyntheticParams] = None):
        self.params = params or self.Params()

    def folds_dir(self, root: Path) -> Path:
        return Path(root)

    def missing(self, root: Path) -> Optional[str]:
        return None  # generated into the root on first use

    def renderer(self) -> Callable:
        raise NotImplementedError

    def prepare(self, root: Path, fold: int) -> None:
        """Generate the dataset into ``root`` unless an identical one is already there."""
        root = Path(root)
        stamp = {"dataset": name_of(self), "params": self.params.model_dump(mode="json"), "format": 1}
        if (root / STAMP).is_file():
            found = json.loads((root / STAMP).read_text())
            if found != stamp:
                raise DataError(f"{root} already holds a different generated dataset ({found['dataset']} "
                                 f"with other params); use another dataset.root or delete it")
        else:
            self._generate(root, stamp)
        if fold >= self.params.folds:
            raise DataError(f"fold {fold} does not exist: {root} has {self.params.folds} folds")

    def _generate(self, root: Path, stamp: dict) -> None:
        if root.exists() and any(root.iterdir()):
            raise DataError(f"{root}: not empty and not a wsolctl dataset; use another dataset.root")
        with atomic_directory(root) as tmp:  # an interrupted run leaves no half dataset
            train = self._render_set(tmp, "train", self.params.train_per_class, seed_offset=0)
            test = self._render_set(tmp, "test", self.params.test_per_class, seed_offset=1_000_000)
            write_encoding(tmp, {name: i for i, name in enumerate(self.classes)})
            for fold in range(self.params.folds):
                for split, samples in self._split(train, fold).items():
                    write_split(tmp, fold, split, samples)
                write_split(tmp, fold, "test", test)
            (tmp / STAMP).write_text(json.dumps(stamp, indent=2))

    def _render_set(self, tmp: Path, split: str, per_class: int, seed_offset: int) -> list[Sample]:
        from PIL import Image

        render, p = self.renderer(), self.params
        (tmp / "images").mkdir(exist_ok=True)
        (tmp / "masks").mkdir(exist_ok=True)
        samples = []
        for label in (0, 1):
            for i in range(per_class):
                stem = f"{split}_{self.classes[label]}_{i:04d}"
                seed = p.seed * 10_000_019 + seed_offset + label * 100_003 + i
                rgb, mask = render(seed, p.size, bool(label), roi_scale=p.roi_scale,
                                   similarity=p.similarity, stain_jitter=p.stain_jitter)
                Image.fromarray(rgb).save(tmp / "images" / f"{stem}.png")
                masks: tuple[str, ...] = ()
                if mask.any():
                    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "masks" / f"{stem}.png")
                    masks = (f"masks/{stem}.png",)
                samples.append(Sample(f"images/{stem}.png", label, (p.size, p.size), masks))
        return samples

    def _split(self, train: list[Sample], fold: int) -> dict[str, list[Sample]]:
        """Stratified 80/20 train/valcl split (different per fold), valpx ⊂ valcl."""
        rng = np.random.default_rng([self.params.seed, fold])
        out: dict[str, list[Sample]] = {"train": [], "valcl": [], "valpx": []}
        for label in (0, 1):
            items = [s for s in train if s.label == label]
            order = rng.permutation(len(items))
            n_val = max(1, round(len(items) * self.params.valcl_fraction))
            val = [items[i] for i in order[:n_val]]
            out["valcl"] += val
            out["train"] += [items[i] for i in order[n_val:]]
            out["valpx"] += val[: self.params.valpx_per_class]
        return out


class SyntheticGlaS(_Synthetic):
    """Benign (regular round glands) vs malignant (irregular crowded glands); mask = glands."""

    classes = ("benign", "malignant")
    survey_rank = 2

    def renderer(self):
        from wsolctl.data.histology import render_glas

        return render_glas


class CamelyonParams(SyntheticParams):
    valpx_per_class: int = Field(5, ge=1)


class SyntheticCamelyon(_Synthetic):
    """Normal lymph node vs metastatic patches; mask = tumour clusters (empty for normal)."""

    Params = CamelyonParams
    classes = ("normal", "tumor")
    survey_rank = 4

    def renderer(self):
        from wsolctl.data.histology import render_camelyon

        return render_camelyon

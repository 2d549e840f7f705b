"""GlaS (Warwick-QU gland segmentation, 2015) as distributed → the fold format.

``dataset.root`` is the official release folder as unpacked (``Warwick_QU_Dataset_(Released_2016_07_08)``):
``train_N.bmp``, ``testA_N.bmp``, ``testB_N.bmp``, each with ``*_anno.bmp`` (gland instance labels;
any non-zero pixel is gland), and ``Grade.csv`` (``name, patient ID, grade (GlaS), grade
(Sirinukunwattana et al. 2015)``; headers and values carry stray spaces, which are stripped).

Folds (survey protocol): the 85 training images are split per class into train / valcl with
``ceil(valcl_fraction × n)`` validation images per class (20 % → 8 benign + 10 malignant = 18, train
67), a different random split per fold; valpx = ``valpx_per_class`` (3) images per class drawn from
valcl; test = testA + testB (80) in every fold. Labels {benign: 0, malignant: 1}; the mask of an
image is its ``*_anno.bmp``. The fold files are written once into ``folds_dir`` (default
``<root>/wsolctl-folds``), atomically, with a stamp; paths in them are relative to the root.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wsolctl.data.folds import FoldDataset, Sample, write_encoding, write_split
from wsolctl.errors import DataError
from wsolctl.io import atomic_directory

STAMP = "wsolctl-glas.json"
CLASSES = {"benign": 0, "malignant": 1}
GRADE_CSV = "Grade.csv"
NAME_COLUMN, GRADE_COLUMN = "name", "grade (GlaS)"
_NAME = re.compile(r"^(train|testA|testB)_(\d+)$")


class GlaSParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folds_dir: Optional[str] = Field(None, description="where to write the fold files; default <root>/wsolctl-folds")
    seed: int = Field(0, ge=0, description="seed of the train/valcl/valpx draws (independent of the training seed)")
    folds: int = Field(5, ge=1, le=20)
    valcl_fraction: float = Field(0.2, gt=0, lt=1, description="ceil(fraction × n) training images per class go to valcl")
    valpx_per_class: int = Field(3, ge=1, description="valpx images per class drawn from valcl (survey: 3)")


def read_grades(path: Path) -> dict[str, str]:
    """``{image name: benign | malignant}`` from Grade.csv (spaces around headers/values ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (the Warwick GlaS release ships it next to the images)")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise DataError(f"{path}: empty file")
    header = [cell.strip() for cell in rows[0]]
    lowered = [cell.lower() for cell in header]
    missing = [c for c in (NAME_COLUMN, GRADE_COLUMN) if c.lower() not in lowered]
    if missing:
        raise DataError(f"{path}:1: missing column(s) {', '.join(repr(m) for m in missing)} (found: {', '.join(header)})")
    name_at, grade_at = lowered.index(NAME_COLUMN.lower()), lowered.index(GRADE_COLUMN.lower())
    out: dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        row = [cell.strip() for cell in row]
        if not any(row):
            continue
        if len(row) <= max(name_at, grade_at):
            raise DataError(f"{path}:{number}: expected {len(header)} fields, got {len(row)}")
        name, grade = row[name_at], row[grade_at].lower()
        if not _NAME.match(name):
            raise DataError(f"{path}:{number}: name {name!r} is not train_N, testA_N or testB_N")
        if grade not in CLASSES:
            raise DataError(f"{path}:{number}: {GRADE_COLUMN} must be benign or malignant, got {row[grade_at]!r}")
        if name in out:
            raise DataError(f"{path}:{number}: {name!r} is listed twice")
        out[name] = grade
    if not out:
        raise DataError(f"{path}: no images listed")
    return out


def _order(name: str) -> tuple[int, int]:
    match = _NAME.match(name)
    return (("train", "testA", "testB").index(match.group(1)), int(match.group(2)))


class GlaS(FoldDataset):
    """The official GlaS release folder; fold files generated once into ``folds_dir``."""

    Params = GlaSParams
    name = "glas"
    survey_rank = 1

    def __init__(self, params: Optional[GlaSParams] = None):
        self.params = params or GlaSParams()

    def folds_dir(self, root: Path) -> Path:
        return Path(self.params.folds_dir) if self.params.folds_dir else Path(root) / "wsolctl-folds"

    def missing(self, root: Path) -> Optional[str]:
        return None if Path(root).is_dir() else f"{root}: GlaS folder not found; point dataset.root at the unpacked release"

    def prepare(self, root: Path, fold: int) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: GlaS folder not found")
        if fold >= self.params.folds:
            raise DataError(f"fold {fold} does not exist: params.folds is {self.params.folds}")
        csv_path = root / GRADE_CSV
        grades = read_grades(csv_path)
        stamp = {"dataset": self.name, "format": 1, "params": self.params.model_dump(mode="json", exclude={"folds_dir"}),
                 "grades": hashlib.sha256(csv_path.read_bytes()).hexdigest()}
        target = self.folds_dir(root)
        if (target / STAMP).is_file():
            try:
                if json.loads((target / STAMP).read_text()) == stamp:
                    return
            except json.JSONDecodeError:
                pass
        samples = self._samples(root, grades)
        self._write(target, samples, stamp)

    def _samples(self, root: Path, grades: dict[str, str]) -> list[Sample]:
        from PIL import Image

        out = []
        for name in sorted(grades, key=_order):
            image, anno = root / f"{name}.bmp", root / f"{name}_anno.bmp"
            if not image.is_file():
                raise DataError(f"{image}: listed in {root / GRADE_CSV} but not found")
            if not anno.is_file():
                raise DataError(f"{anno}: annotation of {image.name} not found")
            try:
                with Image.open(image) as im, Image.open(anno) as an:
                    size, anno_size = im.size, an.size
            except OSError as exc:
                raise DataError(f"{image}: unreadable image ({exc})") from None
            if size != anno_size:
                raise DataError(f"{anno}: size {anno_size} differs from {image.name}'s {size}")
            out.append(Sample(image.name, CLASSES[grades[name]], size, (anno.name,)))
        return out

    def _split(self, train: list[Sample], fold: int) -> dict[str, list[Sample]]:
        p = self.params
        rng = np.random.default_rng([p.seed, fold])
        pick = np.random.default_rng([p.seed, fold, 1])
        out: dict[str, list[Sample]] = {"train": [], "valcl": [], "valpx": []}
        for label in CLASSES.values():
            items = [s for s in train if s.label == label]
            if len(items) < 2:
                raise DataError(f"GlaS training set has {len(items)} image(s) of class {label}; need at least 2")
            order = rng.permutation(len(items))
            n_val = min(max(1, math.ceil(len(items) * p.valcl_fraction)), len(items) - 1)
            val = sorted(order[:n_val].tolist())
            out["valcl"] += [items[i] for i in val]
            out["train"] += [items[i] for i in sorted(order[n_val:].tolist())]
            chosen = pick.choice(len(val), size=min(p.valpx_per_class, len(val)), replace=False)
            out["valpx"] += [items[val[i]] for i in sorted(chosen.tolist())]
        return out

    def _write(self, target: Path, samples: list[Sample], stamp: dict) -> None:
        train = [s for s in samples if s.image.startswith("train_")]
        test = [s for s in samples if not s.image.startswith("train_")]
        if not train or not test:
            raise DataError(f"GlaS needs train_* and testA_*/testB_* images; found {len(train)} train, {len(test)} test")
        if target.exists() and not (target / STAMP).is_file() and any(target.iterdir()):
            raise DataError(f"{target}: exists and was not written by wsolctl; choose another folds_dir")
        with atomic_directory(target) as tmp:
            write_encoding(tmp, CLASSES)
            for fold in range(self.params.folds):
                for split, items in self._split(train, fold).items():
                    write_split(tmp, fold, split, items)
                write_split(tmp, fold, "test", test)
            (tmp / STAMP).write_text(json.dumps(stamp, indent=2))

"""The fold format of wsolevaluation and the histology survey, read and written as-is.

Layout (``folds_dir`` defaults to the dataset root)::

    encoding.yaml                          {benign: 0, malignant: 1}
    fold-K/{train,valcl,valpx,test}/
        image_ids.txt                      relative/image/path
        class_labels.txt                   relative/image/path,label
        image_sizes.txt                    relative/image/path,width,height
        localization.txt                   relative/image/path,mask_path,ignore_path  (one line per
                                           mask instance; an empty mask_path = an all-negative mask)

Image and mask paths are relative to the dataset root and must stay inside it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field

from wsolctl.errors import FoldFormatError
from wsolctl.plugins import Plugin

SPLITS = ("train", "valcl", "valpx", "test")


@dataclass(frozen=True)
class Sample:
    image: str
    label: int
    size: tuple[int, int] = (0, 0)  # (width, height) as listed in image_sizes.txt
    masks: tuple[str, ...] = field(default=())  # instance mask paths; empty = no foreground
    ignore: Optional[str] = None


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise FoldFormatError(f"{path}: file not found")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            out.append((number, [part.strip() for part in line.split(",")]))
    return out


def safe_join(root: Path, relative: str, where: str) -> Path:
    """``root/relative``, refusing absolute paths and ``..`` escapes (paths come from data files)."""
    candidate = (root / relative).resolve()
    if os.path.isabs(relative) or not candidate.is_relative_to(root.resolve()):
        raise FoldFormatError(f"{where}: path {relative!r} leaves the dataset root {root}")
    return candidate


def read_split(folds_dir: Path, fold: int, split: str) -> list[Sample]:
    """Read one split of one fold."""
    split_dir = Path(folds_dir) / f"fold-{fold}" / split
    ids = [parts[0] for _, parts in _lines(split_dir / "image_ids.txt")]
    labels = _keyed(split_dir / "class_labels.txt", 2)
    sizes = _keyed(split_dir / "image_sizes.txt", 3, required=False)
    masks, ignores = _localization(split_dir / "localization.txt")
    samples = []
    for image in ids:
        if image not in labels:
            raise FoldFormatError(f"{split_dir / 'class_labels.txt'}: no label for {image!r}")
        size = tuple(int(v) for v in sizes[image]) if image in sizes else (0, 0)
        samples.append(Sample(image, int(labels[image][0]), size, tuple(masks.get(image, ())), ignores.get(image)))
    return samples


def _keyed(path: Path, width: int, required: bool = True) -> dict[str, list[str]]:
    if not required and not path.is_file():
        return {}
    out = {}
    for number, parts in _lines(path):
        if len(parts) != width:
            raise FoldFormatError(f"{path}:{number}: expected {width} comma-separated fields, got {len(parts)}")
        try:
            [int(v) for v in parts[1:]]
        except ValueError:
            raise FoldFormatError(f"{path}:{number}: expected integers after the path") from None
        out[parts[0]] = parts[1:]
    return out


def _localization(path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    masks: dict[str, list[str]] = {}
    ignores: dict[str, str] = {}
    if not path.is_file():
        return masks, ignores
    for number, parts in _lines(path):
        if len(parts) not in (2, 3):
            raise FoldFormatError(f"{path}:{number}: expected image,mask_path[,ignore_path]")
        instances = masks.setdefault(parts[0], [])
        if parts[1]:
            instances.append(parts[1])
        if len(parts) == 3 and parts[2]:
            ignores[parts[0]] = parts[2]
    return masks, ignores


def read_encoding(folds_dir: Path) -> dict[str, int]:
    path = Path(folds_dir) / "encoding.yaml"
    if not path.is_file():
        raise FoldFormatError(f"{path}: file not found")
    encoding = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(encoding, dict) or sorted(encoding.values()) != list(range(len(encoding))):
        raise FoldFormatError(f"{path}: expected a mapping of class names to 0..C-1")
    return {str(k): int(v) for k, v in encoding.items()}


def write_split(folds_dir: Path, fold: int, split: str, samples: list[Sample]) -> None:
    split_dir = Path(folds_dir) / f"fold-{fold}" / split
    split_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "image_ids.txt": [s.image for s in samples],
        "class_labels.txt": [f"{s.image},{s.label}" for s in samples],
        "image_sizes.txt": [f"{s.image},{s.size[0]},{s.size[1]}" for s in samples],
        "localization.txt": [f"{s.image},{m},{s.ignore or ''}" for s in samples for m in (s.masks or ("",))],
    }
    for name, lines in files.items():
        (split_dir / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_encoding(folds_dir: Path, encoding: dict[str, int]) -> None:
    (Path(folds_dir) / "encoding.yaml").write_text(yaml.safe_dump(encoding, sort_keys=False), encoding="utf-8")


def write_folds(out: Path, encoding: dict[str, int], samples: list[Sample], assignments: list[dict[int, str]],
                folds: int) -> None:
    """Write ``encoding.yaml`` and ``fold-0 … fold-(folds-1)`` under ``out``, replacing any earlier ones
    (folds beyond ``folds`` are removed). ``assignments[i][k]`` places sample i in fold k: ``train``,
    ``valcl``, ``valcl+valpx`` or ``test``. Built in a staging folder, then renamed into place."""
    import shutil

    from wsolctl.io import temporary_directory

    staging = temporary_directory(out, ".folds.")
    try:
        write_encoding(staging, encoding)
        for fold in range(folds):
            splits: dict[str, list[Sample]] = {split: [] for split in SPLITS}
            for sample, assignment in zip(samples, assignments):
                for split in assignment[fold].split("+"):
                    splits[split].append(sample)
            for split, items in splits.items():
                write_split(staging, fold, split, items)
        for old in out.glob("fold-*"):
            if old.is_dir() and old.name[5:].isdigit() and int(old.name[5:]) >= folds:
                shutil.rmtree(old)
        for fold in range(folds):
            final, new = out / f"fold-{fold}", staging / f"fold-{fold}"
            if final.exists():
                final.rename(staging / f"old-{fold}")
            new.rename(final)
        os.replace(staging / "encoding.yaml", out / "encoding.yaml")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class FoldParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    folds_dir: Optional[str] = Field(None, description="folder holding fold-K/ and encoding.yaml; default: the root")


class FoldDataset(Plugin):
    """Real data already in the fold format (e.g. the survey's GlaS/CAMELYON16 folds)."""

    Params = FoldParams
    name = "folds"

    def __init__(self, params: Optional[FoldParams] = None):
        self.params = params or FoldParams()

    def folds_dir(self, root: Path) -> Path:
        return Path(self.params.folds_dir) if self.params.folds_dir else Path(root)

    def missing(self, root: Path) -> Optional[str]:
        """What the data needs and lacks at ``root`` before anything runs, read only (found by
        ``wsolctl validate``); None when it is there or will be made."""
        folds_dir = self.folds_dir(root)
        if not (folds_dir / "encoding.yaml").is_file():
            return (f"{folds_dir}: no fold files here (encoding.yaml not found); point dataset.root"
                    f"{' (or params.folds_dir)' if self.params.folds_dir else ''} at a folder of fold files "
                    "(docs/datasets.md)")
        return None

    def prepare(self, root: Path, fold: int) -> None:
        """Nothing to generate: check that the fold exists."""
        folds_dir = self.folds_dir(root)
        read_encoding(folds_dir)
        for split in SPLITS:
            if not (folds_dir / f"fold-{fold}" / split / "image_ids.txt").is_file():
                raise FoldFormatError(f"{folds_dir / f'fold-{fold}' / split / 'image_ids.txt'}: file not found")

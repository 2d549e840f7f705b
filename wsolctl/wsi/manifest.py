"""A cohort's slide manifest: one row per slide, in a CSV or Parquet file.

Columns: ``slide`` (path, relative to the manifest) and ``label`` (class name) are required;
``annotations`` (a QuPath GeoJSON export or an ASAP XML, relative to the manifest), ``patient``
(grouping for splits; default: the slide), ``split`` (``test`` fixes the slide in the test set; empty
or ``train`` lets the sampler draw) and ``mpp`` (µm per level-0 pixel, for slides whose metadata
lacks it) are optional. A missing column is an error for the whole file; a bad row (missing file,
bad value, slide name used twice) is reported with its row number and left out, the others go on.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from wsolctl.errors import DataError

REQUIRED = ("slide", "label")
OPTIONAL = ("annotations", "patient", "split", "mpp")


@dataclass(frozen=True)
class ManifestSlide:
    where: str  # "manifest.csv:3" (CSV line) or "manifest.parquet: row 2", for messages
    name: str  # the slide file's stem: names its patches folder
    path: Path
    label: str
    annotations: Optional[Path]
    patient: str
    test: bool
    mpp: Optional[float]


def _records(path: Path) -> list[tuple[str, dict[str, str]]]:
    """``(where, row)`` pairs with every cell as a stripped string."""
    if path.suffix.lower() == ".parquet":
        import polars as pl

        try:
            frame = pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for a file that is not Parquet
            raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
        columns = frame.columns
        rows = [(f"{path}: row {i + 1}", {k: "" if v is None else str(v).strip() for k, v in row.items()})
                for i, row in enumerate(frame.iter_rows(named=True))]
    else:
        try:
            with path.open(newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                columns = [c.strip() for c in reader.fieldnames or []]
                rows = [(f"{path}:{reader.line_num}", {k.strip(): (v or "").strip() for k, v in row.items() if k})
                        for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (needs slide, label; optional "
                        f"{', '.join(OPTIONAL)})")
    return rows


def read_manifest(path: Path) -> tuple[list[ManifestSlide], list[dict]]:
    """The manifest's usable slides, and its bad rows as ``{where, slide, reason}``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    root = path.parent
    slides: list[ManifestSlide] = []
    bad: list[dict] = []
    names: dict[str, str] = {}
    for where, row in _records(path):
        try:
            slide = _slide(root, where, row)
        except DataError as exc:
            bad.append({"where": where, "slide": row.get("slide", ""), "reason": str(exc)})
            continue
        if slide.name in names:
            bad.append({"where": where, "slide": row["slide"], "reason": f"slide name {slide.name!r} is also "
                        f"used at {names[slide.name]}: names must be unique"})
            continue
        names[slide.name] = where
        slides.append(slide)
    return slides, bad


def _slide(root: Path, where: str, row: dict[str, str]) -> ManifestSlide:
    for column in REQUIRED:
        if not row.get(column):
            raise DataError(f"{column}: empty")
    path = root / row["slide"]
    if not path.is_file():
        raise DataError(f"slide: file not found: {path}")
    annotations = root / row["annotations"] if row.get("annotations") else None
    if annotations is not None and not annotations.is_file():
        raise DataError(f"annotations: file not found: {annotations}")
    split = row.get("split", "").lower()
    if split not in ("", "train", "test"):
        raise DataError(f"split: {row['split']!r} is not test, train or empty")
    mpp = None
    if row.get("mpp"):
        try:
            mpp = float(row["mpp"])
        except ValueError:
            mpp = math.nan
        if not (mpp > 0 and math.isfinite(mpp)):
            raise DataError(f"mpp: {row['mpp']!r} is not a positive number of µm per pixel")
    return ManifestSlide(where, path.stem, path, row["label"], annotations, row.get("patient") or path.stem,
                         split == "test", mpp)

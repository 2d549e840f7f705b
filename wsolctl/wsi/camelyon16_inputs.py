"""CAMELYON16 as distributed → a manifest (:class:`~wsolctl.wsi.manifest.ManifestSlide` rows, as
``wsolctl sample slides`` reads them): which slides to sample, with which label and annotation (the
first of the sampler's three jobs; :mod:`wsolctl.wsi.camelyon16` samples them, :mod:`wsolctl.data.camelyon`
writes folds and tables).

Slides named ``normal_*``, ``tumor_*`` (the challenge's training set) and ``test_*`` (its test set)
in any format large-image reads, found recursively; ASAP XML files named after their slide; the
challenge's reference CSV (``Test_001,Tumor,Macro,...``) for the test labels. Without the CSV a test
slide is tumour exactly when it has an XML file.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from wsolctl.errors import DataError
from wsolctl.wsi.manifest import ManifestSlide

CLASSES = {"normal": 0, "tumor": 1}
SETS = ("train", "test")  # the challenge's sets


def set_of(entry: ManifestSlide) -> str:
    """The challenge's set of a slide: ``test`` (fixed in the test set) or ``train``."""
    return SETS[1] if entry.test else SETS[0]


@dataclass
class Findings:
    """Slides left out (with the reason) and warnings, gathered along the way for the stamp."""

    skipped: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def skip(self, name: str, set_: str, label: str, reason: str) -> None:
        self.skipped.append({"slide": name, "set": set_, "label": label, "reason": reason})
        self.warnings.append(f"skipped {name}: {reason}")


def read_reference(path: Path) -> dict[str, str]:
    """``{slide name in lower case: "tumor" | "normal"}`` from the challenge's reference CSV."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: reference CSV not found")
    out: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            row = [cell.strip() for cell in row]
            if not any(row):
                continue
            label = row[1].lower() if len(row) > 1 else ""
            if label not in CLASSES:
                if number == 1 and len(row) > 1:
                    continue  # a header line
                raise DataError(f"{path}:{number}: expected 'slide,Tumor|Normal,...', got {','.join(row)!r}")
            name = Path(row[0]).stem.lower()
            if name in out:
                raise DataError(f"{path}:{number}: slide {row[0]!r} is listed twice")
            out[name] = label
    if not out:
        raise DataError(f"{path}: no slide labels found")
    return out


def discover(slides_dir: Path, annotations_dir: Optional[Path], reference: Optional[Path]
             ) -> tuple[list[ManifestSlide], Findings]:
    """The challenge's slides as manifest rows (label from the name or the reference CSV, the ASAP XML
    as annotations, each slide its own patient, the test set fixed), the slides skipped (with
    reasons) and warnings."""
    from wsolctl.wsi.slide import SLIDE_SUFFIXES

    slides_dir = Path(slides_dir)
    if not slides_dir.is_dir():
        raise DataError(f"{slides_dir}: slides folder not found")
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise DataError(f"{annotations_dir}: annotations folder not found")
    found: dict[str, Path] = {}
    for path in sorted(slides_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES and not path.name.startswith("."):
            key = path.stem.lower()
            if key in found:
                raise DataError(f"{path}: slide name {path.stem!r} also used by {found[key]}")
            found[key] = path
    if not found:
        raise DataError(f"{slides_dir}: no slides found ({', '.join(SLIDE_SUFFIXES)})")
    xmls: dict[str, Path] = {}
    if annotations_dir is not None:
        for path in sorted(Path(annotations_dir).rglob("*.xml")):
            xmls.setdefault(path.stem.lower(), path)
    labels = read_reference(reference) if reference is not None else None
    entries, findings = [], Findings()
    for key, path in sorted(found.items()):
        xml = xmls.get(key)
        name = path.stem
        if key.startswith("normal"):
            set_, label = "train", "normal"
        elif key.startswith("tumor"):
            set_, label = "train", "tumor"
        elif key.startswith("test"):
            set_ = "test"
            if labels is None:
                label = "tumor" if xml else "normal"
            elif key not in labels:
                findings.skip(name, set_, "", f"not listed in the reference CSV {reference}")
                continue
            else:
                label = labels[key]
        else:
            findings.skip(name, "", "", "name is not normal_*, tumor_* or test_*")
            continue
        if label == "tumor" and xml is None:
            findings.skip(name, set_, label, "tumour slide without an annotation XML")
            continue
        if label == "normal" and xml is not None:
            findings.warnings.append(f"{name}: normal slide has an annotation {xml.name}; ignored")
            xml = None
        entries.append(ManifestSlide(str(path), name, path, label, xml, name, set_ == "test", None))
    if labels is not None:
        missing = sorted(set(labels) - {k for k in found if k.startswith("test")})
        if missing:
            findings.warnings.append(f"{len(missing)} slide(s) of the reference CSV not found: "
                                     f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return entries, findings

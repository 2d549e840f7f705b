"""CAMELYON16: :func:`sample_camelyon16` turns the slides as distributed into patches, masks, fold
files and a manifest (survey Appendix B; ``wsolctl sample camelyon16``), in three named steps: find
the inputs (:mod:`wsolctl.wsi.camelyon16_inputs`), sample the slides (:mod:`wsolctl.wsi.camelyon16`),
write folds and tables (:mod:`wsolctl.data.camelyon_folds`). The ``camelyon16`` dataset plugin reads
its output (``dataset.root`` = ``out``), or with ``params.slides`` samples on first use.

Besides what the steps write, ``out`` holds ``wsolctl-camelyon16.json``: the stamp (params, inputs,
counts, skipped slides, warnings), written last; a finished identical run returns it at once."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from wsolctl.data.camelyon_folds import assign_folds, write_folds, write_tables
from wsolctl.data.folds import FoldDataset, read_encoding
from wsolctl.errors import DataError
from wsolctl.wsi.camelyon16 import SamplingParams, sample_slides
from wsolctl.wsi.camelyon16_inputs import CLASSES, SETS, discover, set_of
from wsolctl.wsi.fingerprint import fingerprint, stable_key
from wsolctl.wsi.manifest import ManifestSlide
from wsolctl.wsi.slidejobs import finished_stamp

STAMP = "wsolctl-camelyon16.json"
FORMAT = 1  # of the output; a new format samples again


def sample_camelyon16(slides_dir: Path, annotations_dir: Optional[Path], out: Path, reference: Optional[Path] = None,
                      params: Optional[SamplingParams] = None, quiet: bool = False, workers: int = 1,
                      executor: str = "local") -> dict:
    """Sample CAMELYON16 into ``out`` (resumable; a finished identical run returns at once). Returns
    the stamp (params, counts, skipped slides, warnings); the caller shows the warnings. ``workers``
    slides at a time, in local processes or Ray tasks (``executor``); the output does not depend on it."""
    from wsolctl.io import write_json

    p, out = params or SamplingParams(), Path(out)
    entries, findings = discover(slides_dir, annotations_dir, reference)
    identity = _identity(entries, reference, p)
    finished = finished_stamp(out / STAMP, out / "manifest.parquet", identity)
    if finished is not None:
        return finished
    rows = sample_slides(entries, out, p, findings, quiet=quiet, workers=workers, executor=executor)
    folds = assign_folds(rows, p)
    write_folds(out, rows, folds, p)
    write_tables(out, rows, folds, findings.skipped, p)
    counts = {set_: {c: sum(1 for r in rows if r["set"] == set_ and r["category"] == c) for c in CLASSES}
              for set_ in SETS}
    stamp = {**identity, "counts": counts, "skipped": findings.skipped, "warnings": findings.warnings}
    write_json(out / STAMP, stamp)
    return stamp


def _identity(entries: list[ManifestSlide], reference: Optional[Path], p: SamplingParams) -> dict:
    """What the output depends on: the format, the params and the inputs' fingerprints."""
    inputs = sorted([e.name, set_of(e), e.label, fingerprint(e.path), fingerprint(e.annotations)] for e in entries)
    return {"format": FORMAT, "params": p.model_dump(mode="json"), "inputs": stable_key(inputs),
            "reference": fingerprint(reference)}


class Camelyon16Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slides: Optional[str] = Field(None, description="folder of the slides; set it to sample on first use")
    annotations: Optional[str] = Field(None, description="folder of the ASAP XML files (with slides)")
    reference: Optional[str] = Field(None, description="the challenge's reference CSV of test labels")
    sampling: SamplingParams = Field(default_factory=SamplingParams, description="used only with slides")
    quiet: bool = Field(False, description="no progress display while sampling",
                        json_schema_extra={"display_only": True})  # not in run ids


class Camelyon16(FoldDataset):
    """CAMELYON16 patches sampled by ``wsolctl sample camelyon16`` into ``dataset.root`` (or, with
    ``params.slides``, sampled there on first use)."""

    Params = Camelyon16Params
    name = "camelyon16"
    survey_rank = 3

    def __init__(self, params: Optional[Camelyon16Params] = None):
        self.params = params or Camelyon16Params()

    def folds_dir(self, root: Path) -> Path:
        return Path(root)

    def missing(self, root: Path) -> Optional[str]:
        if self.params.slides or (Path(root) / STAMP).is_file():
            return None
        return (f"{root}: no sampled CAMELYON16 here ({STAMP} missing); run `wsolctl sample camelyon16 SLIDES "
                f"ANNOTATIONS --out {root}` or set dataset.params.slides")

    def prepare(self, root: Path, fold: int) -> None:
        root, p = Path(root), self.params
        if p.slides:
            sample_camelyon16(Path(p.slides), Path(p.annotations) if p.annotations else None, root,
                              Path(p.reference) if p.reference else None, p.sampling, quiet=p.quiet)
        stamp_path = root / STAMP
        if not stamp_path.is_file():
            raise DataError(f"{root}: no sampled CAMELYON16 here ({STAMP} missing); run `wsolctl sample camelyon16 "
                            f"SLIDES ANNOTATIONS --out {root}` or set dataset.params.slides")
        stamp = json.loads(stamp_path.read_text())
        folds = int(stamp.get("params", {}).get("folds", 0))
        if fold >= folds:
            raise DataError(f"fold {fold} does not exist: {root} has {folds} folds")
        read_encoding(root)
        super().prepare(root, fold)

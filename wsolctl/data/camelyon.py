"""The ``camelyon16`` dataset plugin: CAMELYON16 patches sampled by :mod:`wsolctl.wsi.camelyon16`
(``wsolctl sample camelyon16``), read as fold files; with ``params.slides`` it samples on first use."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from wsolctl.data.folds import FoldDataset, read_encoding
from wsolctl.errors import DataError
from wsolctl.wsi.camelyon16 import STAMP, SamplingParams, sample_camelyon16


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

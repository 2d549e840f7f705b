"""``predict --mpp``: tiles at a physical resolution, by default the one the study's data were
sampled at (``wsolctl sample slides`` records it in its stamp, in the dataset root)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from wsolctl.errors import InputError


def study_mpp(run_dir: Path, run_id: str) -> Optional[float]:
    """The µm/px of the patches the run trained on, when its dataset root holds a sampler's stamp."""
    from wsolctl.data.cohort import STAMP
    from wsolctl.engine.rundir import RunDir

    root = Path(RunDir.of(run_dir, run_id).spec().recipe.dataset.root)
    try:
        return json.loads((root / STAMP).read_text()).get("mpp")
    except (OSError, json.JSONDecodeError):
        return None


def with_study_mpp(options, run_dir: Path, run_id: str):
    """``options`` with ``mpp`` set to the study's when neither ``mpp`` nor a ``level`` was given."""
    if options.mpp is not None or options.level != 0:
        return options
    mpp = study_mpp(run_dir, run_id)
    return options if mpp is None else options.model_copy(update={"mpp": mpp})


def tile_grid(slide, options):
    """The tile grid at ``options.mpp`` (downsample = mpp / the slide's µm/px), else at ``level``."""
    from wsolctl.predict.tiles import Grid

    if options.mpp is None:
        return Grid.of(options.tile_size, options.level, options.overlap)
    if not slide.mm_x:
        raise InputError(f"{slide.path}: no pixel size in the slide's metadata; --mpp needs one (use --level)")
    return Grid.at(options.tile_size, options.mpp / (slide.mm_x * 1000), options.overlap)

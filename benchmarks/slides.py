"""Synthetic whole slides and a tiny trained study, shared by the predict / sampling benchmarks and
the docs figure (docs/figures/make_predict_figure.py).

``write_slide`` streams a pyramidal TIFF tile by tile (tifffile accepts an iterator of tiles), so a
slide of any size is written in constant memory: white background, an elliptic piece of pink tissue
with purple nuclei, and red round "tumours" given in level-0 pixels, plus pixel noise; JPEG q90 tiles
as scanners write them. Successive IFDs (level 0, then
2× reductions with ``subfiletype=1``): the CAMELYON/ASAP layout, read by all large-image sources.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

BACKGROUND, TISSUE, NUCLEI, TUMOR = (243, 242, 245), (214, 140, 190), (120, 60, 150), (205, 45, 50)
TILE = 256


def _pixels(width: int, height: int, tumors: Sequence[tuple[float, float, float]], x0: int, y0: int, w: int, h: int,
            ds: int) -> np.ndarray:
    """Level-``ds`` pixels of the box (x0, y0, w, h) given in that level's pixels."""
    yy, xx = np.mgrid[y0:y0 + h, x0:x0 + w]
    lx, ly = (xx + 0.5) * ds, (yy + 0.5) * ds  # level-0 centres
    out = np.empty((h, w, 3), np.uint8)
    out[:] = BACKGROUND
    tissue = ((lx - width / 2) / (0.42 * width)) ** 2 + ((ly - height / 2) / (0.4 * height)) ** 2 < 1
    out[tissue] = TISSUE
    out[tissue & ((ly.astype(np.int64) // 7) % 5 == 0) & ((lx.astype(np.int64) // 9) % 4 == 0)] = NUCLEI
    for cx, cy, r in tumors:
        out[(lx - cx) ** 2 + (ly - cy) ** 2 < r * r] = TUMOR
    noise = np.random.default_rng([x0, y0, ds]).integers(-8, 9, size=out.shape)  # texture, as scanned images have
    return np.clip(out.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_slide(path: Path, width: int, height: int, tumors: Sequence[tuple[float, float, float]] = (),
                levels: int = 4, mpp: float = 0.25) -> Path:
    import tifffile

    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2 ** 31) as tif:
        for level in range(levels):
            ds = 2 ** level
            w, h = -(-width // ds), -(-height // ds)

            def tiles(w=w, h=h, ds=ds):
                for ty in range(0, h, TILE):
                    for tx in range(0, w, TILE):
                        tile = np.full((TILE, TILE, 3), 255, np.uint8)
                        block = _pixels(width, height, tumors, tx, ty, min(TILE, w - tx), min(TILE, h - ty), ds)
                        tile[: block.shape[0], : block.shape[1]] = block
                        yield tile

            per_cm = 1e4 / (mpp * ds)
            tif.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                      compression="jpeg", compressionargs={"level": 90}, subfiletype=0 if level == 0 else 1, resolution=(per_cm, per_cm),
                      resolutionunit="CENTIMETER")
    return path


STUDY = """\
name: bench
seed: 0
device: cpu
image_size: {size}
dataset:
  name: synthetic-camelyon
  root: {root}
  params: {{size: {size}, train_per_class: 4, test_per_class: 2, folds: 2, valpx_per_class: 1}}
backbones:
  - name: {backbone}
methods:
  - name: cam
train:
  epochs: 1
  batch_size: 4
evaluation:
  thresholds: 100
"""


def tiny_study(folder: Path, size: int = 224, backbone: str = "resnet18-wsol") -> Path:
    """Train and select CAM on ``backbone`` for one epoch on a few synthetic patches (once)."""
    from wsolctl import pipeline

    out = Path(folder) / f"study-{backbone}-{size}"
    if not (out / "results.parquet").is_file():
        recipe = Path(folder) / f"bench-{backbone}-{size}.yaml"
        recipe.parent.mkdir(parents=True, exist_ok=True)
        recipe.write_text(STUDY.format(size=size, root=Path(folder) / f"data-{size}", backbone=backbone))
        pipeline.train(recipe, out, quiet=True)
        pipeline.select(out, quiet=True)
    return out

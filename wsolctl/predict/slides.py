"""One whole slide, step by step: read it, find its tissue tiles, score them with the model, stitch
and normalise the maps, then write heatmap, regions, overlay and tiles (module docstring of
:mod:`wsolctl.predict.run`: the files)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from wsolctl.predict.inputs import PredictOptions
from wsolctl.predict.scores import region_threshold, score_slide, settings


def predict_slide(loaded, path: Path, folder: Path, options: PredictOptions, xml: Optional[Path], progress=None) -> dict:
    """One slide, step by step: read it, find its tissue tiles, score them with the model, stitch
    and normalise the maps (:func:`_predict`), then write the outputs into ``folder``; returns its
    row's fields."""
    from wsolctl.wsi.slide import Slide

    prediction = _predict(loaded, Slide(path), path, options, progress)
    for write in (_write_heatmap, _write_regions, _write_overlay, _write_tiles):
        write(folder, prediction, loaded, options)
    return _slide_row(prediction, options, xml)


@dataclass(frozen=True)
class _Layout:
    """Where a slide is tiled: the grid, its tissue, the tiles kept and the heatmap's resolution."""

    grid: object  # predict.tiles.Grid
    tissue: object  # predict.tiles.Tissue
    origins: list  # level-0 (x, y) of the tiles predicted
    ds: float  # heatmap downsample (level-0 pixels per heatmap pixel)
    cells: int  # heatmap pixels per tile side


@dataclass(frozen=True)
class _Heat:
    """The stitched map, normalised: ``values`` in [0, 1], 0 outside the predicted tiles."""

    values: np.ndarray
    covered: np.ndarray  # pixels of predicted tiles
    scored: np.ndarray  # of those, the tissue pixels ("over tissue")
    norm: object  # predict.heatmap.Normalisation


@dataclass(frozen=True)
class _SlidePrediction:
    path: Path
    slide: object  # wsi.slide.Slide
    layout: _Layout
    heat: _Heat
    tiles: object  # polars DataFrame: one row per tile
    regions: list
    class_index: int
    class_name: str
    threshold: float


def _predict(loaded, slide, path: Path, options: PredictOptions, progress) -> _SlidePrediction:
    from wsolctl.predict.model import TileScorer
    from wsolctl.predict.regions import extract_regions

    class_index, threshold = settings(loaded, options)
    scorer = TileScorer(loaded, class_index)
    layout = _tiles(slide, scorer.map_side, options)
    canvas, tiles = _stitch(slide, layout, scorer, loaded.image_size, options, progress, path.stem)
    heat = _normalise(loaded.map_kind, canvas)
    threshold = region_threshold(threshold, heat.values[heat.scored])  # NaN (Otsu rule): this slide's
    regions = extract_regions(heat.values, threshold, layout.ds)
    return _SlidePrediction(path, slide, layout, heat, _tile_frame(tiles, heat.norm), regions, class_index,
                            loaded.class_name(class_index), threshold)


def _tiles(slide, map_side: int, options: PredictOptions) -> _Layout:
    """Tissue (Otsu on an overview) and the tiles that hold enough of it."""
    from wsolctl.predict.heatmap import heatmap_downsample
    from wsolctl.predict.resolution import tile_grid
    from wsolctl.predict.tiles import Tissue, tissue_tiles

    grid = tile_grid(slide, options)
    tissue = Tissue.detect(slide, options.tissue_downsample)
    ds = heatmap_downsample(grid.footprint, map_side)
    return _Layout(grid, tissue, tissue_tiles(slide, grid, tissue, options.min_tissue), ds, round(grid.footprint / ds))


def _stitch(slide, layout: _Layout, scorer, image_size: int, options: PredictOptions, progress, name: str):
    """Score the tiles in batches (read ahead in threads) and blend their maps into the slide's
    canvas; returns the canvas and each tile's position, tissue, probability and raw map max / mean."""
    import torch.nn.functional as F

    from wsolctl.predict.heatmap import Canvas
    from wsolctl.predict.tiles import batches, read_ahead

    cells = layout.cells
    canvas = Canvas(slide.width, slide.height, layout.ds, cells)
    bar = progress.task(f"{name}: tiles", len(layout.origins)) if progress else None
    tiles: dict[str, list] = {k: [] for k in ("x", "y", "tissue", "probability", "raw_max", "raw_mean")}
    reader = read_ahead(slide, layout.grid, layout.tissue, layout.origins, options.tile_size, image_size, cells,
                        options.readers, prefetch=2 * options.batch_size)
    for batch in batches(reader, options.batch_size):
        probabilities, maps = scorer(np.stack([t.pixels for t in batch]))
        maps = F.interpolate(maps[:, None], size=(cells, cells), mode="bilinear", align_corners=False)[:, 0]
        for tile, probability, values in zip(batch, probabilities, maps.cpu().numpy()):
            canvas.add(tile.x, tile.y, values, tile.tissue_mask)
            for key, value in zip(tiles, (tile.x, tile.y, tile.tissue, float(probability), float(values.max()),
                                          float(values.mean()))):
                tiles[key].append(value)
        if bar:
            bar.advance(len(batch))
    if bar:
        bar.close()
    return canvas, tiles


def _normalise(map_kind: str, canvas) -> _Heat:
    """Probability maps as they are, CAM-type maps min-max normalised over the tissue scored."""
    from wsolctl.predict.heatmap import normalise

    raw, covered = canvas.blended(), canvas.covered
    scored = covered & canvas.tissue
    norm = normalise(map_kind, raw, scored)
    return _Heat(np.where(covered, norm.apply(raw), 0.0).astype(np.float32), covered, scored, norm)


def _tile_frame(tiles: dict[str, list], norm):
    import polars as pl

    return pl.DataFrame({"x": tiles["x"], "y": tiles["y"], "tissue": tiles["tissue"],
                         "probability": tiles["probability"],
                         "map_max": norm.apply(np.asarray(tiles["raw_max"], np.float64)),
                         "map_mean": norm.apply(np.asarray(tiles["raw_mean"], np.float64))},
                        schema={"x": pl.Int64, "y": pl.Int64, "tissue": pl.Float64, "probability": pl.Float64,
                                "map_max": pl.Float64, "map_mean": pl.Float64})


def _write_heatmap(folder: Path, p: _SlidePrediction, loaded, options: PredictOptions) -> None:
    """heatmap.tif and heatmap.json."""
    from wsolctl.predict.heatmap import write_tiff

    slide, heat = p.slide, p.heat.values
    levels = write_tiff(folder / "heatmap.tif", heat, p.layout.ds, slide.mm_x)
    meta = {"slide": str(p.path), "width": slide.width, "height": slide.height, "mm_x": slide.mm_x,
            "downsample": p.layout.ds, "heatmap_width": heat.shape[1], "heatmap_height": heat.shape[0],
            "levels": levels, "values": "uint8 = round(map x 255); 0 outside predicted tiles",
            "method": loaded.method_label, "backbone": loaded.backbone, "run_id": loaded.run_id,
            "selection": loaded.selection, "epoch": loaded.epoch, "class": p.class_name, "class_index": p.class_index,
            "map_kind": loaded.map_kind, "normalisation": p.heat.norm.describe(), "threshold": p.threshold,
            "input_normalize": {"mean": list(loaded.mean), "std": list(loaded.std)},
            "tile_size": options.tile_size, "level": options.level, "mpp": options.mpp, "overlap": options.overlap,
            "min_tissue": options.min_tissue, "tiles": len(p.layout.origins)}
    (folder / "heatmap.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _write_regions(folder: Path, p: _SlidePrediction, loaded, options: PredictOptions) -> None:
    """regions.geojson (QuPath) and regions.xml (ASAP)."""
    from wsolctl.predict.regions import write_asap, write_geojson

    write_geojson(folder / "regions.geojson", p.regions, p.class_name, p.slide.mm_x)
    write_asap(folder / "regions.xml", p.regions)


def _write_overlay(folder: Path, p: _SlidePrediction, loaded, options: PredictOptions) -> None:
    from wsolctl.predict.overlay import THUMBNAIL_SIDE, write_overlay

    slide = p.slide
    thumbnail, sx, sy = slide.overview(max(1.0, max(slide.width, slide.height) / THUMBNAIL_SIDE))
    label = f"P({p.class_name})" if loaded.map_kind == "probability" else f"{p.class_name} map (min-max per slide)"
    outlines = [ring / (sx, sy) for r in p.regions for ring in (r.exterior, *r.holes)]
    write_overlay(folder / "overlay.png", thumbnail, p.heat.values, p.heat.covered, label, p.threshold,
                  f"{p.path.name} · {loaded.method_label} / {loaded.backbone} ({loaded.selection}) · "
                  f"τ = {p.threshold:.3f}", outlines)


def _write_tiles(folder: Path, p: _SlidePrediction, loaded, options: PredictOptions) -> None:
    """tiles.parquet and tiles.geojson (QuPath detections)."""
    from wsolctl.predict.regions import write_tile_detections

    p.tiles.write_parquet(folder / "tiles.parquet")
    write_tile_detections(folder / "tiles.geojson", p.tiles, p.layout.grid.footprint)


def _slide_row(p: _SlidePrediction, options: PredictOptions, xml: Optional[Path]) -> dict:
    """The slide's fields of predictions.parquet: tile counts, slide scores over tissue tiles,
    region area; PxAP and Dice with annotations."""
    tissue = p.tiles.filter(p.tiles["tissue"] >= options.min_tissue)["probability"].to_list()
    area = float(sum(r.area for r in p.regions))
    mm_x = p.slide.mm_x
    row = {"tiles": len(p.layout.origins), "tissue_tiles": len(tissue),
           "score_max": max(tissue) if tissue else None, "score_mean": float(np.mean(tissue)) if tissue else None,
           "region_area": area, "region_area_mm2": area * mm_x ** 2 if mm_x else None, "regions": len(p.regions)}
    if options.annotations is not None:
        row.update(score_slide(p.heat.values, p.heat.scored, xml, p.layout.ds, p.threshold))
    return row


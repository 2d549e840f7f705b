"""``wsolctl predict``: apply a trained model to whole slides and image files.

Per input, in ``out/<name>/`` (written into a temporary folder renamed into place when complete)::

    heatmap.tif      tiled pyramidal uint8 TIFF (map × 255) of the whole slide at heatmap.json's downsample
    heatmap.json     downsample, slide size, method, run id, selection rule, normalisation, threshold,
                     the tiles' input normalisation (the backbone's mean / std)
    overlay.png      thumbnail with the heatmap blended in and a colour bar
    regions.geojson  polygons (level-0 pixels) where the map ≥ threshold, as QuPath annotations
    regions.xml      the same polygons as ASAP XML (group _0, holes _2)
    tiles.parquet    per tile: x, y (level 0), tissue fraction, class probability, map max and mean
    tiles.geojson    the tiles as QuPath detections with those measurements (QuPath's measurement maps)
    result.json      this input's row of predictions.parquet and the settings it was made with

Image inputs (png, jpg, plain tif) get ``cam.png`` (the map, 0–255, at the image's size) and
``overlay.png``. ``out/predictions.parquet`` has one row per input; with annotations,
``out/scores.md`` summarises PxAP and Dice. A rerun skips inputs already predicted with the same
settings; failed inputs are recorded and retried on the next run.
"""
from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wsolctl.errors import InputError
from wsolctl.executors import ExecutorName
from wsolctl.selection import RuleName
from wsolctl.wsi.fingerprint import fingerprint, stable_key
from wsolctl.wsi.slide import SLIDE_SUFFIXES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RESULT = "result.json"
FORMAT = 1
COLUMNS = {"slide": "String", "path": "String", "kind": "String", "status": "String", "error": "String",
           "tiles": "Int64", "tissue_tiles": "Int64", "score_max": "Float64", "score_mean": "Float64",
           "region_area": "Float64", "region_area_mm2": "Float64", "regions": "Int64", "duration_s": "Float64",
           "annotated": "Boolean", "pxap": "Float64", "dice": "Float64"}


class PredictOptions(BaseModel):
    """What ``wsolctl predict`` takes besides RUN_DIR, the inputs and the output folder."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    method: Optional[str] = Field(None, description="method label in results.parquet; default: the only one")
    backbone: Optional[str] = Field(None, description="default: the only one")
    selection: Optional[RuleName] = Field(None, description="default: the first of the study's selection rules")
    run: Optional[str] = Field(None, description="run id, when several folds / seeds hold the same model")
    target: Optional[Union[int, str]] = Field(None, description="class name or index; default the positive class (1)")
    tile_size: int = Field(512, ge=16, le=8192, description="tile side in pixels at `level`")
    level: int = Field(0, ge=0, le=12, description="read tiles at downsample 2**level")
    mpp: Optional[float] = Field(None, gt=0, description="µm per tile pixel, instead of `level` (default with "
                                 "level 0: the mpp the study's data were sampled at, if recorded)")
    overlap: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of a tile shared with its neighbour")
    batch_size: int = Field(16, ge=1, le=4096)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    threshold: Optional[float] = Field(None, ge=0.0, le=1.0, description="default: the run's τ*")
    min_tissue: float = Field(0.1, ge=0.0, le=1.0, description="tiles with less tissue are not predicted")
    tissue_downsample: float = Field(64, ge=1, description="overview downsample for Otsu tissue detection")
    readers: int = Field(4, ge=1, le=64, description="tile-reading threads per slide")
    workers: int = Field(1, ge=1, le=256, description="inputs predicted in parallel")
    executor: ExecutorName = "local"
    annotations: Optional[Path] = Field(None, description="folder of ASAP XML files named after the slides")

    def model_args(self) -> tuple:
        return (self.method, self.backbone, self.selection, self.device, self.run)


@dataclass(frozen=True)
class Input:
    path: Path
    kind: str  # slide | image
    name: str  # output folder name: the file stem


@dataclass(frozen=True)
class Job:
    input: Input
    folder: Path
    key: str
    xml: Optional[Path]
    run_dir: Path
    options: PredictOptions


@dataclass(frozen=True)
class Predictions:
    rows: list[dict]
    path: Path  # predictions.parquet
    scores: Optional[str]  # the Markdown summary with annotations

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]


# ----------------------------------------------------------------------------------------- inputs


def discover_inputs(paths: list[Path]) -> list[Input]:
    """Files and folders (searched recursively) → inputs; names must be unique (they name folders)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and p.suffix.lower() in SLIDE_SUFFIXES + IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    if not found:
        raise InputError(f"no slides or images in {', '.join(map(str, paths))} ({', '.join(SLIDE_SUFFIXES + IMAGE_SUFFIXES)})")
    inputs, names = [], {}
    for path in found:
        name = path.stem
        if name.lower() in names:
            raise InputError(f"{path}: name {name!r} also used by {names[name.lower()]}; outputs go to OUT/<name>/")
        names[name.lower()] = path
        inputs.append(Input(path, _kind(path), name))
    return inputs


def _kind(path: Path) -> str:
    """png/jpg are images; a TIFF is a slide when tiled or pyramidal, else an image (a patch)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                return "slide" if tif.pages[0].is_tiled or len(tif.series[0].levels) > 1 else "image"
        except Exception:  # unreadable: let the slide reader report it for this input
            return "slide"
    return "slide"


def _annotation(folder: Optional[Path], name: str) -> Optional[Path]:
    if folder is None:
        return None
    matches = [p for p in sorted(Path(folder).rglob("*.xml")) if p.stem.lower() == name.lower()]
    return matches[0] if matches else None


# ------------------------------------------------------------------------------------- the model

# per process: model arguments -> LoadedModel, the most recently used last; at most MAX_MODELS kept
# (a long-lived process predicting with many models does not hold them all)
_MODELS: OrderedDict = OrderedDict()
MAX_MODELS = 2


def _init_worker(run_dir: Path, args: tuple, threads: Optional[int] = None) -> None:
    """Load the model once per process (pool and Ray workers; idempotent)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    key = (str(run_dir), args)
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return
    from wsolctl.predict.model import load_selected

    method, backbone, selection, device, run = args
    _MODELS[key] = load_selected(run_dir, method, backbone, selection, device, run)
    while len(_MODELS) > MAX_MODELS:
        _MODELS.popitem(last=False)


def _loaded(run_dir: Path, options: PredictOptions):
    _init_worker(run_dir, options.model_args())
    return _MODELS[(str(run_dir), options.model_args())]


# ------------------------------------------------------------------------------------- one input


def predict_input(job: Job, progress=None) -> dict:
    """Predict one input into ``job.folder`` (atomically); never raises for a failing input."""
    from wsolctl.io import atomic_directory, write_json

    began = time.perf_counter()
    base = {"slide": job.input.name, "path": str(job.input.path), "kind": job.input.kind}
    try:
        loaded = _loaded(job.run_dir, job.options)
        with atomic_directory(job.folder) as tmp:
            predict_one = predict_slide if job.input.kind == "slide" else predict_image
            row = {**base, "status": "ok", "error": None,
                   **predict_one(loaded, job.input.path, tmp, job.options, job.xml, progress)}
            row["duration_s"] = time.perf_counter() - began
            write_json(tmp / RESULT, {"key": job.key, "row": row})
        return row
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one bad input must not stop the others
        message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
        return {**base, "status": "failed", "error": message, "duration_s": time.perf_counter() - began}


def _settings(loaded, options: PredictOptions) -> tuple[int, float]:
    return loaded.class_index(options.target), loaded.threshold if options.threshold is None else options.threshold


def _warn_if_nothing(loaded, _class_index: int, threshold: float) -> None:
    """Maps lie in [0, 1]: a τ above 1 (τ* = 2, "predicting nothing scored best") draws no region."""
    if threshold > 1:
        import warnings

        from wsolctl.errors import PredictsNothingWarning

        warnings.warn(f"{loaded.method_label} ({loaded.selection}, run {loaded.run_id}): threshold τ* = {threshold:g} "
                      "predicts nothing (on its test masks an empty prediction scored the best mIoU), so no region "
                      "will be drawn; heatmaps are still written. Pass --threshold to draw regions.",
                      PredictsNothingWarning, stacklevel=3)


def region_threshold(threshold: float, values: np.ndarray) -> float:
    """``threshold``, or where it is NaN (a model whose threshold rule is Otsu per map, e.g. b-pseudo
    with ``evaluation.pseudo_threshold: otsu``) Otsu's threshold of this input's map values."""
    if math.isfinite(threshold):
        return threshold
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values)) if values.size and values.min() < values.max() else 1.0


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

    class_index, threshold = _settings(loaded, options)
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


def score_slide(heat: np.ndarray, scored: np.ndarray, xml: Optional[Path], ds: float, threshold: float) -> dict:
    """PxAP (:class:`~wsolctl.metrics.LocalizationMeter`) and Dice at ``threshold`` of the heatmap
    against the slide's ASAP annotation (none: a slide without tumour), over ``scored`` pixels,
    the annotation rasterised at the heatmap's pixel centres."""
    import torch

    from wsolctl.metrics import LocalizationMeter
    from wsolctl.wsi.annotations import SlideAnnotations, parse_asap

    annotations = parse_asap(xml) if xml is not None else SlideAnnotations()
    truth = annotations.mask(0, 0, heat.shape[1], heat.shape[0], ds)[scored]
    values = heat[scored]
    meter = LocalizationMeter()
    if values.size:
        meter.update(torch.from_numpy(values)[None, None], torch.from_numpy(truth)[None, None])
    predicted = values >= threshold
    overlap = float(np.count_nonzero(predicted & truth))
    denominator = float(np.count_nonzero(predicted) + np.count_nonzero(truth))
    return {"annotated": xml is not None, "pxap": meter.compute().pxap if values.size else math.nan,
            "dice": 100.0 * 2 * overlap / denominator if denominator else math.nan}


def predict_image(loaded, path: Path, folder: Path, options: PredictOptions, xml: Optional[Path], progress=None) -> dict:
    """An ordinary image is one tile: resized to the model's input, its map normalised on its own."""
    from PIL import Image

    from wsolctl.predict.heatmap import normalise
    from wsolctl.predict.model import TileScorer
    from wsolctl.predict.overlay import resize_map, write_overlay

    class_index, threshold = _settings(loaded, options)
    with Image.open(path) as handle:
        image = np.asarray(handle.convert("RGB"))
    size = loaded.image_size
    pixels = np.array(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    probabilities, maps = TileScorer(loaded, class_index)(pixels[None])
    raw = maps[0].cpu().numpy()
    norm = normalise(loaded.map_kind, raw, np.ones(raw.shape, bool))
    heat = np.clip(resize_map(norm.apply(raw), image.shape[1], image.shape[0]), 0, 1)
    threshold = region_threshold(threshold, heat)
    Image.fromarray(np.round(heat * 255).astype(np.uint8)).save(folder / "cam.png")
    class_name = loaded.class_name(class_index)
    write_overlay(folder / "overlay.png", image, heat, None, f"{class_name} map", threshold,
                  f"{path.name} · {loaded.method_label} / {loaded.backbone} · P({class_name}) = {probabilities[0]:.3f}")
    area = float(np.count_nonzero(heat >= threshold))
    return {"tiles": 1, "tissue_tiles": 1, "score_max": float(probabilities[0]), "score_mean": float(probabilities[0]),
            "region_area": area, "region_area_mm2": None, "regions": None}


# ---------------------------------------------------------------------------------------- driver


def predict(run_dir: Path, inputs: list[Path], out: Path, options: Optional[PredictOptions] = None,
            quiet: bool = False) -> Predictions:
    """Predict every input into ``out``; writes ``out/predictions.parquet`` (and ``scores.md`` with
    annotations). Failing inputs are rows with status ``failed``; the others finish."""
    from wsolctl.executors import WorkerDied, WorkerPool, backend, threads_per_worker
    from wsolctl.predict.resolution import with_study_mpp
    from wsolctl.progress import Progress

    options = options or PredictOptions()
    run_dir, out = Path(run_dir), Path(out)
    if options.annotations is not None and not Path(options.annotations).is_dir():
        raise InputError(f"--annotations {options.annotations}: folder not found")
    loaded = _loaded(run_dir, options)  # a wrong model choice fails here, before any work
    options = options.model_copy(update={"selection": loaded.selection})  # the study's rule, when left out
    _MODELS[(str(run_dir), options.model_args())] = loaded
    options = with_study_mpp(options, run_dir, loaded.run_id)
    _warn_if_nothing(loaded, *_settings(loaded, options))
    found = discover_inputs(inputs)
    identity = {"format": FORMAT, "run_dir": str(run_dir.resolve()), "run_id": loaded.run_id,
                "method": loaded.method_label, "options": options.model_dump(mode="json", exclude={"workers", "executor", "readers"})}
    jobs = [Job(item, out / item.name, stable_key(identity, fingerprint(item.path), fingerprint(xml)), xml, run_dir, options)
            for item in found for xml in [_annotation(options.annotations, item.name)]]
    rows: dict[int, dict] = {}
    todo = []
    for index, job in enumerate(jobs):
        previous = _finished(job)
        if previous is not None:
            rows[index] = previous
        else:
            todo.append(index)
    threads = None if backend(options.executor).in_process(options.workers) else threads_per_worker(options.workers)
    pool = WorkerPool(options.workers, options.executor, _init_worker, (run_dir, options.model_args(), threads))
    with Progress(quiet=quiet) as progress, pool:
        bar = progress.task("inputs", len(jobs))
        bar.advance(len(jobs) - len(todo))
        work = partial(predict_input, progress=progress) if pool.sequential else predict_input
        for position, result in pool.map(work, [jobs[i] for i in todo]):
            index = todo[position]
            if isinstance(result, WorkerDied):
                item = jobs[index].input
                result = {"slide": item.name, "path": str(item.path), "kind": item.kind, "status": "failed",
                          "error": str(result), "duration_s": None}
            rows[index] = result
            bar.describe(f"inputs ({sum(r['status'] == 'failed' for r in rows.values())} failed)")
            bar.advance()
    ordered = [rows[i] for i in range(len(jobs))]
    return Predictions(ordered, _write_predictions(out, ordered), _write_scores(out, ordered, options))


def _finished(job: Job) -> Optional[dict]:
    path = job.folder / RESULT
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return data["row"] if data.get("key") == job.key else None


def _write_predictions(out: Path, rows: list[dict]) -> Path:
    import polars as pl

    from wsolctl.io import write_parquet

    schema = {name: getattr(pl, kind) for name, kind in COLUMNS.items()}
    frame = pl.DataFrame([{c: row.get(c) for c in COLUMNS} for row in rows], schema=schema)
    write_parquet(out / "predictions.parquet", frame)
    return out / "predictions.parquet"


def _write_scores(out: Path, rows: list[dict], options: PredictOptions) -> Optional[str]:
    """With annotations: per-slide PxAP / Dice and their means, as Markdown (``out/scores.md``)."""
    if options.annotations is None:
        return None
    from wsolctl.io import write_text

    scored = [r for r in rows if r["status"] == "ok" and r["kind"] == "slide"]
    lines = ["| slide | annotated | PxAP | Dice at threshold | max P | regions |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['slide']} | {'yes' if r['annotated'] else 'no'} | {_fmt(r['pxap'])} | {_fmt(r['dice'])} | "
              f"{_fmt(r['score_max'], 3)} | {r['regions']} |" for r in scored]
    pxap = [r["pxap"] for r in scored if r["pxap"] is not None and math.isfinite(r["pxap"])]
    dice = [r["dice"] for r in scored if r["dice"] is not None and math.isfinite(r["dice"])]
    lines.append(f"| **mean over slides with tumour** | | {_fmt(np.mean(pxap) if pxap else None)} | "
                 f"{_fmt(np.mean(dice) if dice else None)} | | |")
    text = "\n".join(lines) + "\n"
    write_text(out / "scores.md", text)
    return text


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"

"""The numbers of a prediction: the class and threshold a map is read at, a slide's PxAP and Dice
against its annotation, and the tables written over all inputs (``predictions.parquet``,
``scores.md``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from wsolctl.predict.inputs import PredictOptions

COLUMNS = {"slide": "String", "path": "String", "kind": "String", "status": "String", "error": "String",
           "tiles": "Int64", "tissue_tiles": "Int64", "score_max": "Float64", "score_mean": "Float64",
           "region_area": "Float64", "region_area_mm2": "Float64", "regions": "Int64", "duration_s": "Float64",
           "annotated": "Boolean", "pxap": "Float64", "dice": "Float64"}


def settings(loaded, options: PredictOptions) -> tuple[int, float]:
    """The class whose map is predicted and the threshold its regions are drawn at (default the run's τ*)."""
    return loaded.class_index(options.target), loaded.threshold if options.threshold is None else options.threshold


def region_threshold(threshold: float, values: np.ndarray) -> float:
    """``threshold``, or where it is NaN (a model whose threshold rule is Otsu per map, e.g. b-pseudo
    with ``evaluation.pseudo_threshold: otsu``) Otsu's threshold of this input's map values."""
    if math.isfinite(threshold):
        return threshold
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(values)) if values.size and values.min() < values.max() else 1.0


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


def write_predictions(out: Path, rows: list[dict]) -> Path:
    import polars as pl

    from wsolctl.io import write_parquet

    schema = {name: getattr(pl, kind) for name, kind in COLUMNS.items()}
    frame = pl.DataFrame([{c: row.get(c) for c in COLUMNS} for row in rows], schema=schema)
    write_parquet(out / "predictions.parquet", frame)
    return out / "predictions.parquet"


def write_scores(out: Path, rows: list[dict], options: PredictOptions) -> Optional[str]:
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


"""An ordinary image (png, jpg, plain TIFF): one tile, its map normalised on its own."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from wsolctl.predict.inputs import PredictOptions
from wsolctl.predict.scores import region_threshold, settings


def predict_image(loaded, path: Path, folder: Path, options: PredictOptions, xml: Optional[Path], progress=None) -> dict:
    """An ordinary image is one tile: resized to the model's input, its map normalised on its own."""
    from PIL import Image

    from wsolctl.predict.heatmap import normalise
    from wsolctl.predict.model import TileScorer
    from wsolctl.predict.overlay import resize_map, write_overlay

    class_index, threshold = settings(loaded, options)
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


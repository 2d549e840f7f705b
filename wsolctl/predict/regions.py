"""Regions where the heatmap reaches the threshold, as polygons in level-0 pixel coordinates
(origin at the slide's top-left corner, x right, y down: what QuPath, ASAP and large-image use).

Files are written in place: :mod:`wsolctl.predict.run` writes a slide's outputs into a temporary
folder renamed into place when all are done.

Each 4-connected component of ``heat ≥ threshold`` becomes one polygon: its outer boundary and its
holes, traced with scikit-image's marching squares at level ½ (so edges run along heatmap pixel
borders, through the midpoints of boundary pixel edges); collinear vertices are dropped. Components
and holes smaller than ``MIN_PIXELS`` heatmap pixels are left out (speckle: a hole per nucleus
would make thousands of rings); region areas count the pixels of what is kept. Heatmap pixel (i, j) covers level-0
``[j·ds, (j+1)·ds) × [i·ds, (i+1)·ds)``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Region:
    exterior: np.ndarray  # (N, 2) level-0 (x, y), closed (first = last)
    holes: tuple[np.ndarray, ...]
    area: float  # level-0 pixels²
    peak: float  # map maximum inside
    mean: float


MIN_PIXELS = 4


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """Vertices of a closed (first = last) ring where the direction changes."""
    points = ring[:-1]
    before, after = points - np.roll(points, 1, axis=0), np.roll(points, -1, axis=0) - points
    turn = np.abs(before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]) > 1e-9
    kept = points[turn] if turn.sum() >= 3 else points
    return np.vstack([kept, kept[:1]])


def _ring(binary: np.ndarray, row0: int, col0: int, ds: float) -> np.ndarray:
    """The longest closed contour of a bool crop (padded) in level-0 (x, y)."""
    from skimage.measure import find_contours

    contours = find_contours(np.pad(binary, 1).astype(np.float32), 0.5)
    contour = _drop_collinear(max(contours, key=len))
    # padded (r, c) → heatmap pixel centre coordinates (r - 1, c - 1) → level 0 (centre of (i, j) = (j + ½)·ds)
    xy = np.stack([(contour[:, 1] + col0 - 0.5) * ds, (contour[:, 0] + row0 - 0.5) * ds], axis=1)
    if not np.array_equal(xy[0], xy[-1]):
        xy = np.vstack([xy, xy[:1]])
    return xy


def extract_regions(heat: np.ndarray, threshold: float, ds: float) -> list[Region]:
    """Polygons of ``heat ≥ threshold`` (heat at ``ds`` level-0 pixels per pixel), largest first."""
    from scipy import ndimage

    labels, _ = ndimage.label(heat >= threshold)
    out = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        component = labels[box] == index
        if component.sum() < MIN_PIXELS:
            continue
        filled = ndimage.binary_fill_holes(component)
        holes_labels, n_holes = ndimage.label(filled & ~component, structure=np.ones((3, 3)))
        sizes = np.bincount(holes_labels.ravel(), minlength=n_holes + 1)
        holes = tuple(_ring(holes_labels == h, box[0].start, box[1].start, ds)
                      for h in range(1, n_holes + 1) if sizes[h] >= MIN_PIXELS)
        component = filled & ~np.isin(holes_labels, [h for h in range(1, n_holes + 1) if sizes[h] >= MIN_PIXELS])
        values = heat[box][component]
        out.append(Region(_ring(filled, box[0].start, box[1].start, ds), holes, float(component.sum()) * ds * ds,
                          float(values.max()), float(values.mean())))
    out.sort(key=lambda r: -r.area)
    return out


def _coords(ring: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in ring]


def write_geojson(path: Path, regions: list[Region], class_name: str, mm_x: float | None) -> None:
    """A FeatureCollection of QuPath annotations (File → Import objects)."""
    features = []
    for index, region in enumerate(regions):
        measurements = {"Area (level-0 px^2)": region.area, "Map max": region.peak, "Map mean": region.mean}
        if mm_x:
            measurements["Area (mm^2)"] = region.area * mm_x * mm_x
        features.append({"type": "Feature", "id": f"region-{index}",
                         "geometry": {"type": "Polygon", "coordinates": [_coords(region.exterior)]
                                      + [_coords(hole) for hole in region.holes]},
                         "properties": {"objectType": "annotation", "name": f"{class_name} region {index}",
                                        "classification": {"name": class_name, "color": [220, 40, 40]},
                                        "measurements": measurements}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}) + "\n", encoding="utf-8")


def write_tile_detections(path: Path, frame, footprint: int) -> None:
    """Tiles as QuPath detections with their measurements: *Measure → Show measurement maps* then
    draws the heatmap natively (colour maps and thresholds in QuPath). Written feature by feature."""
    with path.open("w", encoding="utf-8") as handle:
        handle.write('{"type": "FeatureCollection", "features": [')
        rows = frame.select("x", "y", "tissue", "probability", "map_max", "map_mean").iter_rows()
        for index, (x, y, t, p, m, a) in enumerate(rows):
            square = [[x, y], [x + footprint, y], [x + footprint, y + footprint], [x, y + footprint], [x, y]]
            feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
                       "properties": {"objectType": "detection", "name": "tile", "measurements":
                                      {"Probability": p, "Map max": m, "Map mean": a, "Tissue": t}}}
            handle.write(("," if index else "") + "\n" + json.dumps(feature))
        handle.write("\n]}\n")


def write_asap(path: Path, regions: list[Region]) -> None:
    """ASAP XML: outer boundaries in group ``_0`` and holes in ``_2`` (the CAMELYON16 convention that
    ASAP's AnnotationToMask and ``wsolctl predict --annotations`` read back)."""
    from wsolctl.wsi.annotations import asap_xml

    polygons = []
    for region in regions:
        polygons.append(("_0", [tuple(p) for p in np.round(region.exterior[:-1], 2).tolist()]))
        polygons += [("_2", [tuple(p) for p in np.round(hole[:-1], 2).tolist()]) for hole in region.holes]
    path.write_text(asap_xml(polygons), encoding="utf-8")

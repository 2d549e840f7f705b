"""ASAP XML annotations (CAMELYON16) and their exact rasterisation.

``Annotations/Annotation[@PartOfGroup]/Coordinates/Coordinate[@Order,@X,@Y]``, level-0 pixel
coordinates (floats). Groups ``_0``, ``_1`` and ``Tumor`` are tumour, ``_2`` (and ``Exclusion``) are
exclusion regions drawn inside tumour: the mask is the union of tumour polygons minus the union of
exclusion polygons, as ASAP's ``AnnotationToMask`` with {_0: 1, _1: 1, _2: 0} draws it.

QuPath GeoJSON exports (:func:`parse_geojson`) give one :class:`SlideAnnotations` per class: a
polygon there is a list of rings (exterior, then holes), filled with the even-odd rule over all its
rings, so holes are exact.

Rasterisation is exact: a pixel is inside when its centre is inside the polygon under the even-odd
rule (ray casting, the PNPOLY convention used by matplotlib and scikit-image), evaluated with a
vectorised scan-line fill, so cost grows with rows × edges, not pixels × edges. PIL's polygon fill
is not used: it also paints boundary pixels, growing tumours and shrinking holes.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from wsolctl.errors import DataError

TUMOR_GROUPS = frozenset({"_0", "_1", "tumor"})
EXCLUSION_GROUPS = frozenset({"_2", "exclusion"})


@dataclass
class SlideAnnotations:
    tumor: list = field(default_factory=list)  # polygons: (N, 2) float arrays of (x, y), level 0, or lists of rings
    exclusion: list[np.ndarray] = field(default_factory=list)
    ignored_groups: list[str] = field(default_factory=list)  # groups neither tumour nor exclusion

    def tumor_bbox(self) -> Optional[tuple[float, float, float, float]]:
        """(x_min, y_min, x_max, y_max) of the tumour polygons, None without any."""
        if not self.tumor:
            return None
        points = np.concatenate([ring for polygon in self.tumor for ring in _rings(polygon)])
        return (float(points[:, 0].min()), float(points[:, 1].min()),
                float(points[:, 0].max()), float(points[:, 1].max()))

    def mask(self, x: float, y: float, width: int, height: int, downsample: float = 1.0) -> np.ndarray:
        """Tumour mask (bool, height × width) of the box whose top-left level-0 corner is (x, y);
        pixel (i, j) has its centre at (x + (j + ½)·downsample, y + (i + ½)·downsample)."""
        out = rasterize(self.tumor, x, y, width, height, downsample)
        if self.exclusion and out.any():
            out &= ~rasterize(self.exclusion, x, y, width, height, downsample)
        return out


def parse_asap(path: Path) -> SlideAnnotations:
    """Read an ASAP XML file; malformed files raise :class:`DataError` naming the file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DataError(f"{path}: not a readable ASAP XML file ({exc})") from None
    out = SlideAnnotations()
    for index, annotation in enumerate(root.iter("Annotation")):
        group = (annotation.get("PartOfGroup") or "").strip()
        name = annotation.get("Name") or f"#{index}"
        coords = []
        for coord in annotation.iter("Coordinate"):
            try:
                coords.append((float(coord.get("Order", len(coords))), float(coord.get("X")), float(coord.get("Y"))))
            except (TypeError, ValueError):
                raise DataError(f"{path}: annotation {name!r} has a coordinate without numeric X/Y") from None
        if len(coords) < 3:
            raise DataError(f"{path}: annotation {name!r} has {len(coords)} coordinates; a polygon needs 3")
        coords.sort(key=lambda c: c[0])
        polygon = np.array([(cx, cy) for _, cx, cy in coords], dtype=np.float64)
        if group.lower() in TUMOR_GROUPS:
            out.tumor.append(polygon)
        elif group.lower() in EXCLUSION_GROUPS:
            out.exclusion.append(polygon)
        elif group not in out.ignored_groups:
            out.ignored_groups.append(group)
    return out


def rasterize(polygons: list[np.ndarray], x: float, y: float, width: int, height: int,
              downsample: float = 1.0, block_rows: int = 512) -> np.ndarray:
    """Union of the polygons (each filled with the even-odd rule) on a width × height pixel grid."""
    out = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        _fill(out, polygon if isinstance(polygon, list) else np.asarray(polygon, dtype=np.float64), x, y,
              downsample, block_rows)
    return out


def _rings(polygon) -> list[np.ndarray]:
    """A polygon's rings: one (N, 2) array, or a list of them (exterior, then holes)."""
    if isinstance(polygon, np.ndarray) and polygon.ndim == 2:
        return [polygon]
    return [np.asarray(ring, dtype=np.float64) for ring in polygon]


def _fill(out: np.ndarray, polygon, x: float, y: float, downsample: float, block_rows: int) -> None:
    height, width = out.shape
    # Pixel coordinates in which pixel (i, j) has its centre at (j, i); the edges of every ring.
    rings = _rings(polygon)
    px = [(r[:, 0] - x) / downsample - 0.5 for r in rings]
    py = [(r[:, 1] - y) / downsample - 0.5 for r in rings]
    xa, ya = np.concatenate(px), np.concatenate(py)
    xb, yb = np.concatenate([np.roll(v, -1) for v in px]), np.concatenate([np.roll(v, -1) for v in py])
    flat = ya == yb  # horizontal edges never cross a scan line under the (y > r) != (y' > r) rule
    xa, ya, xb, yb = xa[~flat], ya[~flat], xb[~flat], yb[~flat]
    if xa.size == 0:
        return
    first = max(0, int(np.floor(min(ya.min(), yb.min()))))
    last = min(height - 1, int(np.ceil(max(ya.max(), yb.max()))))
    if first > last or max(xa.max(), xb.max()) < 0 or min(xa.min(), xb.min()) > width - 1:
        return
    slope = (xb - xa) / (yb - ya)
    low, high = np.minimum(ya, yb), np.maximum(ya, yb)
    for start in range(first, last + 1, block_rows):
        rows = np.arange(start, min(start + block_rows, last + 1), dtype=np.float64)
        keep = (high >= rows[0]) & (low < rows[-1] + 1)
        if not keep.any():
            continue
        r = rows[:, None]
        crossing = (ya[keep] > r) != (yb[keep] > r)
        xs = np.where(crossing, xa[keep] + (r - ya[keep]) * slope[keep], np.inf)
        xs.sort(axis=1)
        count = crossing.sum(axis=1)
        pairs = int(count.max()) // 2
        if pairs == 0:
            continue
        # Centre j is inside when an odd number of crossings lie strictly to its right, i.e.
        # x_{2k} <= j < x_{2k+1}  →  j in [ceil(x_{2k}), ceil(x_{2k+1})).
        begin = np.clip(np.ceil(xs[:, 0: 2 * pairs: 2]), 0, width)
        end = np.clip(np.ceil(xs[:, 1: 2 * pairs: 2]), 0, width)
        valid = np.isfinite(end) & (end > begin)
        row_index = np.broadcast_to(np.arange(rows.size)[:, None], begin.shape)[valid]
        diff = np.zeros((rows.size, width + 1), dtype=np.int32)
        np.add.at(diff, (row_index, begin[valid].astype(np.int64)), 1)
        np.add.at(diff, (row_index, end[valid].astype(np.int64)), -1)
        block = np.cumsum(diff[:, :width], axis=1) > 0
        out[int(rows[0]): int(rows[-1]) + 1] |= block


def parse_geojson(path: Path) -> dict[Optional[str], SlideAnnotations]:
    """A QuPath GeoJSON export (a FeatureCollection, or a bare list of Features as older versions
    write) → ``{class name: its polygons}``; the class is ``properties.classification.name`` (None
    when absent). Coordinates are level-0 pixels. ``Polygon`` and ``MultiPolygon`` are read (exterior
    ring, then holes); other geometries (points, lines) are listed in ``ignored_groups`` of class None."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable GeoJSON file ({exc})") from None
    features = data.get("features") if isinstance(data, dict) and data.get("type") == "FeatureCollection" else data
    if isinstance(features, dict) and features.get("type") == "Feature":
        features = [features]
    if not isinstance(features, list):
        raise DataError(f"{path}: expected a GeoJSON FeatureCollection or a list of Features")
    out: dict[Optional[str], SlideAnnotations] = {}
    for index, feature in enumerate(features):
        if not isinstance(feature, dict):
            raise DataError(f"{path}: feature {index} is not a GeoJSON Feature")
        geometry, properties = feature.get("geometry") or {}, feature.get("properties") or {}
        classification = properties.get("classification") or {}
        name = classification.get("name") if isinstance(classification, dict) else None
        kind, coordinates = geometry.get("type"), geometry.get("coordinates")
        polygons = [coordinates] if kind == "Polygon" else coordinates if kind == "MultiPolygon" else None
        target = out.setdefault(name, SlideAnnotations())
        if polygons is None:
            target.ignored_groups.append(f"feature {index}: {kind or 'no geometry'}")
            continue
        for polygon in polygons:
            try:
                rings = [np.asarray(ring, dtype=np.float64)[:, :2] for ring in polygon]
            except (TypeError, ValueError, IndexError):
                raise DataError(f"{path}: feature {index}: polygon coordinates are not [x, y] pairs") from None
            if not rings or any(len(ring) < 3 for ring in rings):
                raise DataError(f"{path}: feature {index}: a polygon ring needs 3 points")
            target.tumor.append(rings)
    return out


def asap_xml(polygons: list[tuple[str, list[tuple[float, float]]]]) -> str:
    """Write ASAP XML for ``[(group, [(x, y), ...]), ...]`` (used by tests and examples)."""
    lines = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"]
    for index, (group, points) in enumerate(polygons):
        lines.append(f'\t\t<Annotation Name="Annotation {index}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">')
        lines.append("\t\t\t<Coordinates>")
        lines += [f'\t\t\t\t<Coordinate Order="{i}" X="{px}" Y="{py}" />' for i, (px, py) in enumerate(points)]
        lines += ["\t\t\t</Coordinates>", "\t\t</Annotation>"]
    lines += ["\t</Annotations>", "\t<AnnotationGroups>"]
    for group in dict.fromkeys(g for g, _ in polygons):
        lines.append(f'\t\t<Group Name="{group}" PartOfGroup="None" Color="#64FE2E"><Attributes /></Group>')
    lines += ["\t</AnnotationGroups>", "</ASAP_Annotations>", ""]
    return "\n".join(lines)


def qupath_geojson(polygons: list[tuple[Optional[str], list[list[tuple[float, float]]]]]) -> dict:
    """A FeatureCollection as QuPath exports it for ``[(class or None, [exterior, hole, ...]), ...]``
    (used by tests and examples); rings are closed (first point repeated)."""
    features = []
    for name, rings in polygons:
        properties: dict = {"objectType": "annotation"}
        if name is not None:
            properties["classification"] = {"name": name, "color": [200, 0, 0]}
        closed = [[list(p) for p in ring] + [list(ring[0])] for ring in rings]
        features.append({"type": "Feature", "id": f"{len(features)}", "geometry": {"type": "Polygon", "coordinates": closed},
                         "properties": properties})
    return {"type": "FeatureCollection", "features": features}

"""One slide of any cohort → patches at a physical resolution, with declared labels and masks.

Resolution: a patch is ``patch_size`` pixels at ``mpp`` µm/px (default: the slide's own). Its level-0
side is ``L = round(patch_size · mpp / slide_mpp)`` pixels, so the patches' true pixel size is
``slide_mpp · L / patch_size`` (recorded; within ½ level-0 pixel per patch of the target). Patches lie
on a non-overlapping grid of L × L level-0 cells from the top-left corner; large-image reads each at
the nearest pyramid level at or finer than the target and resamples it (Lanczos) to patch_size².

Labels (in this order):

* the slide's label is the normal class → every tissue patch is normal (no mask: all background);
* the slide has annotations (classes matched to the manifest's labels ignoring case) → a cell
  whose fraction of annotated class *c* (the largest) is ≥ ``min_roi`` is a *c* patch, its mask rasterised exactly from the polygons at patch resolution; a
  cell with 0 < fraction < ``min_roi`` is dropped, and unannotated cells are not used (annotations
  are rarely exhaustive); annotation classes equal to the normal class are ignored;
* no annotations → skipped with its reason, or (``unannotated="inherit"``) every tissue patch takes
  the slide's label, without a mask.

Tissue detection is the CAMELYON16 sampler's: Otsu thresholds on an overview at ``tissue_mpp``
µm/px, cells pre-selected on the overview, each patch re-checked (tissue fraction ≥ ``pt``).
``max_per_slide`` keeps at most that many patches, the first accepted in a random order seeded per
slide. Each slide's patches are written into ``patches/<slide>/`` at once (a folder renamed into
place); its result is cached, so a rerun resumes per slide.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from wsolctl.errors import DataError
from wsolctl.wsi.annotations import SlideAnnotations
from wsolctl.wsi.fingerprint import fingerprint, stable_key
from wsolctl.wsi.manifest import ManifestSlide
from wsolctl.wsi.slidejobs import SlideCache


class CohortParams(BaseModel):
    """Options of ``wsolctl sample slides``."""

    model_config = ConfigDict(extra="forbid")
    patch_size: int = Field(512, ge=8, le=8192, description="patch side in pixels at `mpp`")
    mpp: Optional[float] = Field(None, gt=0, description="µm per patch pixel; default: each slide's own")
    min_roi: float = Field(0.2, gt=0, le=1, description="least annotated fraction of a labelled patch "
                           "(survey's CAMELYON16 p0: 0.2)")
    pt: float = Field(0.1, ge=0, le=1, description="least tissue fraction of any patch")
    unannotated: Literal["skip", "inherit"] = Field("skip", description="a labelled slide without annotations: "
                                                    "skip it, or give its tissue patches its label (no masks)")
    normal_class: str = Field("normal", min_length=1, description="the class whose slides hold no ROI")
    max_per_slide: Optional[int] = Field(None, ge=1, description="at most this many patches per slide")
    tissue_mpp: float = Field(16.0, gt=0, description="µm/px of the overview for tissue detection")
    seed: int = Field(0, ge=0)
    folds: int = Field(5, ge=1, le=20)
    valcl_fraction: float = Field(0.2, gt=0, lt=1, description="fraction of the non-test patients per stratum in valcl")
    valpx_per_class: int = Field(5, ge=1, description="valpx patches per class, from valcl's annotated ones")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="patients per stratum drawn into test when no "
                                 "manifest row has split=test")


def patch_files(slide: str, x: int, y: int) -> tuple[str, str]:
    """A patch's image and mask paths, relative to the output folder."""
    stem = f"patches/{slide}/x{x}_y{y}"
    return f"{stem}.png", f"{stem}_mask.png"


def read_annotations(path: Path, slide_label: str, classes: tuple[str, ...]) -> dict[str, SlideAnnotations]:
    """``{class: polygons}`` of an annotation file: ASAP XML (its tumour groups take the slide's
    label) or QuPath GeoJSON (unclassified objects take the slide's label). Class names that match a
    label ignoring case take the label's spelling (QuPath's "Tumor" is the manifest's "tumor")."""
    from wsolctl.wsi.annotations import parse_asap, parse_geojson

    found = {slide_label: parse_asap(path)} if path.suffix.lower() == ".xml" else parse_geojson(path)
    by_case = {c.casefold(): c for c in classes}
    out: dict[str, SlideAnnotations] = {}
    for name, polygons in found.items():
        name = name or slide_label
        merged = out.setdefault(by_case.get(name.casefold(), name), SlideAnnotations())
        merged.tumor += polygons.tumor
        merged.exclusion += polygons.exclusion
    return out


def sample_slide(slide: ManifestSlide, classes: tuple[str, ...], p: CohortParams, cache: SlideCache, progress) -> dict:
    """Sample and write one slide; ``{"patches": [...], "slide_mpp", "patch_mpp", "masks"}`` or
    ``{"error": reason}`` for a slide that cannot be used (the others go on)."""
    key = stable_key("cohort", p.model_dump(include={"patch_size", "mpp", "min_roi", "pt", "unannotated", "normal_class",
                                                      "max_per_slide", "tissue_mpp", "seed"}),
                     slide.label, slide.mpp, classes, fingerprint(slide.path), fingerprint(slide.annotations))
    folder = cache.dir.parent / "patches" / slide.name
    hit = cache.get("cohort", slide.name, key)
    if hit is not None and (folder.is_dir() or "error" in hit or not hit["patches"]):
        return hit
    try:
        result = _sample(slide, classes, p, folder, progress)
    except DataError as exc:
        result = {"error": str(exc).removeprefix(f"{slide.path}: ")}
    except Exception as exc:  # noqa: BLE001 -- a corrupt slide (any reader error) fails alone
        result = {"error": f"cannot be read ({type(exc).__name__}: {exc})"}
    cache.put("cohort", slide.name, key, result)
    return result


def _sample(slide: ManifestSlide, classes: tuple[str, ...], p: CohortParams, folder: Path, progress) -> dict:
    from PIL import Image

    from wsolctl.io import atomic_directory
    from wsolctl.wsi.sampling import annotated_cells, tissue_cells
    from wsolctl.wsi.slide import Slide
    from wsolctl.wsi.tissue import otsu_thresholds, tissue_fraction, tissue_mask

    normal = slide.label == p.normal_class
    regions = {} if normal or slide.annotations is None else read_annotations(slide.annotations, slide.label, classes)
    unknown = sorted(set(regions) - set(classes))
    if unknown:
        raise DataError(f"annotation class(es) {', '.join(map(repr, unknown))} of {slide.annotations.name} are not "
                        f"labels of the manifest ({', '.join(classes)})")
    regions = {c: a for c, a in regions.items() if c != p.normal_class and a.tumor}
    if not normal and not regions and p.unannotated == "skip":
        raise DataError("labelled slide without annotations (use --unannotated inherit to give its patches its label)")
    source = Slide(slide.path)
    slide_mpp = slide.mpp or (source.mm_x * 1000 if source.mm_x else None)
    if slide_mpp is None:
        raise DataError("no pixel size in the slide's metadata: give it in the manifest's mpp column")
    side = max(1, round(p.patch_size * (p.mpp or slide_mpp) / slide_mpp))  # level-0 pixels per patch
    overview, sx, sy = source.overview(max(1.0, p.tissue_mpp / slide_mpp))
    thresholds = otsu_thresholds(overview)
    rng = np.random.default_rng([p.seed, zlib.crc32(slide.name.encode())])  # one stream per slide
    if regions:
        cells = [cell[:3] for cell in annotated_cells(regions, source.width, source.height, side, p.patch_size, p.min_roi)]
    else:
        low = tissue_mask(overview, thresholds)
        cells = [(x, y, slide.label) for x, y in tissue_cells(low, (sx, sy), source.width, source.height, side, p.pt)]
    order = rng.permutation(len(cells)) if p.max_per_slide else np.arange(len(cells))
    patches = []
    bar = progress.task(f"  {slide.name}: patches", p.max_per_slide or len(cells))
    with atomic_directory(folder) as tmp:
        for index in order:
            x, y, label = cells[int(index)]
            rgb = source.region(x, y, p.patch_size, p.patch_size, side / p.patch_size)
            tissue = tissue_fraction(rgb, thresholds)
            if tissue < p.pt:
                continue
            image, mask_file = patch_files(slide.name, x, y)
            mask = regions[label].mask(x, y, p.patch_size, p.patch_size, side / p.patch_size) if regions else None
            Image.fromarray(rgb).save(tmp / Path(image).name, compress_level=3)
            if mask is not None:
                Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / Path(mask_file).name, compress_level=3)
            patches.append({"x": x, "y": y, "label": label, "tissue": tissue,
                            "roi": float(mask.mean()) if mask is not None else 0.0, "mask": mask is not None})
            bar.advance()
            if len(patches) == p.max_per_slide:
                break
    bar.close()
    patches.sort(key=lambda q: (q["y"], q["x"]))
    return {"patches": patches, "slide_mpp": slide_mpp, "patch_mpp": slide_mpp * side / p.patch_size,
            "masks": bool(regions) or normal}

"""CAMELYON16 slides → 512² patches and masks (survey Appendix B): the second of the sampler's
three jobs, between finding the inputs (:mod:`wsolctl.wsi.camelyon16_inputs`) and writing folds and
tables (:mod:`wsolctl.data.camelyon`, whose ``sample_camelyon16`` runs all three; ``wsolctl sample
camelyon16`` calls it).

Writes under ``out``::

    patches/<slide>/x<X>_y<Y>.png        RGB patch, level 0, top-left (X, Y)
    patches/<slide>/x<X>_y<Y>_mask.png   tumour mask 0/255 (tumour patches only)
    .cache/                              per-slide results: a rerun skips finished slides

See :mod:`wsolctl.wsi.sampling` for the protocol and docs/datasets.md for the deviations.
"""
from __future__ import annotations

import shutil
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsolctl.errors import DataError
from wsolctl.executors import WorkerPool, fork_is_safe
from wsolctl.io import atomic_directory
from wsolctl.wsi.camelyon16_inputs import SETS, Findings, set_of
from wsolctl.wsi.fingerprint import fingerprint, stable_key
from wsolctl.wsi.manifest import ManifestSlide
from wsolctl.wsi.slidejobs import SlideCache, SlideRunner


class SamplingParams(BaseModel):
    """Sampling options; defaults are the survey's (p0 20 %, p1 50 %, pt 10 %, pn 1 %, 512² patches)."""

    model_config = ConfigDict(extra="forbid")
    patch_size: int = Field(512, ge=8, le=8192, description="patch side at level 0 (survey: 512)")
    p0: float = Field(0.2, gt=0, le=1, description="minimal tumour fraction of a metastatic patch")
    p1: float = Field(0.5, gt=0, le=1, description="above it a metastatic patch is category 2 (calibrated away)")
    pt: float = Field(0.1, ge=0, le=1, description="minimal tissue fraction of any patch")
    pn: float = Field(0.01, ge=0, le=1, description="category-2 patches kept = int(pn × category-1 count)")
    bin_width: float = Field(0.05, gt=0, le=0.5, description="histogram bin width of the calibration")
    reference_calibration: bool = Field(False, description="reproduce the reference code's calibration "
                                        "(missing break: keeps far more category-2 patches)")
    max_trials_inside_bin: int = Field(100, ge=1, description="reference calibration only")
    tissue_downsample: float = Field(64, ge=1, description="overview downsample for Otsu tissue detection "
                                     "(64 = level 6 of CAMELYON16)")
    seed: int = Field(0, ge=0)
    folds: int = Field(5, ge=1, le=20)
    valcl_fraction: float = Field(0.2, gt=0, lt=1, description="fraction of training slides per class in valcl")
    valpx_per_class: int = Field(5, ge=1, description="valpx patches per class drawn from valcl")

    @model_validator(mode="after")
    def _order(self) -> "SamplingParams":
        if self.p0 > self.p1:
            raise ValueError(f"p0 ({self.p0}) must be <= p1 ({self.p1})")
        return self



def sample_slides(entries: list[ManifestSlide], out: Path, p: SamplingParams, findings: Findings, quiet: bool = False,
                  workers: int = 1, executor: str = "local") -> list[dict]:
    """Sample and write every slide's patches; returns one manifest row per patch, in (set, slide,
    y, x) order. Slides that cannot be read are skipped into ``findings``.

    ``workers`` slides are processed at a time, in a pool of processes (``executor="local"``) or as
    Ray tasks (``"ray"``). The output does not depend on it: every slide draws from its own random
    stream, and results are combined in slide order (see :func:`_normal_rows` for the quotas)."""
    from wsolctl.progress import Progress

    out.mkdir(parents=True, exist_ok=True)
    import large_image  # noqa: F401  (imported once here, inherited by forked workers)

    pool = WorkerPool(workers, executor, start_method="fork" if fork_is_safe() else "spawn")
    with pool.start(), Progress(quiet=quiet) as progress:  # workers start before the progress thread
        run = SlideRunner(out, p, progress, pool)
        bar = progress.task("slides", len(entries))
        tumor = _tumor_patches([e for e in entries if e.label == "tumor"], run, bar, findings)
        rows = [row for set_index in range(len(SETS)) for row in _set_rows(set_index, entries, tumor, run, bar, findings)]
        rows.sort(key=lambda r: (SETS.index(r["set"]), r["slide"], r["y"], r["x"]))
        _write_patches(out, rows, {e.name: e for e in entries}, run)
    return rows


def _set_rows(set_index: int, entries: list[ManifestSlide], tumor: dict[str, list[dict]], run: SlideRunner, bar,
              findings: Findings) -> list[dict]:
    """One set's (train or test) calibrated metastatic patches, and as many normal ones."""
    set_ = SETS[set_index]
    rows = _calibrated_rows(set_, set_index, tumor, {e.name: e for e in entries}, run.p, findings)
    wanted = sum(1 for r in rows if r["category"] == "tumor")
    normals = [e for e in entries if set_of(e) == set_ and e.label == "normal"]
    bar.describe(f"normal patches ({set_})")
    if not normals and wanted:
        findings.warnings.append(f"{set_}: no normal slides; {wanted} metastatic patches are unbalanced")
    return rows + _normal_rows(normals, wanted, run, bar, findings)


def _tumor_patches(entries: list[ManifestSlide], run: SlideRunner, bar, findings: Findings) -> dict[str, list[dict]]:
    """Slide name -> the candidate patches of each tumour slide (before calibration)."""
    bar.describe("tumour candidates")
    tumor: dict[str, list[dict]] = {}
    for entry, result in zip(entries, run(_tumor_slide, [(e,) for e in entries], bar)):
        if "error" in result:
            findings.skip(entry.name, set_of(entry), entry.label, result["error"])
            continue
        tumor[entry.name] = result["patches"]
        if result.get("warning"):
            findings.warnings.append(f"{entry.name}: {result['warning']}")
        for group in result.get("ignored_groups", []):
            findings.warnings.append(f"{entry.name}: annotation group {group!r} is neither tumour nor exclusion; ignored")
    return tumor


def _normal_rows(normals: list[ManifestSlide], wanted: int, run: SlideRunner, bar, findings: Findings) -> list[dict]:
    """Normal patches to balance ``wanted`` metastatic ones: slide i's quota is its share of
    ``wanted`` plus what the slides before it fell short of. Slides are sampled in parallel with
    their share; a slide that must carry a shortfall and found its whole share is then sampled
    again with the larger quota. That gives the same patches as one slide after the other:
    a slide's patches for quota q are the first q accepted cells of its own random order."""
    if not normals:
        return []
    shares = [wanted // len(normals) + (1 if i < wanted % len(normals) else 0) for i in range(len(normals))]
    first = run(_normal_slide, [(e, q) for e, q in zip(normals, shares)], bar)
    rows, carry = [], 0
    for entry, share, result in zip(normals, shares, first):
        quota = share + carry
        if quota > share and "error" not in result and len(result["patches"]) == share:
            (result,) = run(_normal_slide, [(entry, quota)])
        if "error" in result:
            findings.skip(entry.name, set_of(entry), entry.label, result["error"])
            got = []
        else:
            got = result["patches"]
        carry = quota - len(got)
        rows += [_row(entry, patch, 0) for patch in got]
    if carry > 0:
        findings.warnings.append(f"{set_of(normals[0])}: {carry} normal patch(es) short of the {wanted} metastatic "
                                 "ones (not enough tissue on the normal slides)")
    return rows


def _tumor_slide(entry: ManifestSlide, p: SamplingParams, cache: SlideCache, progress) -> dict:
    from wsolctl.wsi.annotations import parse_asap
    from wsolctl.wsi.sampling import tumor_candidates
    from wsolctl.wsi.slide import Slide
    from wsolctl.wsi.tissue import otsu_thresholds

    key = stable_key("tumor", p.patch_size, p.p0, p.pt, p.tissue_downsample, fingerprint(entry.path), fingerprint(entry.annotations))
    hit = cache.get("tumor", entry.name, key)
    if hit is not None:
        return hit
    annotations = parse_asap(entry.annotations)  # a malformed XML is an error, not a skip
    try:
        slide = Slide(entry.path)
    except DataError as exc:
        return {"error": str(exc)}
    overview, _, _ = slide.overview(p.tissue_downsample)
    thresholds = otsu_thresholds(overview)
    found = tumor_candidates(slide, annotations, thresholds, p.patch_size, p.p0, p.pt)
    result = {"patches": [{"x": c.x, "y": c.y, "tissue": c.tissue, "tumor": c.tumor} for c in found],
              "ignored_groups": annotations.ignored_groups}
    if not annotations.tumor:
        result["warning"] = "no tumour polygon in the annotation"
    cache.put("tumor", entry.name, key, result)
    return result


def _normal_slide(entry: ManifestSlide, quota: int, p: SamplingParams, cache: SlideCache, progress) -> dict:
    from wsolctl.wsi.sampling import normal_patches
    from wsolctl.wsi.slide import Slide
    from wsolctl.wsi.tissue import otsu_thresholds

    key = stable_key("normal", p.patch_size, p.pt, p.tissue_downsample, p.seed, quota, fingerprint(entry.path))
    hit = cache.get("normal", entry.name, key)
    if hit is not None:
        return hit
    if quota <= 0:
        return {"patches": []}
    try:
        slide = Slide(entry.path)
    except DataError as exc:
        return {"error": str(exc)}
    overview, sx, sy = slide.overview(p.tissue_downsample)
    thresholds = otsu_thresholds(overview)
    rng = np.random.default_rng([p.seed, zlib.crc32(entry.name.encode())])  # one stream per slide
    bar = progress.task(f"  {entry.name}: patches", quota)
    found, reads = normal_patches(slide, overview, (sx, sy), thresholds, p.patch_size, p.pt, quota, rng,
                                  on_patch=bar.advance)
    bar.close()
    result = {"patches": [{"x": c.x, "y": c.y, "tissue": c.tissue, "tumor": 0.0} for c in found], "reads": reads}
    cache.put("normal", entry.name, key, result)
    return result


def _row(entry: ManifestSlide, patch: dict, calibration: int) -> dict:
    return {"slide": entry.name, "set": set_of(entry), "slide_label": entry.label, "x": int(patch["x"]),
            "y": int(patch["y"]), "tissue": float(patch["tissue"]), "tumor": float(patch["tumor"]),
            "category": "tumor" if calibration else "normal", "calibration": calibration}


def _calibrated_rows(set_: str, set_index: int, tumor: dict[str, list[dict]], by_name: dict[str, ManifestSlide],
                     p: SamplingParams, findings: Findings) -> list[dict]:
    from wsolctl.wsi.sampling import calibrate

    pool = [(name, patch) for name in sorted(tumor) if set_of(by_name[name]) == set_ for patch in tumor[name]]
    if not pool:
        return []
    rng = np.random.default_rng([p.seed, set_index, 1])
    kept, category, wanted = calibrate(np.array([patch["tumor"] for _, patch in pool]), p.p0, p.p1, p.pn, rng,
                                       p.bin_width, p.reference_calibration, p.max_trials_inside_bin)
    got = int((category == 2).sum())
    if got < wanted:
        findings.warnings.append(f"{set_}: calibration asked for {wanted} category-2 patches, only {got} exist")
    return [_row(by_name[pool[i][0]], pool[i][1], int(c)) for i, c in zip(kept, category)]


def patch_paths(row: dict) -> tuple[str, Optional[str]]:
    """A manifest row's image and mask (None for normal patches), relative to ``out``."""
    stem = f"patches/{row['slide']}/x{row['x']}_y{row['y']}"
    return f"{stem}.png", (f"{stem}_mask.png" if row["category"] == "tumor" else None)


def _write_patches(out: Path, rows: list[dict], by_name: dict[str, ManifestSlide], run: SlideRunner) -> None:
    """Write each slide's patches (and masks) into a temp folder renamed into place; skip slides
    whose folder already holds exactly these patches. Sets each tumour row's fraction from its mask."""
    by_slide: dict[str, list[dict]] = {}
    for row in rows:
        by_slide.setdefault(row["slide"], []).append(row)
    patches_dir = out / "patches"
    patches_dir.mkdir(parents=True, exist_ok=True)
    for stale in patches_dir.iterdir():  # slides of an earlier run with other options
        if stale.is_dir() and stale.name not in by_slide:
            shutil.rmtree(stale)
    bar = run.progress.task("writing patches (slides)", len(by_slide))
    jobs = [(by_name[name], [(r["x"], r["y"], r["category"]) for r in slide_rows]) for name, slide_rows in by_slide.items()]
    for slide_rows, tumor in zip(by_slide.values(), run(_slide_patches, jobs, bar)):
        for row, fraction in zip(slide_rows, tumor):
            row["tumor"] = fraction
    bar.close()


def _slide_patches(entry: ManifestSlide, cells: list[tuple[int, int, str]], p: SamplingParams, cache: SlideCache,
                   progress) -> list[float]:
    """Write one slide's patches; returns the tumour fraction of each written mask (the truth; 0
    for normal patches)."""
    from PIL import Image

    from wsolctl.wsi.annotations import parse_asap
    from wsolctl.wsi.slide import Slide

    key = stable_key("written", p.patch_size, cells, fingerprint(entry.path), fingerprint(entry.annotations))
    hit = cache.get("written", entry.name, key)
    folder = cache.dir.parent / "patches" / entry.name
    if hit is not None and folder.is_dir():
        return hit["tumor"]
    slide = Slide(entry.path)
    annotations = parse_asap(entry.annotations) if entry.annotations else None
    tumor = []
    bar = progress.task(f"  {entry.name}: patches", len(cells))
    with atomic_directory(folder) as tmp:
        for x, y, category in cells:
            image, mask = patch_paths({"slide": entry.name, "x": x, "y": y, "category": category})
            rgb = slide.region(x, y, p.patch_size, p.patch_size)
            Image.fromarray(rgb).save(tmp / Path(image).name, compress_level=3)
            fraction = 0.0
            if mask is not None:
                binary = annotations.mask(x, y, p.patch_size, p.patch_size)
                fraction = float(binary.mean())
                Image.fromarray(binary.astype(np.uint8) * 255).save(tmp / Path(mask).name, compress_level=3)
            tumor.append(fraction)
            bar.advance()
    bar.close()
    cache.put("written", entry.name, key, {"tumor": tumor})
    return tumor


"""CAMELYON16 as distributed → 512² patches, masks, fold files and a manifest (survey Appendix B).

``sample_camelyon16(slides_dir, annotations_dir, out, reference_csv)`` does the work (``wsolctl
sample camelyon16`` calls it); the ``camelyon16`` dataset plugin (:mod:`wsolctl.data.camelyon`)
reads its output (``dataset.root`` = ``out``) or, given ``params.slides``/``annotations``, runs it
on first use.

Inputs: slides named ``normal_*``, ``tumor_*`` (the challenge's training set) and ``test_*`` (its
test set) in any format large-image reads, found recursively; ASAP XML files named after their slide;
the challenge's reference CSV (``Test_001,Tumor,Macro,...``) for the test labels. Without the CSV a
test slide is tumour exactly when it has an XML file.

Output (``out``)::

    patches/<slide>/x<X>_y<Y>.png        RGB patch, level 0, top-left (X, Y)
    patches/<slide>/x<X>_y<Y>_mask.png   tumour mask 0/255 (tumour patches only)
    encoding.yaml, fold-K/...            fold format ({normal: 0, tumor: 1}); image paths relative to out
    manifest.parquet                     one row per patch
    skipped.parquet                      slides left out, with the reason
    wsolctl-camelyon16.json              stamp: params, inputs, counts, warnings (written last)
    .cache/                              per-slide results: a rerun skips finished slides

See :mod:`wsolctl.wsi.sampling` for the protocol and docs/datasets.md for the deviations.
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from wsolctl.data.folds import Sample, write_encoding, write_split
from wsolctl.errors import DataError
from wsolctl.io import atomic_directory, temporary_directory
from wsolctl.wsi.fingerprint import fingerprint, stable_key
from wsolctl.wsi.parallel import SlidePool, WorkerDied, fork_is_safe

STAMP = "wsolctl-camelyon16.json"
CLASSES = {"normal": 0, "tumor": 1}
SETS = ("train", "test")
FORMAT = 1


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


@dataclass(frozen=True)
class SlideEntry:
    name: str  # file stem, as distributed (e.g. tumor_001)
    path: Path
    set: str  # the challenge's train / test
    label: str  # normal / tumor
    xml: Optional[Path]


# --------------------------------------------------------------------------------------------- inputs


def read_reference(path: Path) -> dict[str, str]:
    """``{slide name in lower case: "tumor" | "normal"}`` from the challenge's reference CSV."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: reference CSV not found")
    out: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            row = [cell.strip() for cell in row]
            if not any(row):
                continue
            label = row[1].lower() if len(row) > 1 else ""
            if label not in CLASSES:
                if number == 1 and len(row) > 1:
                    continue  # a header line
                raise DataError(f"{path}:{number}: expected 'slide,Tumor|Normal,...', got {','.join(row)!r}")
            name = Path(row[0]).stem.lower()
            if name in out:
                raise DataError(f"{path}:{number}: slide {row[0]!r} is listed twice")
            out[name] = label
    if not out:
        raise DataError(f"{path}: no slide labels found")
    return out


def discover(slides_dir: Path, annotations_dir: Optional[Path], reference: Optional[Path]
             ) -> tuple[list[SlideEntry], list[dict], list[str]]:
    """Slides to sample, slides skipped (with reasons) and warnings."""
    from wsolctl.wsi.slide import SLIDE_SUFFIXES

    slides_dir = Path(slides_dir)
    if not slides_dir.is_dir():
        raise DataError(f"{slides_dir}: slides folder not found")
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise DataError(f"{annotations_dir}: annotations folder not found")
    found: dict[str, Path] = {}
    for path in sorted(slides_dir.rglob("*")):
        if path.is_file() and path.suffix.lower() in SLIDE_SUFFIXES and not path.name.startswith("."):
            key = path.stem.lower()
            if key in found:
                raise DataError(f"{path}: slide name {path.stem!r} also used by {found[key]}")
            found[key] = path
    if not found:
        raise DataError(f"{slides_dir}: no slides found ({', '.join(SLIDE_SUFFIXES)})")
    xmls: dict[str, Path] = {}
    if annotations_dir is not None:
        for path in sorted(Path(annotations_dir).rglob("*.xml")):
            xmls.setdefault(path.stem.lower(), path)
    labels = read_reference(reference) if reference is not None else None
    entries, skipped, warnings = [], [], []

    def skip(name: str, set_: str, label: str, reason: str) -> None:
        skipped.append({"slide": name, "set": set_, "label": label, "reason": reason})
        warnings.append(f"skipped {name}: {reason}")

    for key, path in sorted(found.items()):
        xml = xmls.get(key)
        name = path.stem
        if key.startswith("normal"):
            set_, label = "train", "normal"
        elif key.startswith("tumor"):
            set_, label = "train", "tumor"
        elif key.startswith("test"):
            set_ = "test"
            if labels is None:
                label = "tumor" if xml else "normal"
            elif key not in labels:
                skip(name, set_, "", f"not listed in the reference CSV {reference}")
                continue
            else:
                label = labels[key]
        else:
            skip(name, "", "", "name is not normal_*, tumor_* or test_*")
            continue
        if label == "tumor" and xml is None:
            skip(name, set_, label, "tumour slide without an annotation XML")
            continue
        if label == "normal" and xml is not None:
            warnings.append(f"{name}: normal slide has an annotation {xml.name}; ignored")
            xml = None
        entries.append(SlideEntry(name, path, set_, label, xml))
    if labels is not None:
        missing = sorted(set(labels) - {k for k in found if k.startswith("test")})
        if missing:
            warnings.append(f"{len(missing)} slide(s) of the reference CSV not found: {', '.join(missing[:5])}"
                            + (" ..." if len(missing) > 5 else ""))
    return entries, skipped, warnings


# ------------------------------------------------------------------------------------------- sampling


class _Cache:
    """Per-slide JSON results under ``out/.cache``, valid only for the same key."""

    def __init__(self, out: Path):
        self.dir = out / ".cache"

    def get(self, kind: str, slide: str, key: str) -> Optional[dict]:
        path = self.dir / f"{kind}-{slide}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                return None
            if data.get("key") == key:
                return data
        return None

    def put(self, kind: str, slide: str, key: str, data: dict) -> None:
        from wsolctl.io import write_json

        write_json(self.dir / f"{kind}-{slide}.json", {"key": key, **data})


def sample_camelyon16(slides_dir: Path, annotations_dir: Optional[Path], out: Path, reference: Optional[Path] = None,
                      params: Optional[SamplingParams] = None, quiet: bool = False, workers: int = 1,
                      executor: str = "local") -> dict:
    """Sample CAMELYON16 into ``out`` (resumable; a finished identical run returns at once).
    Returns the stamp (params, counts, skipped slides, warnings); the caller shows the warnings.

    ``workers`` slides are processed at a time, in a pool of processes (``executor="local"``) or as
    Ray tasks (``"ray"``). The output does not depend on it: every slide draws from its own random
    stream, and results are combined in slide order (see :func:`_normal_rows` for the quotas)."""
    from wsolctl.io import write_json
    from wsolctl.progress import Progress

    p = params or SamplingParams()
    out = Path(out)
    entries, skipped, warnings = discover(slides_dir, annotations_dir, reference)
    inputs = sorted([e.name, e.set, e.label, fingerprint(e.path), fingerprint(e.xml)] for e in entries)
    identity = {"format": FORMAT, "params": p.model_dump(mode="json"), "inputs": stable_key(inputs),
                "reference": fingerprint(reference)}
    stamp_path = out / STAMP
    if stamp_path.is_file() and (out / "manifest.parquet").is_file():
        try:
            stamp = json.loads(stamp_path.read_text())
        except json.JSONDecodeError:
            stamp = {}
        if {k: stamp.get(k) for k in identity} == identity:
            return stamp
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    import large_image  # noqa: F401  (imported once here, inherited by forked workers)

    pool = SlidePool(workers, executor, start_method="fork" if fork_is_safe() else "spawn")
    with pool.start(), Progress(quiet=quiet) as progress:  # workers start before the progress thread
        run = _Runner(out, p, progress, pool)
        slides_bar = progress.task("slides", len(entries))
        tumor: dict[str, list[dict]] = {}
        tumour_entries = [e for e in entries if e.label == "tumor"]
        slides_bar.describe("tumour candidates")
        for entry, result in zip(tumour_entries, run(_tumor_slide, [(e,) for e in tumour_entries], slides_bar)):
            if "error" in result:
                skipped.append({"slide": entry.name, "set": entry.set, "label": entry.label, "reason": result["error"]})
                warnings.append(f"skipped {entry.name}: {result['error']}")
            else:
                tumor[entry.name] = result["patches"]
                if result.get("warning"):
                    warnings.append(f"{entry.name}: {result['warning']}")
                for group in result.get("ignored_groups", []):
                    warnings.append(f"{entry.name}: annotation group {group!r} is neither tumour nor exclusion; ignored")
        by_name = {e.name: e for e in entries}
        for set_index, set_ in enumerate(SETS):
            rows += _calibrated_rows(set_, set_index, tumor, by_name, p, warnings)
            wanted = sum(1 for r in rows if r["set"] == set_ and r["category"] == "tumor")
            normals = [e for e in entries if e.set == set_ and e.label == "normal"]
            slides_bar.describe(f"normal patches ({set_})")
            rows += _normal_rows(normals, wanted, run, slides_bar, skipped, warnings)
            if not normals and wanted:
                warnings.append(f"{set_}: no normal slides; {wanted} metastatic patches are unbalanced")
        rows.sort(key=lambda r: (SETS.index(r["set"]), r["slide"], r["y"], r["x"]))
        _write_patches(out, rows, by_name, run)
    folds = _assign_folds(rows, p)
    _write_folds(out, rows, folds, p)
    _write_tables(out, rows, folds, skipped, p)
    counts = {set_: {c: sum(1 for r in rows if r["set"] == set_ and r["category"] == c) for c in CLASSES}
              for set_ in SETS}
    stamp = {**identity, "counts": counts, "skipped": skipped, "warnings": warnings}
    write_json(stamp_path, stamp)
    return stamp


class _Runner:
    """Calls a per-slide function ``fn(*job, p, cache, progress)`` over many slides, in this process
    (with nested progress bars) or in the pool's workers (one bar: slides done); results in order."""

    def __init__(self, out: Path, p: SamplingParams, progress, pool: SlidePool):
        self.out, self.p, self.progress, self.pool = out, p, progress, pool

    def __call__(self, fn, jobs: list[tuple], bar=None) -> list:
        call = partial(_call, fn, self.p, self.out, self.progress if self.pool.sequential else None)
        results: list = [None] * len(jobs)
        for index, result in self.pool.map(call, jobs):
            if isinstance(result, WorkerDied):
                raise RuntimeError(f"{jobs[index][0].name}: {result}")
            results[index] = result
            if bar is not None:
                bar.advance()
        return results


def _call(fn, p: SamplingParams, out: Path, progress, job: tuple):
    from wsolctl.progress import Progress

    return fn(*job, p, _Cache(out), progress or Progress(quiet=True))


def _normal_rows(normals: list[SlideEntry], wanted: int, run: _Runner, bar, skipped: list[dict],
                 warnings: list[str]) -> list[dict]:
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
            skipped.append({"slide": entry.name, "set": entry.set, "label": entry.label, "reason": result["error"]})
            warnings.append(f"skipped {entry.name}: {result['error']}")
            got = []
        else:
            got = result["patches"]
        carry = quota - len(got)
        rows += [_row(entry, patch, 0) for patch in got]
    if carry > 0:
        warnings.append(f"{normals[0].set}: {carry} normal patch(es) short of the {wanted} metastatic ones "
                        "(not enough tissue on the normal slides)")
    return rows


def _tumor_slide(entry: SlideEntry, p: SamplingParams, cache: _Cache, progress) -> dict:
    from wsolctl.wsi.annotations import parse_asap
    from wsolctl.wsi.sampling import tumor_candidates
    from wsolctl.wsi.slide import Slide
    from wsolctl.wsi.tissue import otsu_thresholds

    key = stable_key("tumor", p.patch_size, p.p0, p.pt, p.tissue_downsample, fingerprint(entry.path), fingerprint(entry.xml))
    hit = cache.get("tumor", entry.name, key)
    if hit is not None:
        return hit
    annotations = parse_asap(entry.xml)  # a malformed XML is an error, not a skip
    try:
        slide = Slide(entry.path)
    except DataError as exc:
        return {"error": str(exc)}
    overview, _, _ = slide.overview(p.tissue_downsample)
    thresholds = otsu_thresholds(overview)
    bar = progress.task(f"  {entry.name}: rows of the tumour box", None)

    found = tumor_candidates(slide, annotations, thresholds, p.patch_size, p.p0, p.pt, on_row=bar.update)
    bar.close()
    result = {"patches": [{"x": c.x, "y": c.y, "tissue": c.tissue, "tumor": c.tumor} for c in found],
              "ignored_groups": annotations.ignored_groups}
    if not annotations.tumor:
        result["warning"] = "no tumour polygon in the annotation"
    cache.put("tumor", entry.name, key, result)
    return result


def _normal_slide(entry: SlideEntry, quota: int, p: SamplingParams, cache: _Cache, progress) -> dict:
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


def _row(entry: SlideEntry, patch: dict, calibration: int) -> dict:
    return {"slide": entry.name, "set": entry.set, "slide_label": entry.label, "x": int(patch["x"]),
            "y": int(patch["y"]), "tissue": float(patch["tissue"]), "tumor": float(patch["tumor"]),
            "category": "tumor" if calibration else "normal", "calibration": calibration}


def _calibrated_rows(set_: str, set_index: int, tumor: dict[str, list[dict]], by_name: dict[str, SlideEntry],
                     p: SamplingParams, warnings: list[str]) -> list[dict]:
    from wsolctl.wsi.sampling import calibrate

    pool = [(name, patch) for name in sorted(tumor) if by_name[name].set == set_ for patch in tumor[name]]
    if not pool:
        return []
    rng = np.random.default_rng([p.seed, set_index, 1])
    kept, category, wanted = calibrate(np.array([patch["tumor"] for _, patch in pool]), p.p0, p.p1, p.pn, rng,
                                       p.bin_width, p.reference_calibration, p.max_trials_inside_bin)
    got = int((category == 2).sum())
    if got < wanted:
        warnings.append(f"{set_}: calibration asked for {wanted} category-2 patches, only {got} exist")
    return [_row(by_name[pool[i][0]], pool[i][1], int(c)) for i, c in zip(kept, category)]


def _paths(row: dict) -> tuple[str, Optional[str]]:
    stem = f"patches/{row['slide']}/x{row['x']}_y{row['y']}"
    return f"{stem}.png", (f"{stem}_mask.png" if row["category"] == "tumor" else None)


def _write_patches(out: Path, rows: list[dict], by_name: dict[str, SlideEntry], run: _Runner) -> None:
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


def _slide_patches(entry: SlideEntry, cells: list[tuple[int, int, str]], p: SamplingParams, cache: _Cache,
                   progress) -> list[float]:
    """Write one slide's patches; returns the tumour fraction of each written mask (the truth; 0
    for normal patches)."""
    from PIL import Image

    from wsolctl.wsi.annotations import parse_asap
    from wsolctl.wsi.slide import Slide

    key = stable_key("written", p.patch_size, cells, fingerprint(entry.path), fingerprint(entry.xml))
    hit = cache.get("written", entry.name, key)
    folder = cache.dir.parent / "patches" / entry.name
    if hit is not None and folder.is_dir():
        return hit["tumor"]
    slide = Slide(entry.path)
    annotations = parse_asap(entry.xml) if entry.xml else None
    tumor = []
    bar = progress.task(f"  {entry.name}: patches", len(cells))
    with atomic_directory(folder) as tmp:
        for x, y, category in cells:
            image, mask = _paths({"slide": entry.name, "x": x, "y": y, "category": category})
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


# ---------------------------------------------------------------------------------------------- folds


def _assign_folds(rows: list[dict], p: SamplingParams) -> list[dict[int, str]]:
    """Per row and fold: train / valcl / valcl+valpx / test. Training slides are split per class at
    slide level (no slide in two sets); valpx takes ``valpx_per_class`` patches per class from valcl."""
    train_slides = {label: sorted({r["slide"] for r in rows if r["set"] == "train" and r["slide_label"] == label})
                    for label in CLASSES}
    out: list[dict[int, str]] = [{} for _ in rows]
    for fold in range(p.folds):
        rng = np.random.default_rng([p.seed, fold, 2])
        val_slides: set[str] = set()
        for slides in train_slides.values():
            n = len(slides)
            n_val = min(max(1, round(n * p.valcl_fraction)), n - 1) if n >= 2 else 0
            val_slides |= {slides[i] for i in rng.permutation(n)[:n_val]}
        for i, row in enumerate(rows):
            out[i][fold] = "test" if row["set"] == "test" else ("valcl" if row["slide"] in val_slides else "train")
        rng = np.random.default_rng([p.seed, fold, 3])
        for label in CLASSES:
            val = [i for i, r in enumerate(rows) if out[i][fold] == "valcl" and r["category"] == label]
            for i in sorted(rng.choice(len(val), size=min(p.valpx_per_class, len(val)), replace=False).tolist()) if val else []:
                out[val[i]][fold] = "valcl+valpx"
    return out


def _write_folds(out: Path, rows: list[dict], folds: list[dict[int, str]], p: SamplingParams) -> None:
    staging = temporary_directory(out, ".folds.")
    try:
        write_encoding(staging, CLASSES)
        samples = []
        for row in rows:
            image, mask = _paths(row)
            samples.append(Sample(image, CLASSES[row["category"]], (p.patch_size, p.patch_size), (mask,) if mask else ()))
        for fold in range(p.folds):
            splits = {split: [] for split in ("train", "valcl", "valpx", "test")}
            for sample, assignment in zip(samples, folds):
                where = assignment[fold]
                if where == "valcl+valpx":
                    splits["valcl"].append(sample)
                    splits["valpx"].append(sample)
                else:
                    splits[where].append(sample)
            for split, items in splits.items():
                write_split(staging, fold, split, items)
        for old in out.glob("fold-*"):
            if old.is_dir() and old.name[5:].isdigit() and int(old.name[5:]) >= p.folds:
                shutil.rmtree(old)
        for fold in range(p.folds):
            final, new = out / f"fold-{fold}", staging / f"fold-{fold}"
            if final.exists():
                trash = staging / f"old-{fold}"
                final.rename(trash)
            new.rename(final)
        os.replace(staging / "encoding.yaml", out / "encoding.yaml")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_tables(out: Path, rows: list[dict], folds: list[dict[int, str]], skipped: list[dict],
                  p: SamplingParams) -> None:
    import polars as pl

    from wsolctl.io import write_parquet

    data = {
        "slide": [r["slide"] for r in rows], "set": [r["set"] for r in rows],
        "slide_label": [r["slide_label"] for r in rows],
        "x": [r["x"] for r in rows], "y": [r["y"] for r in rows], "level": [0] * len(rows),
        "size": [p.patch_size] * len(rows),
        "tissue_pct": [100.0 * r["tissue"] for r in rows], "tumor_pct": [100.0 * r["tumor"] for r in rows],
        "category": [r["category"] for r in rows], "calibration": [r["calibration"] for r in rows],
        "image": [_paths(r)[0] for r in rows], "mask": [_paths(r)[1] for r in rows],
    }
    for fold in range(p.folds):
        data[f"fold_{fold}"] = [f[fold] for f in folds]
    schema = {"slide": pl.String, "set": pl.String, "slide_label": pl.String, "x": pl.Int64, "y": pl.Int64,
              "level": pl.Int32, "size": pl.Int32, "tissue_pct": pl.Float64, "tumor_pct": pl.Float64,
              "category": pl.String, "calibration": pl.Int8, "image": pl.String, "mask": pl.String,
              **{f"fold_{k}": pl.String for k in range(p.folds)}}
    write_parquet(out / "manifest.parquet", pl.DataFrame(data, schema=schema))
    write_parquet(out / "skipped.parquet", pl.DataFrame(
        {k: [s[k] for s in skipped] for k in ("slide", "set", "label", "reason")},
        schema={k: pl.String for k in ("slide", "set", "label", "reason")}))

"""Any cohort of slides → patches, masks, fold files and ``patches.parquet`` (``wsolctl sample slides``).

:func:`sample_cohort` reads the manifest (:mod:`wsolctl.wsi.manifest`), samples every slide at the
requested physical resolution (:mod:`wsolctl.wsi.cohort`, in parallel with ``workers`` / Ray),
splits patients without leakage (:mod:`wsolctl.data.splits`) and writes under ``out``::

    patches/<slide>/x<X>_y<Y>.png (+ _mask.png)   patches, masks 0/255 (annotated patches only)
    encoding.yaml, fold-K/...                      the fold format (docs/datasets.md); paths relative to out
    patches.parquet                                one row per patch: provenance, split and folds
    skipped.parquet                                manifest rows left out, with the reason
    wsolctl-sample.json                            the stamp: params, inputs, counts, written last

A finished identical run returns its stamp at once (nothing written); an interrupted one resumes per
slide. The ``folds`` dataset plugin reads the result (``dataset: {name: folds, root: OUT}``; with
``masks: false`` when the stamp's ``masks`` is false, i.e. some patches inherit their slide's label).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from wsolctl.data.folds import Sample, write_folds
from wsolctl.data.splits import SplitParams, assign_folds, draw_test
from wsolctl.errors import DataError
from wsolctl.wsi.cohort import CohortParams, patch_files, sample_slide
from wsolctl.wsi.fingerprint import fingerprint, stable_key
from wsolctl.wsi.manifest import ManifestSlide, read_manifest
from wsolctl.wsi.slidejobs import finished_stamp

STAMP = "wsolctl-sample.json"
FORMAT = 1


def sample_cohort(manifest: Path, out: Path, params: Optional[CohortParams] = None, quiet: bool = False,
                  workers: int = 1, executor: str = "local") -> dict:
    """Sample the manifest's slides into ``out``; returns the stamp (params, counts, skipped rows)."""
    from wsolctl.io import write_json

    p, out = params or CohortParams(), Path(out)
    slides, skipped = read_manifest(manifest)
    if not slides:
        raise DataError(f"{manifest}: no usable slide" + "".join(f"\n{s['where']}: {s['reason']}" for s in skipped))
    classes = _classes(slides, p)
    identity = {"format": FORMAT, "params": p.model_dump(mode="json"), "classes": list(classes),
                "inputs": stable_key(fingerprint(manifest), sorted([s.name, fingerprint(s.path), fingerprint(s.annotations)]
                                                                 for s in slides))}
    finished = finished_stamp(out / STAMP, out / "patches.parquet", identity)
    if finished is not None:
        return finished
    results = _sample(slides, classes, out, p, quiet, workers, executor)
    rows, used = [], []
    for slide, result in zip(slides, results):
        if "error" in result:
            skipped.append({"where": slide.where, "slide": slide.name, "reason": result["error"]})
            continue
        used.append(slide)
        rows += [{**patch, "slide": slide.name, "patient": slide.patient, "fixed_test": slide.test,
                  "mpp": result["patch_mpp"], "slide_mpp": result["slide_mpp"], "masked": result["masks"]}
                 for patch in result["patches"]]
    if not rows:
        raise DataError(f"{manifest}: no patch sampled" + "".join(f"\n{s['where']}: {s['reason']}" for s in skipped))
    folds, test = _splits(rows, classes, p)
    encoding = {name: index for index, name in enumerate(classes)}
    samples = [Sample(patch_files(r["slide"], r["x"], r["y"])[0], encoding[r["label"]], (p.patch_size, p.patch_size),
                      (patch_files(r["slide"], r["x"], r["y"])[1],) if r["mask"] else ()) for r in rows]
    write_folds(out, encoding, samples, folds, p.folds)
    _write_tables(out, rows, folds, test, skipped, p)
    stamp = {**identity, "masks": all(r["masked"] for r in rows), "mpp": _mpp(rows),
             "counts": {c: sum(1 for r in rows if r["label"] == c) for c in classes},
             "patients": len({r["patient"] for r in rows}), "slides": len(used), "skipped": skipped}
    write_json(out / STAMP, stamp)
    return stamp


def _classes(slides: list[ManifestSlide], p: CohortParams) -> tuple[str, ...]:
    """Class names, normal class first (index 0), then the others by name."""
    labels = {s.label for s in slides}
    return tuple(([p.normal_class] if p.normal_class in labels else []) + sorted(labels - {p.normal_class}))


def _sample(slides: list[ManifestSlide], classes: tuple[str, ...], out: Path, p: CohortParams, quiet: bool,
            workers: int, executor: str) -> list[dict]:
    from wsolctl.executors import WorkerPool, fork_is_safe
    from wsolctl.progress import Progress
    from wsolctl.wsi.slidejobs import SlideRunner

    out.mkdir(parents=True, exist_ok=True)
    import large_image  # noqa: F401  (imported once here, inherited by forked workers)

    patches = out / "patches"
    if patches.is_dir():
        for stale in patches.iterdir():  # slides of an earlier manifest
            if stale.is_dir() and stale.name not in {s.name for s in slides}:
                shutil.rmtree(stale)
    pool = WorkerPool(workers, executor, start_method="fork" if fork_is_safe() else "spawn")
    with pool.start(), Progress(quiet=quiet) as progress:
        run = SlideRunner(out, p, progress, pool, deaths_fail_alone=True)
        return run(sample_slide, [(s, classes) for s in slides], progress.task("slides", len(slides)))


def _splits(rows: list[dict], classes: tuple[str, ...], p: CohortParams) -> tuple[list[dict[int, str]], list[bool]]:
    """Folds per row and whether each row is in test: grouped by patient, stratified by the patient's
    labels; the test patients are those with a slide fixed in test, else a drawn fraction."""
    labels: dict[str, set[str]] = {}
    for r in rows:
        labels.setdefault(r["patient"], set()).add(r["label"])
    strata = {patient: "+".join(sorted(names)) for patient, names in labels.items()}
    fixed = {r["patient"] for r in rows if r["fixed_test"]}
    test_patients = fixed if fixed else draw_test(strata, p.test_fraction, p.seed, classes)
    test = [r["patient"] in test_patients for r in rows]
    split = SplitParams(p.folds, p.seed, p.valcl_fraction, p.valpx_per_class)
    folds = assign_folds([r["patient"] for r in rows], [r["label"] for r in rows], test,
                         [r["mask"] or r["label"] == p.normal_class for r in rows],
                         {k: v for k, v in strata.items() if k not in test_patients}, classes, split)
    return folds, test


def _mpp(rows: list[dict]) -> Optional[float]:
    """The patches' µm/px when all share it (to 1 %), else None."""
    values = [r["mpp"] for r in rows]
    return round(sum(values) / len(values), 6) if max(values) <= 1.01 * min(values) else None


def _write_tables(out: Path, rows: list[dict], folds: list[dict[int, str]], test: list[bool], skipped: list[dict],
                  p: CohortParams) -> None:
    import polars as pl

    from wsolctl.io import write_parquet

    columns = {
        "slide": (pl.String, [r["slide"] for r in rows]), "patient": (pl.String, [r["patient"] for r in rows]),
        "label": (pl.String, [r["label"] for r in rows]), "x": (pl.Int64, [r["x"] for r in rows]),
        "y": (pl.Int64, [r["y"] for r in rows]), "mpp": (pl.Float64, [r["mpp"] for r in rows]),
        "slide_mpp": (pl.Float64, [r["slide_mpp"] for r in rows]),
        "patch_size": (pl.Int32, [p.patch_size] * len(rows)),
        "roi_fraction": (pl.Float64, [r["roi"] for r in rows]),
        "tissue_fraction": (pl.Float64, [r["tissue"] for r in rows]),
        "split": (pl.String, ["test" if t else "train" for t in test]),
        "image": (pl.String, [patch_files(r["slide"], r["x"], r["y"])[0] for r in rows]),
        "mask": (pl.String, [patch_files(r["slide"], r["x"], r["y"])[1] if r["mask"] else None for r in rows]),
        **{f"fold_{k}": (pl.String, [f[k] for f in folds]) for k in range(p.folds)},
    }
    write_parquet(out / "patches.parquet", pl.DataFrame({k: v for k, (_, v) in columns.items()},
                                                        schema={k: t for k, (t, _) in columns.items()}))
    write_parquet(out / "skipped.parquet", pl.DataFrame({k: [s[k] for s in skipped] for k in ("where", "slide", "reason")},
                                                        schema={k: pl.String for k in ("where", "slide", "reason")}))

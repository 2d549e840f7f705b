"""``wsolctl`` command line: a thin layer over :mod:`wsolctl.pipeline` and friends.

Torch is imported only by commands that train or evaluate, so ``--help``, ``validate``, ``show`` and
``methods`` stay fast. Bad input → one line per problem on stderr, exit code 2, no traceback.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from wsolctl.selection import RULES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Weakly-supervised object localization in histology, from one YAML recipe.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"wsolctl {version('wsolctl')}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="print the installed version and exit")) -> None:
    pass


SetOpt = typer.Option([], "--set", "-s", metavar="KEY=VALUE",
                      help="override a recipe field, value parsed as YAML (e.g. train.epochs=2); repeatable")
OutOpt = typer.Option(None, "--out", "-o", help="output directory (default: runs/<recipe name>)")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress display")
ExecOpt = typer.Option(None, "--executor", "-e", help="local | ray (overrides the recipe's executor.name)")
WorkersOpt = typer.Option(None, "--workers", "-w", min=1, help="parallel local workers (executor.workers)")


def _check_executor(name: str) -> None:
    from wsolctl.executors import EXECUTORS

    if name not in EXECUTORS:
        _fail(f"error: --executor must be {' or '.join(EXECUTORS)}, not {name!r}")


def _executor_overrides(executor: Optional[str], workers: Optional[int]) -> list[str]:
    return ([f"executor.name={executor}"] if executor else []) + ([f"executor.workers={workers}"] if workers else [])


def _fail(lines: str, code: int = 2) -> None:
    typer.echo(lines, err=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    """Run a library call, mapping known user errors to exit 2 and anything else to exit 1."""
    from pydantic import ValidationError

    from wsolctl.errors import InputError, RecipeError, RunsFailed, UnknownPlugin

    try:
        return fn(*args, **kwargs)
    except ValidationError as exc:  # options checked by a params model: one line per problem
        _fail("\n".join(f"error: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)))
    except (RecipeError, InputError, UnknownPlugin, FileNotFoundError) as exc:
        _fail(f"error: {exc}" if not isinstance(exc, RecipeError) else str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; rerun the same command to resume", 130)
    except RunsFailed as exc:
        _fail(f"error: {exc}", 1)
    except (RuntimeError, ValueError, OSError) as exc:
        if os.environ.get("WSOLCTL_DEBUG"):
            raise
        _fail(f"error: {type(exc).__name__}: {exc} (set WSOLCTL_DEBUG=1 for a traceback)", 1)


def _load(recipe: Path, overrides: List[str], check_data: bool = False):
    from wsolctl.recipe import load_recipe

    return _guard(load_recipe, recipe, overrides, check_data)


@app.command()
def validate(recipe: Path, set_: List[str] = SetOpt) -> None:
    """Check a recipe (exit 0 if valid, 2 otherwise)."""
    loaded = _load(recipe, set_, check_data=True)
    typer.echo(f"{recipe}: ok ({len(loaded.backbones)} backbone(s) × {len(loaded.methods)} method(s))")


@app.command()
def show(recipe: Path, set_: List[str] = SetOpt,
         runs: bool = typer.Option(False, "--runs", help="list the runs the recipe expands to, run nothing"),
         json_: bool = typer.Option(False, "--json", help="with --runs: print JSON instead of a table")) -> None:
    """Print the fully resolved recipe (bases merged, overrides applied, defaults filled) and each
    backbone's image normalisation."""
    loaded = _load(recipe, set_)
    if json_ and not runs:
        _fail("error: --json goes with --runs (the resolved recipe itself is printed as YAML)")
    if runs:
        from wsolctl.catalog import print_runs, run_catalog

        return _list(_guard(run_catalog, loaded), print_runs, json_)
    import yaml

    from wsolctl.catalog import normalization_lines

    typer.echo(yaml.safe_dump(loaded.resolved_dict(), sort_keys=False), nl=False)
    typer.echo("\n".join(_guard(normalization_lines, loaded)))


@app.command()
def run(recipe: Path, out: Optional[Path] = OutOpt, set_: List[str] = SetOpt, quiet: bool = QuietOpt,
        executor: Optional[str] = ExecOpt, workers: Optional[int] = WorkersOpt) -> None:
    """Train, select and report: the whole study of a recipe."""
    from wsolctl import pipeline

    loaded = _load(recipe, set_ + _executor_overrides(executor, workers), check_data=True)
    report = _guard(pipeline.run, loaded, out, quiet=quiet)
    _summary(report.parent, quiet)


@app.command()
def train(recipe: Path, out: Optional[Path] = OutOpt, set_: List[str] = SetOpt, quiet: bool = QuietOpt,
          executor: Optional[str] = ExecOpt, workers: Optional[int] = WorkersOpt) -> None:
    """Train every run of a recipe (resumes; skips finished runs)."""
    from wsolctl import pipeline

    done = _guard(pipeline.train, _load(recipe, set_ + _executor_overrides(executor, workers), check_data=True), out,
                  quiet=quiet)
    typer.echo(f"trained into {done}; next: wsolctl select {done}")


@app.command()
def select(out: Path, quiet: bool = QuietOpt) -> None:
    """Select B-LOC / B-CL models of a trained output directory and score them on test."""
    from wsolctl import pipeline

    _guard(pipeline.select, out, quiet=quiet)
    typer.echo(f"wrote {out / 'results.parquet'}; next: wsolctl report {out}")


@app.command()
def report(dirs: List[Path] = typer.Argument(..., metavar="RUN_DIR", help="output directories (or folders holding "
                                             "results.parquet), merged"),
           out: Optional[Path] = typer.Option(None, "--out", "-o", help="where to write (default: the only RUN_DIR)"),
           format_: str = typer.Option("md", "--format", "-f", help="md (report.md + figures/) or html (report.html "
                                       "with the figures embedded, opens alone; figures/ is written too)")) -> None:
    """Write the survey's tables and figures from output directories' Parquet files."""
    from wsolctl import pipeline

    if format_ not in ("md", "html"):
        _fail(f"error: --format must be md or html, not {format_!r}")
    if len(dirs) > 1 and out is None:
        _fail("error: several RUN_DIRs given: choose where the merged report goes with --out")
    typer.echo(f"wrote {_guard(pipeline.report, dirs, out, format_)}")


@app.command()
def methods(json_: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """List the installed methods, their kind, package and parameters."""
    from wsolctl.catalog import method_catalog, print_catalog

    _list(method_catalog(), print_catalog, json_)


@app.command()
def metrics(json_: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """List the metrics a recipe's evaluation.metrics may name: columns, units, whether they call the model."""
    from wsolctl.catalog import metric_catalog, print_metrics

    _list(metric_catalog(), print_metrics, json_)


def _list(rows, table, json_: bool) -> None:
    if json_:
        import json

        typer.echo(json.dumps(rows, indent=2))
    else:
        table(rows)


@app.command()
def backbones(json_: bool = typer.Option(False, "--json", help="print JSON instead of a table")) -> None:
    """List the installed backbones and named foundation models: weights, gated, cached, normalisation."""
    from wsolctl.catalog import backbone_catalog, print_backbones

    rows = _guard(backbone_catalog)
    if json_:
        import json

        typer.echo(json.dumps(rows, indent=2))
    else:
        print_backbones(rows)


@app.command()
def compare(baseline: Path, candidate: Path,
            tolerance: List[str] = typer.Option([], "--tolerance", "-t", metavar="METRIC=VALUE",
                                                help="allowed difference per metric, in its units (repeatable)"),
            mode: str = typer.Option("regression", "--mode", "-m",
                                     help="regression: fail only on a worse value beyond the tolerance; "
                                          "within: fail on |Δ| > tolerance either way; exact: fail on any difference"),
            within_ci: bool = typer.Option(False, "--within-ci",
                                           help="a value also passes when the baseline lies inside the candidate's "
                                                "bootstrap interval (results.parquet <metric>_ci_low/_ci_high)"),
            output: Optional[Path] = typer.Option(None, "--output", help="also write the Markdown table here")) -> None:
    """Compare results (Parquet files or output directories); exit 1 on any failing value or missing row."""
    from wsolctl.results.compare import compare as run_compare

    outcome = _guard(run_compare, baseline, candidate, tolerance, mode, within_ci)
    typer.echo(outcome.markdown)
    if output:
        from wsolctl.io import write_text

        write_text(output, outcome.markdown)
    raise typer.Exit(1 if outcome.failed else 0)


@app.command()
def predict(
        run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="study output directory (after select)"),
        inputs: List[Path] = typer.Argument(..., metavar="INPUT...", help="slides, image files or folders of them"),
        out: Path = typer.Option(..., "--out", "-o", help="output folder: one subfolder per input, predictions.parquet"),
        method: Optional[str] = typer.Option(None, "--method", "-m", help="method (default: the only one in RUN_DIR)"),
        backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="backbone (default: the only one)"),
        selection: Optional[str] = typer.Option(None, "--selection", help=" | ".join(RULES) + " (default: the "
                                                "study's first selection rule)"),
        run: Optional[str] = typer.Option(None, "--run", help="run id, when several folds/seeds hold the model"),
        target: Optional[str] = typer.Option(None, "--class", help="class name or index (default: index 1)"),
        tile_size: int = typer.Option(512, "--tile-size", help="tile side in pixels at --level"),
        level: int = typer.Option(0, "--level", help="read tiles at downsample 2**level"),
        mpp: Optional[float] = typer.Option(None, "--mpp", help="µm per tile pixel (default: the study's data's, "
                                            "when sampled by `sample slides`; else --level)"),
        overlap: float = typer.Option(0.0, "--overlap", help="fraction shared by neighbouring tiles, blended smoothly"),
        batch_size: int = typer.Option(16, "--batch-size"),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda[:N]"),
        threshold: Optional[float] = typer.Option(None, "--threshold", help="region threshold (default: the run's τ*)"),
        min_tissue: float = typer.Option(0.1, "--min-tissue", help="tiles with less tissue are skipped"),
        annotations: Optional[Path] = typer.Option(None, "--annotations", help="ASAP XML folder: score PxAP and Dice"),
        readers: int = typer.Option(4, "--readers", help="tile-reading threads per slide"),
        workers: int = typer.Option(1, "--workers", "-w", help="inputs predicted in parallel (processes or Ray tasks)"),
        executor: str = typer.Option("local", "--executor", "-e", help="local | ray"),
        quiet: bool = QuietOpt) -> None:
    """Apply a trained model to whole slides or images: heatmaps, regions, slide scores (docs/predict.md)."""
    from wsolctl.predict import PredictOptions, predict as run_predict

    options = _guard(PredictOptions, method=method, backbone=backbone, selection=selection, run=run, target=target,
                     tile_size=tile_size, level=level, mpp=mpp, overlap=overlap, batch_size=batch_size, device=device,
                     threshold=threshold, min_tissue=min_tissue, annotations=annotations, readers=readers,
                     workers=workers, executor=executor)
    result = _guard(run_predict, run_dir, inputs, out, options, quiet=quiet)
    if result.scores:
        typer.echo(result.scores, nl=False)
    for row in result.failed:
        typer.echo(f"error: {row['path']}: {row['error']}", err=True)
    typer.echo(f"wrote {result.path} ({len(result.rows)} input(s))")
    if result.failed:
        _fail(f"{len(result.failed)} of {len(result.rows)} input(s) failed; the others finished", 1)


sample_app = typer.Typer(no_args_is_help=True, help="Turn real whole-slide datasets into patches and fold files.")
app.add_typer(sample_app, name="sample")


@sample_app.command("camelyon16")
def sample_camelyon16(
        slides: Path = typer.Argument(..., help="folder of the slides (normal_*, tumor_*, test_*; searched recursively)"),
        annotations: Path = typer.Argument(..., help="folder of the ASAP XML annotations"),
        out: Path = typer.Option(..., "--out", "-o", help="output folder (patches, fold files, manifest.parquet)"),
        reference: Optional[Path] = typer.Option(None, "--reference", help="the challenge's reference CSV of test labels"),
        patch_size: int = typer.Option(512, "--patch-size"),
        p0: float = typer.Option(0.2, "--p0", help="minimal tumour fraction of a metastatic patch"),
        p1: float = typer.Option(0.5, "--p1", help="tumour fraction above which patches are calibrated away"),
        pt: float = typer.Option(0.1, "--pt", help="minimal tissue fraction"),
        pn: float = typer.Option(0.01, "--pn", help="category-2 patches kept per category-1 patch"),
        seed: int = typer.Option(0, "--seed"),
        folds: int = typer.Option(5, "--folds"),
        valpx_per_class: int = typer.Option(5, "--valpx-per-class"),
        reference_calibration: bool = typer.Option(False, "--reference-calibration",
                                                   help="reproduce the reference code's calibration (missing break)"),
        quiet: bool = QuietOpt,
        workers: int = typer.Option(1, "--workers", "-w", min=1, help="slides sampled in parallel"),
        executor: str = typer.Option("local", "--executor", "-e", help="local (process pool) | ray")) -> None:
    """Sample CAMELYON16 slides into patches, masks and fold files (survey Appendix B; resumable)."""
    from wsolctl.data.camelyon import sample_camelyon16 as run_sampling
    from wsolctl.wsi.camelyon16 import SamplingParams

    params = _guard(SamplingParams, patch_size=patch_size, p0=p0, p1=p1, pt=pt, pn=pn, seed=seed, folds=folds,
                    valpx_per_class=valpx_per_class, reference_calibration=reference_calibration)
    _check_executor(executor)
    stamp = _guard(run_sampling, slides, annotations, out, reference, params, quiet=quiet, workers=workers,
                   executor=executor)
    for warning in stamp["warnings"]:
        typer.echo(f"warning: {warning}", err=True)
    counts = ", ".join(f"{s}: {c['tumor']} tumour + {c['normal']} normal" for s, c in stamp["counts"].items())
    typer.echo(f"wrote {out / 'manifest.parquet'} ({counts}); use dataset: {{name: camelyon16, root: {out}}}")


@sample_app.command("slides")
def sample_slides(
        manifest: Path = typer.Argument(..., help="CSV or Parquet, one row per slide: slide, label[, annotations, "
                                        "patient, split, mpp] (docs/datasets.md)"),
        out: Path = typer.Option(..., "--out", "-o", help="output folder (patches, fold files, patches.parquet)"),
        mpp: Optional[float] = typer.Option(None, "--mpp", help="µm per patch pixel (default: each slide's own)"),
        patch_size: int = typer.Option(512, "--patch-size", help="patch side in pixels at --mpp"),
        min_roi: float = typer.Option(0.2, "--min-roi", help="least annotated fraction of a labelled patch"),
        unannotated: str = typer.Option("skip", "--unannotated", help="labelled slide without annotations: skip | "
                                        "inherit (its tissue patches take its label, no masks)"),
        normal_class: str = typer.Option("normal", "--normal-class", help="the label of slides without ROI"),
        pt: float = typer.Option(0.1, "--pt", help="minimal tissue fraction"),
        max_per_slide: Optional[int] = typer.Option(None, "--max-per-slide", help="at most this many patches per slide"),
        folds: int = typer.Option(5, "--folds"),
        test_fraction: float = typer.Option(0.2, "--test-fraction", help="patients drawn into test when no row has "
                                            "split=test"),
        valpx_per_class: int = typer.Option(5, "--valpx-per-class"),
        seed: int = typer.Option(0, "--seed"),
        quiet: bool = QuietOpt,
        workers: int = typer.Option(1, "--workers", "-w", min=1, help="slides sampled in parallel"),
        executor: str = typer.Option("local", "--executor", "-e", help="local (process pool) | ray")) -> None:
    """Sample any cohort's slides at a physical resolution into patches, masks and fold files (resumable)."""
    from wsolctl.data.cohort import sample_cohort
    from wsolctl.wsi.cohort import CohortParams

    params = _guard(CohortParams, patch_size=patch_size, mpp=mpp, min_roi=min_roi, unannotated=unannotated,
                    normal_class=normal_class, pt=pt, max_per_slide=max_per_slide, folds=folds,
                    test_fraction=test_fraction, valpx_per_class=valpx_per_class, seed=seed)
    _check_executor(executor)
    stamp = _guard(sample_cohort, manifest, out, params, quiet=quiet, workers=workers, executor=executor)
    for row in stamp["skipped"]:
        typer.echo(f"skipped {row['where']} ({row['slide']}): {row['reason']}", err=True)
    counts = ", ".join(f"{c}: {n}" for c, n in stamp["counts"].items())
    typer.echo(f"wrote {out / 'patches.parquet'} ({counts} patches from {stamp['slides']} slide(s), "
               f"{stamp['patients']} patient(s)); use dataset: {{name: folds, root: {out}"
               + ("" if stamp["masks"] else ", masks: false") + "}")


weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights a recipe needs, in the Hugging Face cache.")
app.add_typer(weights_app, name="weights")


@weights_app.command("fetch")
def weights_fetch(recipe: Path, set_: List[str] = SetOpt) -> None:
    """Download every weight (and hf-hub: config) the recipe needs into the cache (HF_HOME), e.g. on a
    login node for offline compute nodes."""
    from wsolctl.backbones import weights

    for row in _guard(weights.fetch, _load(recipe, set_)):
        typer.echo(weights.describe_row(row))


@weights_app.command("list")
def weights_list(recipe: Path, set_: List[str] = SetOpt,
                 json_: bool = typer.Option(False, "--json", help="print JSON instead of lines")) -> None:
    """Say, per backbone, what the recipe needs from the hub and whether it is cached (no network)."""
    import json

    from wsolctl.backbones import weights

    rows = _guard(weights.status, _load(recipe, set_))
    typer.echo(json.dumps(rows, indent=2) if json_ else "\n".join(map(weights.describe_row, rows)) or "nothing")


def _summary(out: Path, quiet: bool) -> None:
    from wsolctl.results.summary import print_summary

    print_summary(out, quiet)


def main() -> None:
    import warnings

    warnings.formatwarning = lambda message, *args, **kwargs: f"warning: {message}\n"  # one line, no source
    try:
        app()
    except BrokenPipeError:
        sys.exit(1)

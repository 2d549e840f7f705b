"""The report: the survey's tables (``survey.py``), every metric per selection rule, the trivial
baseline and the figures (``figures.py``), from one or several output directories — or folders
holding only ``results.parquet``. Anything missing is skipped with a one-line note.

The report is a list of blocks rendered to Markdown here or to one self-contained HTML file
(``html.py``); table cells and texts use Markdown inline markup only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import polars as pl
import yaml

from wsolctl import metrics as metric_plugins
from wsolctl.engine.rundir import RunDir
from wsolctl.io import write_text
from wsolctl.results import figures, rank_figures, survey, trust
from wsolctl.results.blocks import Block, Bullets, Heading, Image, Table, Text
from wsolctl.selection import REFERENCE, RULES

GROUP = ["dataset", "backbone", "method", "selection"]
FORMATS = ("md", "html")
BEYOND_NOTE = ("Methods that are not among the survey's (their plugin does not declare `in_survey`): later "
               "methods, other CAM variants and third-party plugins. The same tables as the survey's, over "
               "these methods only, so that they change neither the survey's WSOL averages nor its best values.")


# ----------------------------------------------------------------------------- inputs
@dataclass
class Sources:
    """The merged inputs of a report: ``results`` carries a ``source`` column (index into ``dirs``)."""

    dirs: list[Path]
    results: pl.DataFrame

    def table(self, name: str) -> tuple[Optional[pl.DataFrame], list[Path]]:
        """An optional Parquet table merged over the sources, and the sources that lack it."""
        frames = [pl.read_parquet(d / name) for d in self.dirs if (d / name).is_file()]
        missing = [d for d in self.dirs if not (d / name).is_file()]
        return (pl.concat(frames, how="diagonal_relaxed") if frames else None), missing

    def run_dir(self, row: dict) -> RunDir:
        return RunDir.of(self.dirs[row["source"]], row["run_id"])


def load_sources(dirs: Sequence[Path]) -> Sources:
    dirs = list({Path(d).resolve(): Path(d) for d in dirs}.values())  # a folder given twice counts once
    frames = []
    for i, directory in enumerate(dirs):
        path = directory / "results.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run `wsolctl select {directory}` first")
        frames.append(pl.read_parquet(path).with_columns(source=pl.lit(i)))
    results = pl.concat(frames, how="diagonal_relaxed")
    keys = [c for c in ("run_id", "dataset", "fold", "backbone", "method", "seed", "selection") if c in results.columns]
    return Sources(dirs, results.unique(subset=keys, keep="first", maintain_order=True))  # so does a run


# ----------------------------------------------------------------------------- the report
def write_report(dirs: Union[Path, Sequence[Path]], out: Optional[Path] = None, fmt: str = "md") -> Path:
    """Write ``report.md`` (or ``report.html``) and ``figures/`` into ``out`` (default: the only
    directory given)."""
    dirs = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    if not dirs:
        raise ValueError("no output directory given")
    if fmt not in FORMATS:
        raise ValueError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    if out is None and len(dirs) > 1:
        raise ValueError("several directories given: choose where the merged report goes with --out")
    out = Path(out) if out is not None else dirs[0]
    sources = load_sources(dirs)
    blocks = build_report(sources, out)
    if fmt == "html":
        from wsolctl.results.html import to_html

        path = out / "report.html"
        write_text(path, to_html(blocks, out))
    else:
        path = out / "report.md"
        write_text(path, to_markdown(blocks))
    return path


def build_report(sources: Sources, out: Path) -> list[Block]:
    name = sources.dirs[0].name if len(sources.dirs) == 1 else ", ".join(d.name for d in sources.dirs)
    blocks: list[Block] = [Heading(f"wsolctl report: {name}", 1), *_context(sources)]
    for dataset, tables in survey.dataset_tables(sources.results):
        blocks += [Heading(f"Dataset `{dataset}`"), *tables]
    beyond = survey.dataset_tables(sources.results, beyond=True)
    if beyond:
        blocks += [Heading(survey.BEYOND), Text(BEYOND_NOTE)] + [t for _, tables in beyond for t in tables]
    blocks.append(Heading("All metrics per selection rule"))
    for rule in RULES.values():
        rows = sources.results.filter(pl.col("selection") == rule.name)
        if len(rows):
            blocks.append(_metrics_table(rows, f"Test results, {rule.title} selection"))
    blocks.append(Text("Metrics in % unless their header says otherwise, τ* in [0, 1] (2: predicting nothing scored best). TP*/FN*/FP*/TN*: each confusion component (as a fraction of "
                       "ground-truth foreground or background pixels) averaged over the thresholds (survey eqs. 21–24). "
                       "τ*, mIoU: the threshold with the best mIoU on the test set and the mIoU there. The other "
                       "metrics (recipe `evaluation.metrics`): see their tables above. B-PSEUDO rows: τ and the "
                       "values at τ follow the row's `threshold_rule` (results.parquet)."))
    regret = trust.regret_blocks(sources.results)
    if regret:
        blocks += [Heading("Selection and thresholds without annotations"), *regret]
    return blocks + trust.check_blocks(sources, out) + _figures(sources, out)


def _context(sources: Sources) -> list[Block]:
    items = []
    for directory in sources.dirs:
        prefix = f"`{directory}`: " if len(sources.dirs) > 1 else ""
        items += [prefix + line for line in _recipe_lines(directory)] or ([f"{prefix}results only"] if prefix else [])
    results = sources.results
    shared = (results.group_by("run_id").agg(pl.col("dataset").first(), pl.col("method").unique().sort())
              .filter(pl.col("method").list.len() > 1).sort("dataset", "run_id"))
    several = results["dataset"].n_unique() > 1
    for run_id, dataset, methods in shared.rows():
        where = f"on `{dataset}`, " if several else ""
        items.append(f"{where}{', '.join(methods)} share one trained classifier (run `{run_id}`): "
                     "each is evaluated and selected on its own")
    if metric_plugins.BASELINE.name in results.columns:
        baseline = results.group_by("dataset").agg(pl.col(metric_plugins.BASELINE.name).mean()).sort("dataset")
        for dataset, value in baseline.rows():
            if value is not None:
                items.append(f"**trivial baseline** (all-foreground map) PxAP on `{dataset}` test: "
                             f"**{value:.2f}** = fraction of ROI pixels")
    return [Bullets(items)] if items else []


def _recipe_lines(directory: Path) -> list[str]:
    path = directory / "recipe.resolved.yaml"
    if not path.is_file():
        return []
    recipe = yaml.safe_load(path.read_text())
    t, d = recipe["train"], recipe["dataset"]
    return [f"dataset: `{d['name']}` fold {d['fold']} (root `{d['root']}`), image size {recipe['image_size']}",
            f"training: {t['epochs']} epochs, batch {t['batch_size']}, lr {t['lr']}, "
            f"{t['optimizer']['name']}, seed {recipe['seed']}"]


def _columns() -> list[metric_plugins.Column]:
    """The columns of the "all metrics" tables: PxAP's, the installed metric plugins', accuracy."""
    return [c for metric in metric_plugins.declared() for c in metric.columns if c.title] + [metric_plugins.ACCURACY]


def _metrics_table(rows: pl.DataFrame, title: str) -> Table:
    """Every metric; mean ± std over folds/seeds when a group has several rows."""
    metrics = [c for c in _columns() if c.name in rows.columns and rows[c.name].is_not_null().any()]
    agg = rows.group_by(GROUP, maintain_order=True).agg(
        pl.len().alias("n"), pl.col("epoch").mean(),
        *[pl.col(c.name).mean().alias(c.name) for c in metrics],
        *[pl.col(c.name).std().alias(f"{c.name}_std") for c in metrics])
    header = ["dataset", "backbone", "method", "n", "epoch"] + [c.header for c in metrics]
    body = []
    for r in agg.sort(["dataset", "backbone", "method"]).iter_rows(named=True):
        cells = [r["dataset"], r["backbone"], r["method"], str(r["n"]), f"{r['epoch']:.0f}"]
        cells += [survey.fmt(None if r[c.name] is None else (r[c.name], r[f"{c.name}_std"], r["n"]), digits=c.digits)
                  for c in metrics]
        body.append(cells)
    return Table(title, header, body)


# ----------------------------------------------------------------------------- figures
def _figure(out: Path, filename: str, title: str, short: str, draw: Optional[Callable[[Path], object]],
            why: str, partial: Sequence[Path] = ()) -> list[Block]:
    """A figure drawn into ``out/figures/filename``, or a one-line note when its inputs are missing."""
    if not draw:
        return [Text(f"_{short} skipped: {why}_")]
    draw(out / "figures" / filename)
    blocks: list[Block] = [Heading(title, 3), Image(title, f"figures/{filename}")]
    if partial:
        blocks.append(Text(f"_{short}: {why} in {', '.join(f'`{d}`' for d in partial)}, whose runs are not shown_"))
    return blocks


def _figures(sources: Sources, out: Path) -> list[Block]:
    curves, no_curves = sources.table("curves.parquet")
    epochs, no_epochs = sources.table("epochs.parquet")
    results = sources.results
    blocks: list[Block] = [Heading("Figures")]
    blocks += _figure(out, "threshold-sensitivity.png", "Threshold sensitivity (survey Fig. 8)", "threshold sensitivity",
                      curves is not None and (lambda p: figures.threshold_sensitivity(curves, p)),
                      "curves.parquet not found", no_curves)
    blocks += _figure(out, "model-selection.png", "Model selection: selected epoch vs test PxAP (survey Fig. 9)",
                      "model selection", (lambda p: figures.model_selection(results, p)), "")
    blocks += _figure(out, "training-curves.png", "PxAP and accuracy over epochs", "training curves",
                      epochs is not None and (lambda p: figures.training_curves(epochs, results, p)),
                      "epochs.parquet not found", no_epochs)
    return blocks + _uncertainty(sources, out) + _qualitative(sources, out)


def _uncertainty(sources: Sources, out: Path, rule: str = REFERENCE, metric: str = "pxap") -> list[Block]:
    """Per dataset the significance map, and the ranking stability, of B-LOC PxAP (comparisons.parquet,
    ranks.parquet)."""
    comparisons, missing = sources.table("comparisons.parquet")
    ranks, _ = sources.table("ranks.parquet")
    if comparisons is None or ranks is None:
        return [Text("_significance maps and ranking stability skipped: comparisons.parquet not found (runs "
                     "scored before wsolctl kept per-image statistics, or `evaluation.bootstrap.samples: 0`)_")]
    picked = [frame.filter((pl.col("selection") == rule) & (pl.col("metric") == metric)) for frame in (comparisons, ranks)]
    blocks: list[Block] = []
    for dataset in survey.ordered(picked[0]["dataset"].unique(), "datasets"):
        pairs, ranked = (frame.filter(pl.col("dataset") == dataset) for frame in picked)
        blocks += _figure(out, f"significance-{dataset}.png", f"Which method beats which: test PxAP, B-LOC, `{dataset}`",
                          "significance map", lambda p, pairs=pairs, ranked=ranked, dataset=dataset:
                          rank_figures.significance_map(pairs, ranked, p, f"{dataset}: test PxAP, B-LOC"), "", missing)
    blocks += _figure(out, "ranking-stability.png", "Ranking stability: bootstrap rank of each method, test PxAP, B-LOC",
                      "ranking stability", lambda p: rank_figures.ranking_stability(picked[1], p, "bootstrap ranks, test PxAP, B-LOC"),
                      "", missing)
    return blocks + [Text("Both resample the test images within class (`evaluation.bootstrap`, docs/results.md), "
                          "the same images for every method; with several folds or seeds, the runs first. "
                          "Significance map: the colour is the share of replicates in which the row's method "
                          "scores higher (ties ½); ● where the interval of the difference excludes 0. Ranking "
                          "stability: blob area = share of replicates with that rank; ✕ the median rank.")]


def _qualitative(sources: Sources, out: Path) -> list[Block]:
    """Test images with ground-truth contours and each method's B-LOC CAM, per dataset and class
    (survey Figs. 12-15)."""
    blocks: list[Block] = []
    for dataset in survey.ordered(sources.results["dataset"].unique(), "datasets"):
        examples = _examples(sources, dataset)
        if examples is None:
            blocks.append(Text(f"_qualitative grids of `{dataset}` skipped: no runs/<id>/examples/ with "
                               "images.npz and B-LOC CAMs found_"))
            continue
        images, columns, note, names = examples
        for label in sorted(set(images["labels"].tolist())):
            name = names.get(label, f"class {label}")
            title = f"Qualitative results, `{dataset}`, {name} test images (survey Figs. 12–15)"
            blocks += _figure(out, f"qualitative-{dataset}-{label}.png", title, "qualitative grid",
                              lambda p, label=label, name=name, images=images, columns=columns, dataset=dataset:
                              figures.qualitative(images, columns, label, p, f"{dataset}: {name}"), "")
        blocks.append(Text(note))
    return blocks


def _examples(sources: Sources, dataset: str):
    """(images.npz arrays, [:class:`figures.MapColumn`], note, class names by label) for one dataset,
    or None. One fold and seed (the first); per method the first backbone of the tables it ran on; B-LOC
    models, with their test threshold τ*. Class names are the data's (encoding.yaml, recorded in the
    run's record of its training)."""
    import numpy as np

    rows = sources.results.filter((pl.col("dataset") == dataset) & (pl.col("selection") == REFERENCE))
    if not len(rows):
        return None
    first = rows.sort(["fold", "seed"]).row(0, named=True)
    rows = rows.filter((pl.col("fold") == first["fold"]) & (pl.col("seed") == first["seed"]))
    reference, columns, used = None, [], []
    for family, methods in survey.families(rows["method"].unique()):
        for method in methods:
            mine = rows.filter(pl.col("method") == method)
            backbone = survey.ordered(mine["backbone"].unique(), "backbones")[0]
            row = mine.filter(pl.col("backbone") == backbone).row(0, named=True)
            run = sources.run_dir(row)
            if not run.example_images().is_file() or not run.example_maps(method, REFERENCE).is_file():
                continue
            images = dict(np.load(run.example_images()))
            if reference is None:
                reference, names = images, _class_names(run)
            if list(images["ids"]) != list(reference["ids"]):  # another test subset: not comparable
                continue
            used += [backbone] if backbone not in used else []
            title = method if backbone == used[0] else f"{method} ({survey.backbone_title(backbone)})"
            stored = np.load(run.example_maps(method, REFERENCE))
            probability = "kind" in stored and str(stored["kind"]) == "probability"  # older runs: CAM-type
            threshold = row.get("threshold")
            columns.append(figures.MapColumn(f"{title} (p)" if probability else title, family, stored["cams"],
                                             None if threshold is None or threshold != threshold else float(threshold)))
    if reference is None:
        return None
    note = (f"Fold {first['fold']}, seed {first['seed']}, B-LOC models on "
            f"{', '.join(survey.backbone_title(b) for b in used)} (per method the first backbone of the tables it "
            "ran on), grouped by method family. Red: ground-truth contour; colour: the min-max normalised CAM "
            "(viridis, yellow = high; colour bar beside the first image), or for columns marked (p) the foreground probability as it is scored, not "
            "rescaled per image; white: the map's contour at τ*, the method's test threshold of best mIoU.")
    return reference, columns, note, names


def _class_names(run: RunDir) -> dict[int, str]:
    """Label -> class name of a finished run's data (empty for runs that did not record them)."""
    classes = run.done().classes if run.is_done else {}
    return {index: name for name, index in classes.items()}


# ----------------------------------------------------------------------------- Markdown
def to_markdown(blocks: Sequence[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Text):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Image):
            lines += [f"![{block.alt}]({block.path})", ""]
        elif isinstance(block, Table):
            lines += _markdown_table(block)
    return "\n".join(lines).rstrip("\n") + "\n"


def _markdown_table(table: Table) -> list[str]:
    lines = [f"### {table.title}", ""] if table.title else []
    lines += ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return lines + [""] + ([table.caption, ""] if table.caption else [])

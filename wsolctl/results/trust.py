"""What annotation-free selection costs (the survey's Table 4 read the other way) and the
randomisation sanity checks, as report blocks.

Regret table, per dataset × backbone × method, where the test split has true masks: for each
selection rule (the epoch) and threshold rule (τ), the test PxAP of the selected model (τ-free) and
the test foreground Dice at that τ, and the regret = reference − value in points, the reference
being ``b-loc`` with ``test-masks`` (true masks choose the epoch, on validation, and τ*, on test:
the survey's protocol). Values are means over folds and seeds.
"""
from __future__ import annotations

import math

import polars as pl

from wsolctl.results import survey
from wsolctl.results.blocks import Block, Table, Text

THRESHOLD_RULES = ("test-masks", "val-masks", "val-pseudo", "otsu")
REFERENCE = ("b-loc", "test-masks")
GROUP = ["dataset", "backbone", "method"]


def regret_table(results: pl.DataFrame) -> pl.DataFrame:
    """One row per dataset, backbone, method, selection and threshold rule with a finite Dice:
    ``pxap``, ``dice``, ``pxap_regret``, ``dice_regret`` (reference − value; NaN without a reference)."""
    rows = []
    for (dataset, backbone, method), group in results.group_by(GROUP, maintain_order=True):
        combos = {}
        for selection, picks in group.group_by("selection", maintain_order=True):
            for rule in THRESHOLD_RULES:
                column = f"dice_fg_{rule.replace('-', '_')}"
                if column not in picks.columns or picks[column].is_null().all():
                    continue
                dice, pxap = picks[column].fill_nan(None).mean(), picks["pxap"].fill_nan(None).mean()
                if dice is not None:
                    combos[(selection[0], rule)] = (pxap, dice, picks["epoch"].mean())
        reference = combos.get(REFERENCE)
        for (selection, rule), (pxap, dice, epoch) in combos.items():
            rows.append({"dataset": dataset, "backbone": backbone, "method": method, "selection": selection,
                         "threshold_rule": rule, "epoch": epoch, "pxap": _num(pxap), "dice": _num(dice),
                         "pxap_regret": _num(reference[0] - pxap) if reference and pxap is not None else math.nan,
                         "dice_regret": _num(reference[1] - dice) if reference else math.nan})
    return pl.DataFrame(rows, schema={"dataset": pl.String, "backbone": pl.String, "method": pl.String,
                                      "selection": pl.String, "threshold_rule": pl.String, "epoch": pl.Float64,
                                      "pxap": pl.Float64, "dice": pl.Float64, "pxap_regret": pl.Float64,
                                      "dice_regret": pl.Float64})


def _num(value) -> float:
    return math.nan if value is None else float(value)


def regret_blocks(results: pl.DataFrame) -> list[Block]:
    """The regret tables, one per dataset (nothing when no split has true test masks)."""
    table = regret_table(results)
    blocks: list[Block] = []
    for dataset in survey.ordered(table["dataset"].unique(), "datasets"):
        mine = table.filter(pl.col("dataset") == dataset).sort(["backbone", "method", "selection", "threshold_rule"])
        body = [[r["backbone"], r["method"], r["selection"], r["threshold_rule"], f"{r['epoch']:.0f}",
                 _fmt(r["pxap"]), _fmt(r["dice"]), _fmt(r["pxap_regret"]), _fmt(r["dice_regret"])]
                for r in mine.iter_rows(named=True)]
        blocks.append(Table(f"What annotation-free selection costs, `{dataset}` (regret vs B-LOC + τ* on test masks)",
                            ["backbone", "method", "selection", "threshold", "epoch", "PxAP", "Dice",
                             "PxAP regret", "Dice regret"], body))
    if blocks:
        blocks.append(Text("Selection: which rule chose the epoch (b-loc: valpx true masks; b-cl: valcl accuracy; "
                           "b-pseudo: valpx pseudo-masks). Threshold: test-masks = τ* on the test masks (oracle, "
                           "the survey's), val-masks / val-pseudo = τ* on the valpx true / pseudo-masks at the "
                           "selected epoch, otsu = Otsu per map. Regret = reference − value in points (lower is "
                           "better; negative: the rule did better on this test set). docs/results.md."))
    return blocks


def _fmt(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.1f}"

"""Model-selection rules (survey §5) and the sanity checks of the selected models, declared once here.

A rule picks, for each method, the epoch and the configuration with the highest value of one
per-epoch validation metric. Everything about it is in its :class:`Rule`: what it needs (the
validation masks or a pseudo-annotator), the split it reads, the threshold rule of its models, its
title and colour. The recipe's ``selection`` (validation), training (which checkpoints to keep, which
validation maps to score), the study's search, the final test, the report's tables and figures and
``predict`` read :data:`RULES`; none of them names a rule. A new rule is one more entry in
:data:`RULES` (``tests/test_selection_rules.py`` adds one). Checks (``evaluation.checks``) are
declared the same way in :data:`CHECKS`.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal, Optional

from pydantic import AfterValidator

Needs = Optional[Literal["masks", "annotator"]]


@dataclass(frozen=True)
class Rule:
    """One selection rule."""

    name: str  # in recipes, results.parquet and on the command line
    title: str  # in the report
    split: Literal["valpx", "valcl"]  # the validation split it reads
    needs: Needs  # "masks": the split's true masks (dataset.masks); "annotator": pseudo-masks (evaluation.annotator)
    color: str  # matplotlib colour of its models in the report's figures
    threshold: Optional[str] = "test-masks"  # threshold rule of its models; None: evaluation.pseudo_threshold

    @property
    def scores(self) -> str:
        """The prefix of the per-epoch columns it reads: the split, ``_pseudo`` with pseudo-masks."""
        return self.split + ("_pseudo" if self.needs == "annotator" else "")

    @property
    def metric(self) -> str:
        """The per-epoch validation column it maximises (epochs.json, epochs.parquet): PxAP of a split
        with masks, else its accuracy."""
        return f"{self.scores}_pxap" if self.needs else f"{self.split}_acc"

    @property
    def metric_title(self) -> str:
        """Its validation metric in figures, e.g. "valpx PxAP (pseudo-masks)"."""
        if not self.needs:
            return f"{self.split} accuracy"
        return f"{self.split} PxAP" + (" (pseudo-masks)" if self.needs == "annotator" else "")

    def threshold_rule(self, pseudo_threshold: str) -> str:
        """The threshold rule of its results rows (``evaluation.pseudo_threshold`` given)."""
        return self.threshold or pseudo_threshold

    def problem(self, masks: bool, annotator: bool) -> Optional[str]:
        """Why a recipe cannot use the rule (with / without dataset masks and an annotator), or None."""
        if self.needs == "masks" and not masks:
            others = " or ".join(r.name for r in RULES.values() if r.needs != "masks")
            return f"{self.name} needs the validation masks, and dataset.masks is false: use {others}"
        if self.needs == "annotator" and not annotator:
            return (f"{self.name} needs a pseudo-annotator: set evaluation.annotator "
                    "(e.g. {name: haematoxylin}; docs/results.md lists them)")
        return None


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("b-loc", "B-LOC", "valpx", "masks", "tab:orange"),  # localization: PxAP on valpx
    Rule("b-cl", "B-CL", "valcl", None, "tab:blue"),  # classification: accuracy on valcl
    # annotation-free: PxAP on valpx pseudo-masks, thresholded by the recipe's rule (issue 19)
    Rule("b-pseudo", "B-PSEUDO", "valpx", "annotator", "tab:purple", threshold=None),
)}
DEFAULT_RULES = ("b-loc", "b-cl")  # a recipe's default `selection`; the study's search always chooses by them
REFERENCE = "b-loc"  # the survey's rule: its tables, the qualitative figures, the reference of the regret table
# the rules that set the threshold of a selected model (results.parquet: threshold_rule, threshold_<rule>)
THRESHOLD_RULES = ("test-masks", "val-masks", "val-pseudo", "otsu")


def known_rule(name: str) -> str:
    """``name`` if it is a rule (a pydantic validator: the table is read when a recipe is validated)."""
    if name not in RULES:
        raise ValueError(f"unknown selection rule {name!r}; choose from {', '.join(RULES)}")
    return name


RuleName = Annotated[str, AfterValidator(known_rule)]  # a field holding a rule's name (recipes, params)


@dataclass(frozen=True)
class Check:
    """One sanity check of the selected models (``evaluation.checks``)."""

    name: str  # in recipes and checks.parquet
    description: str
    # "module:function" computing its checks.parquet rows, called by the final test with
    # (spec, model, methods, picks, data, device, run_dir) after each selected epoch's scores
    runner: str

    def run(self) -> Callable[..., list[dict[str, Any]]]:
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module), function)


CHECKS: dict[str, Check] = {check.name: check for check in (
    Check("model-randomisation", "cascading model-parameter randomisation (Adebayo et al. 2018)",
          "wsolctl.engine.final_test:randomisation_check"),
)}


def known_check(name: str) -> str:
    if name not in CHECKS:
        raise ValueError(f"unknown check {name!r}; choose from {', '.join(CHECKS)}")
    return name


CheckName = Annotated[str, AfterValidator(known_check)]

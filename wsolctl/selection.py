"""Model-selection rules (survey §5): a rule picks, for each method, the epoch and the configuration
with the highest value of one validation metric. Declared once, here; the recipe's ``selection``,
training (which checkpoints to keep), the study's search, the report and ``predict`` read this
table. A new rule is one more line in :data:`RULES`."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str  # in recipes, results.parquet and on the command line
    title: str  # in the report
    metric: str  # the per-epoch validation column it maximises (epochs.json, epochs.parquet)


RULES: dict[str, Rule] = {rule.name: rule for rule in (
    Rule("b-loc", "B-LOC", "valpx_pxap"),  # localization: PxAP on valpx
    Rule("b-cl", "B-CL", "valcl_acc"),  # classification: accuracy on valcl
    Rule("b-pseudo", "B-PSEUDO", "valpx_pseudo_pxap"),  # annotation-free: PxAP on valpx pseudo-masks (issue 19)
)}
# the rules that set the threshold of a selected model (results.parquet: threshold_rule, threshold_<rule>)
THRESHOLD_RULES = ("test-masks", "val-masks", "val-pseudo", "otsu")
DEFAULT_RULES = ("b-loc", "b-cl")  # a recipe's default `selection` (b-pseudo needs `evaluation.annotator`)

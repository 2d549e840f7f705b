"""Splits without leakage, shared by the slide samplers: groups (patients, or slides when no patient
is known) never straddle two splits, and each split is drawn per stratum (the group's labels), seeded.

Each row (a patch) gets, per fold, one of ``train``, ``valcl``, ``valcl+valpx`` (in valcl and in
valpx) or ``test``. Test groups are fixed by the caller; per fold, ``valcl_fraction`` of the other
groups of each stratum are drawn into valcl (at least one, never all, when a stratum has two); valpx
then takes ``valpx_per_class`` patches per class among valcl's eligible ones (those with pixel truth).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class SplitParams:
    folds: int
    seed: int
    valcl_fraction: float
    valpx_per_class: int


def _draw(n: int, fraction: float) -> int:
    """How many of a stratum's ``n`` groups to draw: at least one, never all (none below two)."""
    return min(max(1, round(n * fraction)), n - 1) if n >= 2 else 0


def stratum_order(strata: Mapping[str, str], classes: Sequence[str]) -> list[str]:
    """Strata in a fixed order: every class in its order, then any other (mixed) stratum by name."""
    return list(classes) + sorted(set(strata.values()) - set(classes))


def draw_test(strata: Mapping[str, str], fraction: float, seed: int, classes: Sequence[str]) -> set[str]:
    """Groups drawn into the test set: ``fraction`` of each stratum's groups (see :func:`_draw`); none
    for a fraction of 0."""
    rng = np.random.default_rng([seed, 4])
    out: set[str] = set()
    if fraction <= 0:
        return out
    for stratum in stratum_order(strata, classes):
        groups = sorted(g for g, s in strata.items() if s == stratum)
        out |= {groups[i] for i in rng.permutation(len(groups))[:_draw(len(groups), fraction)]}
    return out


def assign_folds(groups: Sequence[str], labels: Sequence[str], test: Sequence[bool], valpx_ok: Sequence[bool],
                 strata: Mapping[str, str], classes: Sequence[str], p: SplitParams) -> list[dict[int, str]]:
    """Per row and fold: train / valcl / valcl+valpx / test. ``groups``, ``labels``, ``test`` and
    ``valpx_ok`` are per row; ``strata`` maps every non-test group to its stratum."""
    out: list[dict[int, str]] = [{} for _ in groups]
    for fold in range(p.folds):
        rng = np.random.default_rng([p.seed, fold, 2])
        val_groups: set[str] = set()
        for stratum in stratum_order(strata, classes):
            members = sorted(g for g, s in strata.items() if s == stratum)
            val_groups |= {members[i] for i in rng.permutation(len(members))[:_draw(len(members), p.valcl_fraction)]}
        for i, group in enumerate(groups):
            out[i][fold] = "test" if test[i] else ("valcl" if group in val_groups else "train")
        rng = np.random.default_rng([p.seed, fold, 3])
        for label in classes:
            val = [i for i in range(len(groups)) if out[i][fold] == "valcl" and labels[i] == label and valpx_ok[i]]
            for i in sorted(rng.choice(len(val), size=min(p.valpx_per_class, len(val)), replace=False).tolist()) if val else []:
                out[val[i]][fold] = "valcl+valpx"
    return out

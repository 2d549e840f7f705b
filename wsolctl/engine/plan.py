"""Expand a recipe into training runs (torch-free).

Methods whose ``training_key()`` is equal share one training run on each backbone ("train once,
explain many"): e.g. CAM and Grad-CAM both explain the same GAP + linear classifier. A run's id is
a stable hash of everything that determines its numbers.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional

from wsolctl import plugins
from wsolctl.recipe.schema import Recipe


RULES = {"b-loc": "valpx_pxap", "b-cl": "valcl_acc"}  # selection rule -> validation metric (max is best)
# Evaluation settings that do not change a training run (validation scores PxAP only).
TEST_ONLY = {"examples_per_class", "metrics", "box_thresholds", "faithfulness_steps"}


def test_settings(recipe: Recipe) -> dict:
    """The recipe's TEST_ONLY evaluation settings (JSON values)."""
    return {k: v for k, v in recipe.evaluation.model_dump(mode="json").items() if k in TEST_ONLY}


@dataclass(frozen=True)
class MethodRef:
    label: str  # unique within the recipe: the name, or name[i] when listed twice
    index: int  # position in recipe.methods


@dataclass(frozen=True)
class Run:
    run_id: str
    backbone_index: int
    methods: tuple[MethodRef, ...]
    spec: dict  # resolved training spec; hashed into run_id
    prerequisite: Optional[tuple[dict, "Run"]] = None  # (its recipe, its run) when the method needs one


def method_labels(recipe: Recipe) -> list[str]:
    names = [m.name for m in recipe.methods]
    return [n if names.count(n) == 1 else f"{n}[{i}]" for i, n in enumerate(names)]


def instantiate(recipe: Recipe, index: int):
    spec = recipe.methods[index]
    return plugins.load("methods", spec.name)(spec.resolved_params)


def plan_runs(recipe: Recipe) -> list[Run]:
    data = recipe.resolved_dict()
    labels = method_labels(recipe)
    runs = []
    for b, backbone in enumerate(data["backbones"]):
        groups: dict[str, list[int]] = {}
        for i, method in enumerate(recipe.methods):
            if method.backbones is not None and backbone["name"] not in method.backbones:
                continue
            key = json.dumps(instantiate(recipe, i).training_key(), sort_keys=True)
            groups.setdefault(key, []).append(i)
        for key, indices in groups.items():
            spec = {
                "dataset": data["dataset"], "backbone": backbone, "training_key": json.loads(key),
                # a method's `backbones` restriction is already expressed by the run's backbone
                "methods": [{k: v for k, v in data["methods"][i].items() if k != "backbones"} for i in indices],
                "seed": data["seed"], "image_size": data["image_size"], "train": data["train"],
                # what only the final test uses does not make a new run
                "evaluation": {k: v for k, v in data["evaluation"].items() if k not in TEST_ONLY},
            }
            prerequisite = _prerequisite(recipe, data, indices[0], b)
            if prerequisite:
                spec["prerequisite"] = prerequisite[1].run_id  # a new prerequisite means a new run
            run_id = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
            runs.append(Run(run_id, b, tuple(MethodRef(labels[i], i) for i in indices), spec, prerequisite))
    return runs


def _prerequisite(recipe: Recipe, data: dict, index: int, backbone_index: int) -> Optional[tuple[dict, Run]]:
    """The run that trains what method ``index`` builds on: same data, backbone and settings."""
    from wsolctl.recipe.loader import validate_data

    spec = instantiate(recipe, index).prerequisite()
    if spec is None:
        return None
    needed = dict(data, methods=[spec], backbones=[data["backbones"][backbone_index]], sweep=None)
    needed_recipe = validate_data(needed)
    (run,) = plan_runs(needed_recipe)
    return needed_recipe.resolved_dict(), run

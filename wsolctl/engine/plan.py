"""Training runs (torch-free): :class:`RunSpec`, one per backbone and group of methods that share a
classifier, under one concrete recipe.

Methods with equal :func:`~wsolctl.recipe.sweep.shared_key` share one training run on each backbone
("train once, explain many"): e.g. CAM and Grad-CAM both explain the same GAP + linear classifier.
A run's id is a stable hash of everything that determines its numbers; settings marked
``json_schema_extra={"display_only": True}`` (e.g. a progress display switch) or ``{"test_only": True}``
(what only the final test reads, e.g. ``evaluation.metrics``) or ``{"results_only": True}`` (what only
the tables read, e.g. ``evaluation.bootstrap``) are left out of it, and those marked
``{"omit_default": True}`` (added later, their default reproducing the former behaviour) while at
their default.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional

from wsolctl.errors import InputError
from wsolctl.recipe.base import IMAGENET, numbers
from wsolctl.recipe.schema import BackboneSpec, MethodSpec, Recipe
from wsolctl.recipe.sweep import Variant, shared_key
from wsolctl.recipe.training import Train


@dataclass(frozen=True)
class RunSpec:
    """One training run: a backbone and the methods that share its classifier, under a variant's
    concrete recipe, optionally built on a prerequisite run (trained first). Immutable; written to
    its run directory before the run starts, and read back by workers, ``select`` and ``predict``
    (:class:`~wsolctl.engine.rundir.RunDir`)."""

    variant: Variant
    backbone_index: int
    method_indices: tuple[int, ...]
    prerequisite: Optional[RunSpec] = None

    @property
    def recipe(self) -> Recipe:
        return self.variant.recipe

    @property
    def backbone(self) -> BackboneSpec:
        return self.recipe.backbones[self.backbone_index]

    @property
    def methods(self) -> tuple[MethodSpec, ...]:
        return tuple(self.recipe.methods[i] for i in self.method_indices)

    @property
    def labels(self) -> tuple[str, ...]:
        """The methods' names in results: the name, or ``name[i]`` when the recipe lists it twice."""
        labels = method_labels(self.recipe)
        return tuple(labels[i] for i in self.method_indices)

    @property
    def train(self) -> Train:
        """The run's training settings (the recipe's, with its methods' overrides; all equal)."""
        return self.recipe.train_of(self.methods[0])

    @cached_property
    def run_id(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:12]

    def identity(self) -> dict:
        """What determines the run's numbers (hashed into :attr:`run_id`)."""
        recipe, first = self.recipe, self.methods[0]
        identity = {
            # the backbone's normalisation by its values (below), whether declared or overridden
            "dataset": numbers(recipe.dataset), "backbone": numbers(self.backbone, exclude={"normalize"}),
            "training_key": first.instantiate().training_key(),
            # a method's `backbones` restriction is already expressed by the run's backbone, and its
            # `train` overrides by the run's `train`
            "methods": [numbers(m, exclude={"backbones", "train"}) for m in self.methods],
            "seed": recipe.seed, "image_size": recipe.image_size, "train": numbers(self.train),
            "evaluation": numbers(recipe.evaluation),
        }
        normalization = self.backbone.normalization()
        if normalization != IMAGENET:  # ImageNet's: the ids of runs from before backbones declared it
            identity["normalize"] = normalization.model_dump(mode="json")
        if self.prerequisite is not None:
            identity["prerequisite"] = self.prerequisite.run_id  # a new prerequisite means a new run
        return identity

    def to_json(self) -> dict:
        """What ``spec.json`` holds (:meth:`wsolctl.engine.rundir.RunDir.write_spec`); the prerequisite by its id."""
        return {"run_id": self.run_id, "recipe": self.recipe.resolved_dict(), "swept": self.variant.swept,
                "config_id": self.variant.config_id, "backbone_index": self.backbone_index,
                "method_indices": list(self.method_indices),
                "prerequisite": self.prerequisite.run_id if self.prerequisite else None}

    @classmethod
    def from_json(cls, data: dict, source: Path, prerequisite: Callable[[str], RunSpec]) -> RunSpec:
        """The run ``data`` (read from ``source``) describes; ``prerequisite`` loads a run by id.
        The id is checked against the content hash."""
        if not {"run_id", "recipe", "backbone_index", "method_indices"} <= set(data):
            raise InputError(f"{source}: not a run spec of this wsolctl version (written by an earlier one?); "
                             "train the recipe again")
        needed = prerequisite(data["prerequisite"]) if data.get("prerequisite") else None
        variant = Variant(Recipe.model_validate(data["recipe"]), data.get("swept", {}), data.get("config_id", ""))
        spec = cls(variant, data["backbone_index"], tuple(data["method_indices"]), needed)
        if spec.run_id != data["run_id"]:
            raise InputError(f"{source}: describes run {spec.run_id}, not {data['run_id']} (written by another "
                             "wsolctl version or edited by hand)")
        return spec


def test_settings(recipe: Recipe) -> dict[str, Any]:
    """The recipe's evaluation settings that only the final test reads (``test_only`` fields)."""
    return {name: getattr(recipe.evaluation, name) for name, field in type(recipe.evaluation).model_fields.items()
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("test_only")}


def same_test_settings(recorded: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether a final test ``recorded`` (test.json, maybe of an earlier version: built-in metric
    settings as evaluation keys) was scored with ``settings`` (:func:`test_settings`): compared with
    every listed metric's params at their defaults filled in."""
    from wsolctl import metrics as registry

    recorded, moved = dict(recorded), registry.legacy_settings()
    legacy = {key: recorded.pop(key) for key in list(recorded) if key in moved}
    recorded["metric_params"] = registry.legacy_params(legacy, recorded.get("metrics", []),
                                                       recorded.get("metric_params", {}))
    return {**recorded, "metric_params": _full_params(recorded)} == {**settings, "metric_params": _full_params(settings)}


def _full_params(settings: dict[str, Any]) -> dict[str, dict]:
    from wsolctl import metrics as registry
    from wsolctl.errors import UnknownPlugin
    from wsolctl.plugins import name_of

    given = settings.get("metric_params", {})
    try:
        return {name_of(metric): metric.Params.model_validate(given.get(name_of(metric), {})).model_dump(mode="json")
                for metric in registry.chosen(settings.get("metrics", []))}
    except UnknownPlugin:  # scored with a metric not installed here: as recorded
        return given


def with_test_settings(spec: RunSpec, settings: dict[str, Any]) -> RunSpec:
    """``spec`` scored with other test-time settings (e.g. metrics asked for after training): the same
    run, the same id."""
    recipe = spec.recipe.model_copy(update={"evaluation": spec.recipe.evaluation.model_copy(update=settings)})
    return replace(spec, variant=replace(spec.variant, recipe=recipe))


def method_labels(recipe: Recipe) -> list[str]:
    names = [m.name for m in recipe.methods]
    return [n if names.count(n) == 1 else f"{n}[{i}]" for i, n in enumerate(names)]


def plan_runs(variant: Variant) -> list[RunSpec]:
    """The runs of one concrete recipe: per backbone, one per group of methods sharing a classifier."""
    recipe = variant.recipe
    runs = []
    for b, backbone in enumerate(recipe.backbones):
        groups: dict[str, list[int]] = {}
        for i, method in enumerate(recipe.methods):
            if method.backbones is None or backbone.name in method.backbones:
                groups.setdefault(shared_key(recipe, method), []).append(i)
        for indices in groups.values():
            runs.append(RunSpec(variant, b, tuple(indices), _prerequisite(variant, b, recipe.methods[indices[0]])))
    return runs


def _prerequisite(variant: Variant, backbone_index: int, method: MethodSpec) -> Optional[RunSpec]:
    """The run that trains what ``method`` builds on: same data, backbone and recipe settings."""
    needed = method.prerequisite()
    if needed is None:
        return None
    recipe = variant.recipe  # validated, with the prerequisite's support (Recipe.support_problems): copied
    update = {"methods": [needed], "backbones": [recipe.backbones[backbone_index]], "sweep": None}
    (run,) = plan_runs(Variant(recipe.model_copy(update=update), {}, "prerequisite"))
    return run


def study_runs(variants: list[Variant]) -> list[RunSpec]:
    return [run for variant in variants for run in plan_runs(variant)]

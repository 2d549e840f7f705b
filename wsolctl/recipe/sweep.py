"""Expand a recipe's ``sweep:`` into concrete recipes (:class:`Variant`), torch-free.

Protocol (survey §5, wsolevaluation): every configuration runs on ``search_fold``; for each method
and backbone, B-LOC keeps the configuration with the best validation PxAP (valpx) and B-CL the one
with the best validation accuracy (valcl); the chosen configurations then run on every fold and
seed and are scored on test once. Methods that share a trained classifier (equal
:func:`shared_key`) stay together in one variant, so they still train once.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass, replace
from typing import Any, Iterator

from pydantic import ValidationError

from wsolctl.recipe.problems import dotted, location, message
from wsolctl.recipe.schema import MethodSpec, Recipe


@dataclass(frozen=True)
class Variant:
    """One concrete recipe (no ``sweep``): a method group, one configuration, one fold and one seed."""

    recipe: Recipe
    swept: dict[str, Any]  # column name -> value, for runs.parquet
    config_id: str  # identifies the configuration (not the fold or seed)
    group: tuple[int, ...] = ()  # its methods' indices in the swept recipe


def shared_key(recipe: Recipe, method: MethodSpec) -> str:
    """Methods with equal keys share one trained classifier ("train once, explain many"): the
    method's ``training_key()`` and its effective training settings."""
    key = {"training_key": method.instantiate().training_key(), "train": recipe.train_of(method).model_dump(mode="json")}
    return json.dumps(key, sort_keys=True)


def method_groups(recipe: Recipe) -> list[list[int]]:
    """Indices of the methods that share one trained classifier."""
    groups: dict[str, list[int]] = {}
    for i, method in enumerate(recipe.methods):
        groups.setdefault(shared_key(recipe, method), []).append(i)
    return list(groups.values())


def folds_and_seeds(recipe: Recipe) -> tuple[list[int], list[int], int]:
    sweep = recipe.sweep
    folds = sweep.folds if sweep and sweep.folds else [recipe.dataset.fold]
    seeds = sweep.seeds if sweep and sweep.seeds else [recipe.seed]
    search_fold = sweep.search_fold if sweep and sweep.search_fold is not None else folds[0]
    return folds, seeds, search_fold


def search_variants(recipe: Recipe) -> list[Variant]:
    """Every configuration of every method group, on the search fold with the first seed."""
    _, seeds, search_fold = folds_and_seeds(recipe)
    out = []
    for group in method_groups(recipe):
        space = _space(recipe, group)
        out += [_variant(recipe, group, space, c, search_fold, seeds[0]) for c in _configs(recipe, space)]
    return out


def final_variants(recipe: Recipe, chosen: list[Variant]) -> list[Variant]:
    """The chosen configurations on every fold and seed."""
    folds, seeds, _ = folds_and_seeds(recipe)
    out, seen = [], set()
    for variant in chosen:
        if variant.config_id in seen:
            continue
        seen.add(variant.config_id)
        out += [_moved(variant, f, s) for f in folds for s in seeds]
    return out


def check_sweep(recipe: Recipe) -> Iterator[tuple[tuple, str]]:
    """(recipe path, message) for every sweep value that would give an invalid recipe."""
    if recipe.sweep is None:
        return
    folds, seeds, search_fold = folds_and_seeds(recipe)
    if search_fold not in folds:
        yield ("sweep", "search_fold"), f"search_fold {search_fold} is not among the folds {folds}"
    for group in method_groups(recipe):
        space = _space(recipe, group)
        for name, (_, values) in space.items():
            where = ("sweep", "grid", name) if name in recipe.sweep.grid else ("sweep", "params")
            for index, value in enumerate(values):
                try:
                    _variant(recipe, group, space, {name: value}, folds[0], seeds[0])
                except ValidationError as exc:
                    for error in exc.errors(include_url=False):
                        yield where + (index,), (f"value {value!r} gives an invalid recipe: "
                                                 f"{dotted(location(error))}: {message(error)}")


def _space(recipe: Recipe, group: list[int]) -> dict[str, tuple[tuple, list]]:
    """Column name -> (path in the recipe dict, values) for one method group."""
    sweep = recipe.sweep
    space: dict[str, tuple[tuple, list]] = {}
    for key, values in (sweep.grid if sweep else {}).items():
        space[key] = (tuple(int(p) if p.isdigit() else p for p in key.split(".")), list(values))
    for j, i in enumerate(group):
        spec = recipe.methods[i]
        own = dict(_table7(spec) if sweep and sweep.search == "table7" else {})
        own.update(sweep.params.get(spec.name, {}) if sweep else {})
        for field, values in own.items():
            space[f"{spec.name}.{field}"] = (("methods", j, "params", field), list(values))
    return space


def _table7(spec: MethodSpec) -> dict[str, list]:
    """The search space a method declares in its params' metadata (survey Table 7)."""
    out = {}
    for name, field in type(spec.params).model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("search"):
            out[name] = list(extra["search"])
    return out


def _configs(recipe: Recipe, space: dict[str, tuple[tuple, list]]) -> list[dict[str, Any]]:
    names = sorted(space)
    combos = [dict(zip(names, values)) for values in itertools.product(*(space[n][1] for n in names))]
    trials = recipe.sweep.random if recipe.sweep else None
    if trials and trials.trials < len(combos):
        rng = random.Random(trials.seed)
        combos = [combos[i] for i in sorted(rng.sample(range(len(combos)), trials.trials))]
    return combos


def _set(data: dict, path: tuple, value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    node[path[-1]] = value


def _variant(recipe: Recipe, group: list[int], space: dict, config: dict, fold: int, seed: int) -> Variant:
    """The concrete recipe of one configuration. Swept values are validated with it (raises pydantic's
    ``ValidationError``); without any, the recipe's validated parts are reused (validated once)."""
    config_id = hashlib.sha256(json.dumps([group, config], sort_keys=True, default=str).encode()).hexdigest()[:8]
    if not config:
        methods = [recipe.methods[i] for i in group]
        variant = Variant(recipe.model_copy(update={"methods": methods, "sweep": None}), config, config_id, tuple(group))
        return _moved(variant, fold, seed)
    data = recipe.resolved_dict()
    data["methods"] = [data["methods"][i] for i in group]
    for name, value in config.items():
        _set(data, space[name][0], value)
    data["dataset"]["fold"], data["seed"] = fold, seed
    data["sweep"] = None
    return Variant(Recipe.model_validate(data), config, config_id, tuple(group))


def _moved(variant: Variant, fold: int, seed: int) -> Variant:
    """The same configuration on another fold and seed: a copy, not validated again (a fold and a
    seed are validated by the recipe's ``sweep``)."""
    recipe = variant.recipe
    moved = recipe.model_copy(update={"seed": seed, "dataset": recipe.dataset.model_copy(update={"fold": fold})})
    return replace(variant, recipe=moved)

"""Turn a recipe file (+ ``_base_`` files + ``--set`` overrides) into a validated :class:`Recipe`."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from wsolctl.errors import RecipeError
from wsolctl.plugins import close_matches
from wsolctl.recipe.problems import Problem, Source, dotted, location, message
from wsolctl.recipe.schema import PluginSpec, Recipe
from wsolctl.recipe.sweep import check_sweep
from wsolctl.recipe.yamlpos import Positions, load_yaml

BASE_KEY = "_base_"


def load_recipe(path: str | Path, overrides: Iterable[str] = (), check_data: bool = False) -> Recipe:
    """Load, merge and validate a recipe, every sweep value included; ``check_data``: the dataset's
    files too (:meth:`DatasetSpec.missing`). Raises :class:`~wsolctl.errors.RecipeError` listing every
    problem found, each at its file:line:col."""
    data, positions = _load_with_bases(Path(path), stack=())
    for text in overrides:
        _apply_override(data, positions, text)
    default = Source(str(path), 1, 1)
    recipe = validate(Recipe, data, positions, (), default)
    found = list(check_sweep(recipe))
    missing = recipe.dataset.missing() if check_data else None
    found += [(("dataset", "root"), missing)] if missing else []
    problems = [Problem(locate(positions, where, default), dotted(where), text) for where, text in found]
    if problems:
        raise RecipeError(_in_order(problems))
    return recipe


# --------------------------------------------------------------------------- _base_ inheritance
def _load_with_bases(path: Path, stack: tuple[Path, ...]) -> tuple[dict, Positions]:
    resolved = path.resolve()
    data, positions = load_yaml(path)
    if not isinstance(data, dict):
        raise RecipeError([Problem(Source(str(path), 1, 1), "", "a recipe must be a YAML mapping")])
    bases = data.pop(BASE_KEY, [])
    base_source = positions.pop((BASE_KEY,), Source(str(path), 1, 1))
    if resolved in stack:
        chain = " -> ".join(p.name for p in (*stack, resolved))
        raise RecipeError([Problem(base_source, BASE_KEY, f"inheritance cycle: {chain}")])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise RecipeError([Problem(base_source, BASE_KEY, "must be a file path or a list of file paths")])
    merged: dict = {}
    merged_pos: Positions = {}
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise RecipeError([Problem(base_source, BASE_KEY, f"base file not found: {base_path}")])
        base_data, base_pos = _load_with_bases(base_path, stack + (resolved,))
        _deep_merge(merged, merged_pos, base_data, base_pos, ())
    own_pos = {k: v for k, v in positions.items() if k[:1] != (BASE_KEY,)}
    _deep_merge(merged, merged_pos, data, own_pos, ())
    return merged, merged_pos


def _deep_merge(dst: dict, dst_pos: Positions, src: dict, src_pos: Positions, path: tuple) -> None:
    """Merge ``src`` into ``dst``: mappings merge key by key, anything else replaces."""
    for key, value in src.items():
        here = path + (key,)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            dst_pos[here] = src_pos.get(here, dst_pos.get(here))
            _deep_merge(dst[key], dst_pos, value, src_pos, here)
            continue
        for old in [p for p in dst_pos if p[: len(here)] == here]:
            del dst_pos[old]
        dst[key] = value
        dst_pos.update({p: s for p, s in src_pos.items() if p[: len(here)] == here})


# --------------------------------------------------------------------------- --set overrides
def _apply_override(data: dict, positions: Positions, text: str) -> None:
    source = Source(f"--set {text}")
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError([Problem(source, "", "expected KEY=VALUE, e.g. train.epochs=2")])
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:  # one line: the problem and its column in VALUE
        mark = getattr(exc, "problem_mark", None)
        where = f" (column {mark.column + 1} of the value)" if mark else ""
        problem = (getattr(exc, "problem", None) or str(exc)).splitlines()[0]
        raise RecipeError([Problem(source, key, f"value is not valid YAML: {problem}{where}")]) from None
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())  # methods[0].name is methods.0.name
    if "[" in key or "]" in key:
        raise RecipeError([Problem(source, key, "list items are numbered from 0: write methods.0.name or "
                                   "methods[0].name")])
    parts = key.split(".")
    if not all(parts):
        raise RecipeError([Problem(source, key, "empty key in the dotted path")])
    path = tuple(int(p) if p.isdigit() else p for p in parts)
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        child = node[part] if _has(node, part) else None
        if child is None:
            if isinstance(part, int) or not isinstance(node, dict):
                raise RecipeError([Problem(source, dotted(path[: depth + 1]), "no such list item")])
            child = node[part] = {}
            positions[path[: depth + 1]] = source  # a mapping --set created: its problems are --set's
        node = child
    last = path[-1]
    if isinstance(node, list) and not (isinstance(last, int) and last < len(node)):
        raise RecipeError([Problem(source, dotted(path), "no such list item")])
    if not isinstance(node, (dict, list)):
        raise RecipeError([Problem(source, dotted(path[:-1]), "is not a mapping")])
    node[last] = value
    for old in [p for p in positions if p[: len(path)] == path]:
        del positions[old]
    positions[path] = source
    if isinstance(value, (dict, list)):
        _mark_subtree(value, path, source, positions)


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and part < len(node)


def _mark_subtree(value: Any, path: tuple, source: Source, positions: Positions) -> None:
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        positions[path + (key,)] = source
        if isinstance(child, (dict, list)):
            _mark_subtree(child, path + (key,), source, positions)


# --------------------------------------------------------------------------- validation
def locate(positions: Positions, path: tuple, default: Source) -> Source:
    """Source of ``path``: the last ``--set`` at or below it (a check of the whole subtree, e.g. a
    params model's, fails because of what was overridden), else the file position of ``path`` or of
    its nearest recorded ancestor."""
    overrides = [s for p, s in positions.items() if p[: len(path)] == path and s.is_override]
    if path and overrides:
        return overrides[-1]
    for end in range(len(path), 0, -1):
        if path[:end] in positions:
            return positions[path[:end]]
    return default


def validate(model: type[BaseModel], data: Any, positions: Positions, prefix: tuple, default: Source) -> Any:
    """``model.model_validate(data)``; pydantic's errors become :class:`RecipeError` problems placed by
    ``positions`` (``prefix``: where ``data`` sits in the recipe)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_in_order(_problems(exc, model, data, positions, prefix, default))) from None


def _in_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.source.file, p.source.line, p.source.col))


def _problems(exc: ValidationError, model: type[BaseModel], data: Any, positions: Positions, prefix: tuple,
              default: Source) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        rel = location(err)
        text = message(err)
        if err["type"] == "extra_forbidden":
            text = "unknown field" + _suggest(str(rel[-1]), _fields_at(model, rel[:-1], data))
        elif err["type"] == "literal_error" and isinstance(err["input"], str):
            text += _suggest(err["input"], re.findall(r"'([^']*)'", err["ctx"]["expected"]))
        problems.append(Problem(locate(positions, prefix + rel, default), dotted(prefix + rel), text))
    return problems


def _fields_at(model: Any, loc: tuple, data: Any) -> list[str]:
    """Field names of the (nested) pydantic model found at ``loc``, for "did you mean" hints; the
    ``params`` of a plugin spec are its plugin's ``Params`` (looked up by the ``name`` in ``data``)."""
    for part in loc:
        node = data
        data = data[part] if _has(data, part) else None
        if isinstance(part, int):
            model = next(iter(get_args(model)), None)
        elif isinstance(model, type) and issubclass(model, PluginSpec) and part == "params":
            try:
                model = model.plugin_class(node.get("name")).Params
            except Exception:  # unknown plugin: reported on its name
                return []
        elif isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            model = model.model_fields[part].annotation
        else:
            return []
        while get_origin(model) is not None and get_origin(model) is not list:
            model = next((a for a in get_args(model) if a is not type(None)), None)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = close_matches(name, list(choices), cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""

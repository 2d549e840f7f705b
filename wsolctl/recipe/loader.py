"""Turn a recipe file (+ ``_base_`` files + ``--set`` overrides) into a validated :class:`Recipe`."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, Optional, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from wsolctl.recipe.errors import Problem, RecipeError, Source, dotted
from wsolctl.recipe.schema import Recipe
from wsolctl.recipe.yamlpos import Positions, load_yaml

BASE_KEY = "_base_"


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> Recipe:
    """Load, merge and validate a recipe. Raises :class:`RecipeError` listing every problem found."""
    data, positions = _load_with_bases(Path(path), stack=())
    for text in overrides:
        _apply_override(data, positions, text)
    return validate_data(data, positions, Source(str(path), 1, 1))


def validate_data(data: Any, positions: Optional[Positions] = None,
                  default: Source = Source("<recipe>", 1, 1)) -> Recipe:
    """Validate an already-parsed recipe (e.g. a sweep variant or a run's stored recipe)."""
    positions = positions if positions is not None else {}
    problems, recipe = [], None
    try:
        recipe = _validate(Recipe, data, positions, (), default)
    except RecipeError as exc:
        problems += exc.problems
    resolved = _check_plugins(data, positions, default, problems)
    if recipe is not None and not problems:
        _assign_params(recipe, resolved)
        problems += _check_support(recipe, positions, default)
    if recipe is not None and recipe.sweep is not None and not problems:
        problems += _check_sweep(recipe, positions, default)
    if problems:
        raise RecipeError(sorted(problems, key=lambda p: (p.source.file, p.source.line, p.source.col)))
    recipe._positions = positions
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
    except yaml.YAMLError as exc:
        raise RecipeError([Problem(source, key, f"value is not valid YAML: {exc}")]) from None
    path = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
    node: Any = data
    for depth, part in enumerate(path[:-1]):
        child = node[part] if _has(node, part) else None
        if child is None:
            if isinstance(part, int) or not isinstance(node, dict):
                raise RecipeError([Problem(source, dotted(path[: depth + 1]), "no such list item")])
            child = node[part] = {}
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
    """Source of ``path`` or of its nearest recorded ancestor."""
    for end in range(len(path), 0, -1):
        if path[:end] in positions:
            return positions[path[:end]]
    return default


def _validate(model: type[BaseModel], data: Any, positions: Positions, prefix: tuple, default: Source):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(_problems(exc, model, positions, prefix, default)) from None


def _problems(exc: ValidationError, model: type[BaseModel], positions: Positions, prefix: tuple,
              default: Source) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        rel = tuple(p for p in err["loc"] if not _is_union_tag(p))
        loc = prefix + rel
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field" + _suggest(str(rel[-1]), _fields_at(model, rel[:-1]))
        elif err["type"] == "missing":
            message = "field required"
        problems.append(Problem(locate(positions, loc, default), dotted(loc), message))
    return problems


def _is_union_tag(part: Any) -> bool:
    # pydantic adds e.g. 'function-after[...]' or tagged-union names to loc; they aren't recipe keys.
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _fields_at(model: Any, loc: tuple) -> list[str]:
    """Field names of the (nested) pydantic model found at ``loc``, for "did you mean" hints."""
    for part in loc:
        if isinstance(part, int):
            model = next(iter(get_args(model)), None)
        elif isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            model = model.model_fields[part].annotation
        else:
            return []
        while get_origin(model) is not None and get_origin(model) is not list:
            model = next((a for a in get_args(model) if a is not type(None)), None)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _suggest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def _check_plugins(data: Any, positions: Positions, default: Source, problems: list[Problem]) -> dict:
    """Resolve dataset/backbone/method names through the plugin registry and validate each one's
    ``params`` with its own model. Works on the raw data so that these problems are reported
    together with schema problems. Returns ``{path: validated params}``."""
    from wsolctl import plugins

    resolved: dict[tuple, BaseModel] = {}
    if not isinstance(data, dict):
        return resolved
    specs = [("datasets", ("dataset",), data.get("dataset"))]
    for key, kind in (("backbones", "backbones"), ("methods", "methods")):
        items = data.get(key)
        specs += [(kind, (key, i), item) for i, item in enumerate(items)] if isinstance(items, list) else []
    for kind, path, spec in specs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            continue  # the schema reports it
        try:
            plugin = plugins.load(kind, spec["name"])
        except plugins.UnknownPlugin as exc:
            where = path + ("name",)
            problems.append(Problem(locate(positions, where, default), dotted(where), str(exc)))
            continue
        try:
            resolved[path] = plugin.Params.model_validate(spec.get("params") or {})
        except ValidationError as exc:
            problems.extend(_problems(exc, plugin.Params, positions, path + ("params",), default))
    return resolved


def _assign_params(recipe: Recipe, resolved: dict) -> None:
    recipe.dataset.resolved_params = resolved[("dataset",)]
    for i, backbone in enumerate(recipe.backbones):
        backbone.resolved_params = resolved[("backbones", i)]
    for i, method in enumerate(recipe.methods):
        method.resolved_params = resolved[("methods", i)]


def _check_support(recipe: Recipe, positions: Positions, default: Source) -> list[Problem]:
    """What the backbones declare (``Backbone.info()``, built without weights and without network)
    against what their settings and the methods need: a validation error, not a crash mid-run.
    An ``hf-hub:`` backbone whose config is not cached yet is checked when the study starts."""
    from wsolctl import plugins
    from wsolctl.errors import InputError
    from wsolctl.models.timm_any import NotCached

    problems = []

    def problem(path: tuple, message: str) -> None:
        problems.append(Problem(locate(positions, path, default), dotted(path), message))

    for j, spec in enumerate(recipe.backbones):
        backbone = plugins.load("backbones", spec.name)(spec.resolved_params)
        try:
            info = backbone.info()
        except NotCached:
            continue
        except InputError as exc:
            problem(("backbones", j, "name"), str(exc))
            continue
        if spec.pretrained is True and not backbone.pretrained_name:
            problem(("backbones", j, "pretrained"), f"backbone {spec.name!r} declares no default pretrained weights")
        if not isinstance(spec.freeze, bool) and spec.freeze > len(info.stages):
            problem(("backbones", j, "freeze"), f"backbone {spec.name!r} declares {len(info.stages)} stages")
        for i, method in enumerate(recipe.methods):
            if method.backbones is not None and spec.name not in method.backbones:
                continue
            reason = plugins.load("methods", method.name).unsupported(info)
            if reason:
                problem(("methods", i, "name"), f"{method.name} does not support backbone {spec.name!r}: {reason}")
    return problems


def check_support(recipe: Recipe) -> None:
    """The support checks again (e.g. once an ``hf-hub:`` model's config is cached); raises RecipeError."""
    problems = _check_support(recipe, getattr(recipe, "_positions", None) or {}, Source("<recipe>", 1, 1))
    if problems:
        raise RecipeError(problems)


def _check_sweep(recipe: Recipe, positions: Positions, default: Source) -> list[Problem]:
    """Every value of the sweep must give a valid recipe; problems point at the sweep's lines."""
    from wsolctl.engine.sweep import check_values

    problems = []
    for path, message in check_values(recipe):
        problems.append(Problem(locate(positions, path, default), dotted(path), message))
    return problems

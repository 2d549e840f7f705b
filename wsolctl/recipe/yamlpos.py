"""Safe YAML loading that remembers where each key and list item came from.

PyYAML's ``compose`` gives a node tree with source marks; we build plain Python values from it with
the safe constructor (no arbitrary objects) and a ``{path: Source}`` map used for error messages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from wsolctl.errors import RecipeError
from wsolctl.recipe.problems import Problem, Source, dotted

Positions = dict[tuple, Source]


def _source(file: str, node: yaml.Node) -> Source:
    return Source(file, node.start_mark.line + 1, node.start_mark.column + 1)


def load_yaml(path: Path) -> tuple[Any, Positions]:
    """Parse one YAML file into (data, positions). Raises RecipeError for missing files or bad YAML."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError([Problem(Source(name, 1, 1), "", "file not found")]) from None
    except OSError as exc:
        raise RecipeError([Problem(Source(name, 1, 1), "", f"cannot read: {exc.strerror}")]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> tuple[Any, Positions]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        positions: Positions = {}
        data = _build(loader, node, (), name, positions) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RecipeError([Problem(Source(name, line, col), "", f"YAML syntax: {exc.problem}")]) from None
    finally:
        loader.dispose()
    return data, positions


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: tuple, name: str, positions: Positions) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            here = path + (key,)
            if key in out:
                raise RecipeError([Problem(_source(name, key_node), dotted(here), "duplicate key")])
            positions[here] = _source(name, key_node)
            out[key] = _build(loader, value_node, here, name, positions)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            positions[path + (i,)] = _source(name, item)
            items.append(_build(loader, item, path + (i,), name, positions))
        return items
    return loader.construct_object(node, deep=True)

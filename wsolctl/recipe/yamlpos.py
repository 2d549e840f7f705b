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


# Values built from one file, aliases expanded: far above any recipe, far below a "billion laughs".
MAX_NODES = 100_000
# Collections are built here, not by the safe constructor: refuse the tags it would refuse (or build
# as something else than a plain dict or list).
PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def load_yaml(path: Path) -> tuple[Any, Positions]:
    """Parse one YAML file into (data, positions). Raises RecipeError for missing or unreadable
    files, files that are not UTF-8 text, and bad YAML."""
    name = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise RecipeError([Problem(Source(name, 1, 1), "", "file not found")]) from None
    except OSError as exc:
        raise RecipeError([Problem(Source(name, 1, 1), "", f"cannot read: {exc.strerror}")]) from None
    return parse_yaml(_text(raw, name), name)


def _text(raw: bytes, name: str) -> str:
    """``raw`` as UTF-8 text; binary data (invalid UTF-8, or a NUL byte) is reported with where it starts."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start
    else:
        bad = raw.find(b"\0")
        if bad < 0:
            return text
    head = raw[:bad].decode("utf-8", errors="replace")
    line, col = _line_col(head, len(head))
    problem = f"not a UTF-8 text file (byte 0x{raw[bad]:02x} at line {line}, column {col})"
    raise RecipeError([Problem(Source(name), "", problem)])


def _line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of character ``offset`` of ``text``."""
    head = text[:offset]
    return head.count("\n") + 1, offset - (head.rfind("\n") + 1) + 1


def parse_yaml(text: str, name: str) -> tuple[Any, Positions]:
    try:
        loader = yaml.SafeLoader(text)  # checks the characters first
    except yaml.reader.ReaderError as exc:  # a control character: not marked, only an offset
        line, col = _line_col(text, exc.position)
        raise RecipeError([Problem(Source(name, line, col), "", f"YAML syntax: unacceptable character "
                                                                 f"#x{exc.character:04x}: {exc.reason}")]) from None
    try:
        node = loader.get_single_node()
        positions: Positions = {}
        data = _build(loader, node, (), name, positions, ()) if node is not None else {}
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise RecipeError([Problem(Source(name, line, col), "", f"YAML syntax: {exc.problem}")]) from None
    finally:
        loader.dispose()
    return data, positions


def _build(loader: yaml.SafeLoader, node: yaml.Node, path: tuple, name: str, positions: Positions,
           parents: tuple) -> Any:
    """Plain values from ``node``; ``parents``: the nodes above it (an alias to one of them would
    make the value contain itself)."""
    if node in parents:
        raise RecipeError([Problem(_source(name, node), dotted(path), "recursive alias")])
    if len(positions) > MAX_NODES:
        raise RecipeError([Problem(_source(name, node), dotted(path), f"more than {MAX_NODES} values "
                                                                      "(aliases expanded)")])
    parents += (node,)
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in PLAIN_TAGS:
        raise RecipeError([Problem(_source(name, node), dotted(path), f"unsupported tag {node.tag!r}")])
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                raise RecipeError([Problem(_source(name, key_node), dotted(path), "a key must be a scalar")])
            here = path + (key,)
            if key in out:
                raise RecipeError([Problem(_source(name, key_node), dotted(here), "duplicate key")])
            positions[here] = _source(name, key_node)
            out[key] = _build(loader, value_node, here, name, positions, parents)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            positions[path + (i,)] = _source(name, item)
            items.append(_build(loader, item, path + (i,), name, positions, parents))
        return items
    return loader.construct_object(node, deep=True)

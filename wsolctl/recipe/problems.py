"""Source positions of recipe problems (the exception itself, :class:`~wsolctl.errors.RecipeError`, is in
:mod:`wsolctl.errors`).

Every problem prints as ``SOURCE: dotted.path: message`` where SOURCE is ``file:line:col`` (1-based),
``file`` for a problem with the whole file (e.g. not text), or ``--set KEY=VALUE`` for command-line
overrides.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """Where a value came from: a file position, a whole file (``line`` 0), or a ``--set`` override."""

    file: str
    line: int = 0
    col: int = 0

    @property
    def is_override(self) -> bool:
        return self.file.startswith("--set")

    def __str__(self) -> str:
        return self.file if self.is_override or not self.line else f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    source: Source
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.message}" if self.path else f"{self.source}: {self.message}"


def dotted(path: tuple) -> str:
    """``('methods', 1, 'params', 'k')`` → ``methods[1].params.k``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def location(error: dict) -> tuple:
    """The recipe path of a pydantic error (``error["loc"]`` without pydantic's own markers, e.g.
    ``function-after[...]`` or tagged-union names, which are not recipe keys)."""
    return tuple(p for p in error["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))


def message(error: dict) -> str:
    """A pydantic error's message in the recipe contract's words."""
    if error["type"] == "missing":
        return "field required"
    return error["msg"].removeprefix("Value error, ")

"""Recipe errors that carry a source position for every problem.

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


class RecipeError(Exception):
    """One or more problems with a recipe; ``str()`` gives one line per problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def dotted(path: tuple) -> str:
    """``('methods', 1, 'params', 'k')`` → ``methods[1].params.k``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out

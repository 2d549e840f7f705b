"""Progress reporting: a rich live display, or nothing (``--quiet``)."""
from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeRemainingColumn


class Task:
    def __init__(self, bar: Optional[RichProgress], task_id: Optional[int]):
        self.bar, self.task_id = bar, task_id

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.advance(self.task_id, n)

    def update(self, completed: int, total: Optional[int] = None) -> None:
        if self.bar is not None:
            self.bar.update(self.task_id, completed=completed, total=total)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task_id, description=text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.remove_task(self.task_id)


class Progress:
    """Nested bars (runs → epochs → batches/evaluation). ``quiet`` turns it into a no-op."""

    def __init__(self, console: Optional[Console] = None, quiet: bool = False):
        self.console = console or Console(stderr=True)
        self.quiet = quiet
        self.bar: Optional[RichProgress] = None
        if not quiet:
            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeRemainingColumn(), console=self.console, transient=True)

    def __enter__(self) -> "Progress":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def task(self, description: str, total: Optional[int]) -> Task:
        if self.bar is None:
            return Task(None, None)
        return Task(self.bar, self.bar.add_task(description, total=total))

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message)

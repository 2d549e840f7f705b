"""Every exception wsolctl raises on purpose, in one place (the lowest layer: imports nothing).

Errors caused by what the user gave us (files, options, data) — :class:`InputError` and its
subclasses, :class:`RecipeError`, :class:`UnknownPlugin` — print on one line on the command line and
exit with code 2, without a traceback. (:class:`RecipeError` is not a ``ValueError`` on purpose:
pydantic would turn a ``ValueError`` raised inside a validator into a validation error.)
"""
from __future__ import annotations

from typing import Sequence


class InputError(ValueError):
    """Bad user input; the message names the file/option and what is wrong."""


class RecipeError(Exception):
    """One or more problems with a recipe; ``str()`` gives one line per problem
    (``SOURCE: dotted.path: message``, see :mod:`wsolctl.recipe.problems`)."""

    def __init__(self, problems: Sequence[object]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class UnknownPlugin(LookupError):
    """Raised for a name that no installed plugin provides (the message suggests close matches), or
    for a plugin that is broken: fails to import, targets another API version, breaks its declaration."""


class PluginWarning(UserWarning):
    """A plugin could not be imported and was skipped."""


class PredictsNothingWarning(UserWarning):
    """``wsolctl predict`` at a threshold no map value reaches (τ* = 2: predicting nothing scored best)."""


class DataError(InputError):
    """Bad or inconsistent dataset input (exit code 2 on the command line)."""


class FoldFormatError(DataError):
    """A fold file is missing or malformed; the message names the file and line."""


class RunsFailed(RuntimeError):
    """Some runs failed; the others finished. The message lists each failure and its log."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


class NotCached(InputError):
    """An ``hf-hub:`` model's config is not cached, so its declaration is unknown until it is fetched."""


class TrackerWarning(UserWarning):
    """An experiment tracker failed; the study went on without it."""

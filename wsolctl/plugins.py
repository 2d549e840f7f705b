"""Plugin discovery through entry points — the same groups for built-ins and third parties.

Groups: ``wsolctl.methods``, ``wsolctl.datasets``, ``wsolctl.backbones``. Names are listed from package
metadata without importing anything; a plugin is imported only when a recipe or command needs it.
A plugin that fails to import is skipped with a warning; the others keep working.
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

KINDS = ("methods", "datasets", "backbones")


class UnknownPlugin(LookupError):
    """Raised for a name that no installed plugin provides; the message suggests close matches."""


class PluginWarning(UserWarning):
    """A plugin could not be imported and was skipped."""


@dataclass(frozen=True)
class PluginInfo:
    name: str
    kind: str
    target: str  # "module:attr"
    package: str  # distribution that registered it
    version: str


@lru_cache(maxsize=None)
def registered(kind: str) -> dict[str, EntryPoint]:
    """Entry points of one kind, by name (nothing imported)."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {KINDS}")
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=f"wsolctl.{kind}"):
        # Editable installs can expose the same distribution twice; the first one wins.
        found.setdefault(ep.name, ep)
    return found


def info(kind: str, name: str) -> PluginInfo:
    ep = registered(kind)[name]
    dist = ep.dist
    return PluginInfo(name, kind, ep.value, dist.name if dist else "?", dist.version if dist else "?")


def _name_choices(kind: str) -> list[str]:
    return sorted(registered(kind))


def suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


@lru_cache(maxsize=None)
def load(kind: str, name: str) -> Any:
    """Import and return the plugin class registered under ``name``."""
    eps = registered(kind)
    if name not in eps:
        fallback = _fallback(kind, name)
        if fallback is not None:
            return fallback
        singular = kind[:-1]
        raise UnknownPlugin(f"unknown {singular} {name!r}{suggest(name, _name_choices(kind))}")
    try:
        plugin = eps[name].load()
    except Exception as exc:  # a broken third-party plugin must not take the others down
        raise UnknownPlugin(f"{kind[:-1]} {name!r} failed to import: {type(exc).__name__}: {exc}") from None
    _check_api(kind, name, plugin)
    plugin.name = name
    return plugin


def _check_api(kind: str, name: str, plugin: Any) -> None:
    if kind != "methods":
        return
    from wsolctl.methods.base import API_VERSION

    version = getattr(plugin, "api_version", None)
    if version != API_VERSION:
        raise UnknownPlugin(f"method {name!r} targets plugin API version {version}; "
                            f"this wsolctl provides version {API_VERSION}")


def _fallback(kind: str, name: str) -> Any:
    """Backbones not registered by name may be any timm model or hf-hub:org/name (checked lazily: this imports timm)."""
    if kind != "backbones":
        return None
    from wsolctl.models.timm_any import timm_backbone

    return timm_backbone(name)


def load_all(kind: str) -> dict[str, Any]:
    """Every importable plugin of a kind; failures become :class:`PluginWarning` warnings."""
    out = {}
    for name in registered(kind):
        try:
            out[name] = load(kind, name)
        except UnknownPlugin as exc:
            warnings.warn(str(exc), PluginWarning, stacklevel=2)
    return out

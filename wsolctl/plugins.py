"""Plugin discovery through entry points — the same groups for built-ins and third parties.

Groups: ``wsolctl.methods``, ``wsolctl.datasets``, ``wsolctl.backbones``, ``wsolctl.metrics``,
``wsolctl.annotators``, ``wsolctl.trackers``. Names are listed from package
metadata without importing anything; a plugin is imported only when a recipe or command needs it.
A plugin that fails to import is skipped with a warning; the others keep working.

The registry knows no kind's special case. What differs per kind is declared: the plugin API
version a kind's plugins must target (:data:`KINDS`), and an optional *fallback* for names no
plugin registers, itself an entry point of the ``wsolctl.fallbacks`` group named after the kind
(e.g. ``backbones = "wsolctl.backbones.timm_any:timm_backbone"``: any timm model or ``hf-hub:`` name). A fallback is called
with the name and returns a plugin class, or raises :class:`~wsolctl.errors.UnknownPlugin`.
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict

from wsolctl.errors import PluginWarning, UnknownPlugin

API_VERSION = 2  # of the method plugin interface (wsolctl.methods.base.Method); 2: `unsupported` receives
# the backbone's BackboneInfo instead of its name
METRIC_API_VERSION = 1  # of the metric plugin interface (wsolctl.metrics.base.Metric)
TRACKER_API_VERSION = 1  # of the tracker plugin interface (wsolctl.tracking.base.Tracker)


class NoParams(BaseModel):
    """The params of a plugin that has none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_NAMES: dict[type, str] = {}  # plugin class -> the name :func:`load` found it under (the classes are left alone)


def name_of(plugin: Any) -> str:
    """The name ``plugin`` (a class or an instance) is used under in recipes: the entry point's name
    it was loaded by (:func:`load`), inherited by unregistered subclasses, else the ``name`` a class
    declares itself (the fallbacks' classes, internal metrics), else ``""``. An instance's own
    ``name`` attribute comes first."""
    own = None if isinstance(plugin, type) else getattr(plugin, "__dict__", {}).get("name")
    if isinstance(own, str):
        return own
    for cls in (plugin if isinstance(plugin, type) else type(plugin)).__mro__:
        if cls in _NAMES:
            return _NAMES[cls]
        declared = vars(cls).get("name")
        if isinstance(declared, str):
            return declared
    return ""


class RegisteredName:
    """A plugin base's ``name``: reads :func:`name_of`, so a plugin's own code may say ``cls.name`` /
    ``self.name``; a class that declares ``name`` itself shadows it."""

    def __get__(self, obj: Any, owner: type) -> str:
        return name_of(owner if obj is None else obj)


class Plugin:
    """What the plugins of every kind (methods, backbones, datasets, metrics, annotators) share; each
    kind's base class adds its own members."""

    api_version: ClassVar[Optional[int]] = None  # the plugin API version it targets (kinds that have one: KINDS)
    name: ClassVar[str] = RegisteredName()  # type: ignore[assignment]  # the entry point's name, used in recipes
    Params: ClassVar[type[BaseModel]] = NoParams  # its settings (pydantic, extra="forbid"), with defaults
    survey_rank: ClassVar[int] = 1000  # its order in the report (the survey's first); the others by name


@dataclass(frozen=True)
class Kind:
    """What the registry checks of one kind's plugins."""

    api_version: Optional[int] = None  # plugins must declare this ``api_version``; None: unchecked


KINDS: dict[str, Kind] = {"methods": Kind(api_version=API_VERSION), "datasets": Kind(), "backbones": Kind(),
                          "metrics": Kind(api_version=METRIC_API_VERSION), "annotators": Kind(),
                      "trackers": Kind(api_version=TRACKER_API_VERSION)}
FALLBACKS = "wsolctl.fallbacks"


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
        raise ValueError(f"unknown plugin kind {kind!r}; expected one of {tuple(KINDS)}")
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


def close_matches(name: str, choices: list[str], cutoff: float = 0.5) -> list[str]:
    """Up to three of ``choices`` close to ``name``, ignoring case (``UNI`` → ``uni``)."""
    by_lower: dict[str, str] = {}
    for choice in choices:
        by_lower.setdefault(choice.lower(), choice)
    return [by_lower[c] for c in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=cutoff)]


def suggest(name: str, choices: list[str]) -> str:
    close = close_matches(name, choices)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


@lru_cache(maxsize=None)
def load(kind: str, name: str) -> Any:
    """Import and return the plugin class registered under ``name``."""
    eps = registered(kind)
    if name not in eps:
        fallback = fallback_of(kind)
        if fallback is not None:
            return fallback(name)
        raise UnknownPlugin(f"unknown {kind[:-1]} {name!r}{suggest(name, _name_choices(kind))}")
    try:
        plugin = eps[name].load()
    except Exception as exc:  # a broken third-party plugin must not take the others down
        raise UnknownPlugin(f"{kind[:-1]} {name!r} failed to import: {type(exc).__name__}: {exc}") from None
    _check_api(kind, name, plugin)
    _NAMES[plugin] = name
    return plugin


def _check_api(kind: str, name: str, plugin: Any) -> None:
    expected = KINDS[kind].api_version
    version = getattr(plugin, "api_version", None)
    if expected is not None and version != expected:
        raise UnknownPlugin(f"{kind[:-1]} {name!r} targets plugin API version {version}; "
                            f"this wsolctl provides version {expected}")


@lru_cache(maxsize=None)
def fallback_of(kind: str) -> Optional[Callable[[str], Any]]:
    """The function that resolves names of ``kind`` no plugin registers (entry point group
    ``wsolctl.fallbacks``, named after the kind), or None."""
    found = [ep for ep in entry_points(group=FALLBACKS) if ep.name == kind]
    return found[0].load() if found else None


def load_all(kind: str) -> dict[str, Any]:
    """Every importable plugin of a kind; failures become :class:`PluginWarning` warnings."""
    out = {}
    for name in registered(kind):
        try:
            out[name] = load(kind, name)
        except UnknownPlugin as exc:
            warnings.warn(str(exc), PluginWarning, stacklevel=2)
    return out

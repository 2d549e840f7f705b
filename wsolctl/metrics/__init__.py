"""Localization metrics and their registry.

Built in and always on: PxAP and the survey's TP*/FN*/FP*/TN*, with τ* and the rates there, declared
like any metric by :class:`~wsolctl.metrics.pxap.PxAP` (scored by :class:`LocalizationMeter`); a recipe
may list it as ``pxap``. Every other metric is a plugin of the ``wsolctl.metrics`` entry-point group (:mod:`wsolctl.metrics.base`),
the built-ins (``dice``, ``maxboxacc-v2``, ``pointing-game``, ``roi-images``, ``deletion``, ``insertion``,
``road``) registered in wsolctl's ``pyproject.toml`` like third parties. Torch-free at import: the meters load on use.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Iterable

from wsolctl import plugins
from wsolctl.errors import PluginWarning, UnknownPlugin
from wsolctl.metrics.base import Column, MapMeter, MeterContext, Metric, ReportTable
from wsolctl.metrics.pxap import ACCURACY, BASELINE, REFERENCE_COLUMNS, UNTRAINED, PxAP

__all__ = ["ACCURACY", "BASELINE", "BUILT_IN", "BUILT_IN_COLUMNS", "COMPARED", "Column", "LocalizationMeter",
           "LocalizationResult", "MapMeter", "MeterContext", "Metric", "PxAP", "ReportTable", "chosen", "declared",
           "installed", "load", "names", "prepare_cams", "prepare_masks", "REFERENCE_COLUMNS", "UNTRAINED"]

BUILT_IN = PxAP.name  # the recipe name of the always-on metric
# Its results columns (fields of LocalizationResult), in report order.
BUILT_IN_COLUMNS = tuple(c.name for c in PxAP.columns)
# The columns `wsolctl compare` checks by default (those declaring a tolerance), accuracy included.
COMPARED = tuple(c for c in (*PxAP.columns, ACCURACY) if c.tolerance is not None)
_PIXEL = ("LocalizationMeter", "LocalizationResult", "prepare_cams", "prepare_masks")


def __getattr__(name: str) -> Any:
    """The pixel meter's names, imported (with torch) on first use."""
    if name in _PIXEL:
        return getattr(importlib.import_module("wsolctl.metrics.pixel"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def names() -> list[str]:
    """Every name ``evaluation.metrics`` accepts here (nothing imported)."""
    return [BUILT_IN, *plugins.registered("metrics")]


def load(name: str) -> type[Metric]:
    """The metric plugin registered under ``name`` (raises :class:`UnknownPlugin`)."""
    metric = plugins.load("metrics", name)
    taken = [c.name for c in metric.columns if c.name in BUILT_IN_COLUMNS]
    if not metric.columns or taken:
        raise UnknownPlugin(f"metric {name!r} declares "
                            + (f"built-in columns {taken}" if taken else "no results columns"))
    return metric


def chosen(recipe_names: Iterable[str]) -> list[type[Metric]]:
    """The plugins of a recipe's ``evaluation.metrics`` (the built-in name left out), in its order;
    two of them may not declare the same column."""
    metrics = [load(name) for name in recipe_names if name != BUILT_IN]
    seen: dict[str, str] = {}
    for metric in metrics:
        for column in metric.columns:
            if seen.setdefault(column.name, plugins.name_of(metric)) != plugins.name_of(metric):
                raise UnknownPlugin(f"metrics {seen[column.name]!r} and {plugins.name_of(metric)!r} both declare column "
                                    f"{column.name!r}")
    return metrics


def installed() -> list[type[Metric]]:
    """Every importable metric plugin in the report's order (``survey_rank``, then name); a broken or
    invalid one is skipped with a :class:`PluginWarning`."""
    out = []
    for name in plugins.registered("metrics"):
        try:
            out.append(load(name))
        except UnknownPlugin as exc:
            warnings.warn(str(exc), PluginWarning, stacklevel=2)
    return sorted(out, key=lambda m: (m.survey_rank, plugins.name_of(m)))


def legacy_settings() -> dict[str, list[tuple[str, str]]]:
    """Former ``evaluation`` keys of the installed metrics' settings (``Metric.legacy_settings``):
    key -> [(metric, param)]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for metric in installed():
        for key, param in metric.legacy_settings.items():
            out.setdefault(key, []).append((plugins.name_of(metric), param))
    return out


def legacy_is_default(key: str, value: Any) -> bool:
    """Whether a former ``evaluation`` key holds the default of the setting it moved to (as every
    ``recipe.resolved.yaml`` written before the move does: loading one needs no warning)."""
    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    for metric in installed():
        if key in metric.legacy_settings:
            field = metric.Params.model_fields[metric.legacy_settings[key]]
            return plain(field.default) == plain(value)
    return False


def legacy_params(legacy: dict[str, Any], metrics: Iterable[str], params: dict[str, dict]) -> dict[str, dict]:
    """``params`` (``evaluation.metric_params``) with the ``legacy`` settings (former key -> value)
    given to the listed ``metrics`` that read them; a value the params set already wins."""
    moved, metrics = legacy_settings(), set(metrics)
    out = {name: dict(values) for name, values in params.items()}
    for key, value in legacy.items():
        for name, param in moved[key]:
            if name in metrics:
                out.setdefault(name, {}).setdefault(param, value)
    return out


def declared() -> list[type[Metric]]:
    """Every metric whose columns results may hold: the always-on PxAP, then :func:`installed`."""
    return [PxAP, *installed()]

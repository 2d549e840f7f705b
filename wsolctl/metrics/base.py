"""What a test-time metric declares: the members of a ``wsolctl.metrics`` plugin.

A metric is a small class registered under its recipe name in the ``wsolctl.metrics`` entry-point
group (built-ins in wsolctl's own ``pyproject.toml``, like third parties). It declares the columns it
adds to ``results.parquet``, whether it calls the model, the report tables it wants, and a
:class:`MapMeter` that streams over a split. The recipe schema, the evaluation, the selection and the
report read these declarations; none of them names a metric. Kept torch-free at import (the recipe
validates names by loading the declarations).

Confidence intervals (``evaluation.bootstrap``) resample the test images. A metric declares how its
columns are recomputed on a resample (``resampling``), from per-image statistics its meter keeps
(``per_image()``), stored with the run so that ``select`` resamples without the model:

* ``"values"``: ``per_image()`` is ``(N, len(columns))``, each image's value of each column (NaN: the
  image does not count); a column is the mean over the counted images of a resample.
* ``"sums"``: ``per_image()`` is ``(N, ...)``, statistics that add up over images (counts, sums);
  :meth:`Metric.resampled` turns their sums over a resample into the columns (e.g. PxAP from the
  summed histograms).
* ``""`` (the default): no interval.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Mapping, Optional, Protocol

from wsolctl.plugins import METRIC_API_VERSION as API_VERSION, NoParams, Plugin, name_of

if TYPE_CHECKING:
    import numpy as np
    import torch

    from wsolctl.metrics.pixel import LocalizationMeter

__all__ = ["API_VERSION", "Column", "ReportTable", "MapMeter", "MeterContext", "Metric", "NoParams"]


@dataclass(frozen=True)
class Column:
    """One column a metric adds to ``results.parquet`` (one value per method × selection rule)."""

    name: str  # the results.parquet column, e.g. "maxboxacc_v2"
    title: str  # its header in the report's "All metrics per selection rule" tables ("": not shown there)
    unit: str = "%"  # or a range such as "[0, 1)"
    lower_is_better: bool = False
    digits: int = 1  # decimals in the report
    tolerance: Optional[float] = None  # `wsolctl compare`'s default tolerance; None: not compared

    @property
    def header(self) -> str:
        """The report's header: the title, with the unit unless it is % or a range."""
        return self.title if self.unit == "%" or self.unit.startswith("[") else f"{self.title} ({self.unit})"


@dataclass(frozen=True)
class ReportTable:
    """A table of the report, per dataset: one column of the metric, method × backbone under B-LOC
    selection, with the mean over backbones (like the survey's Table 1 for PxAP)."""

    column: str  # one of the metric's Column names
    title: str  # "<title>, B-LOC selection, `<dataset>`"
    caption: str  # what the numbers are; the report adds how they are aggregated


class MapMeter(Protocol):
    """A streamed metric over a split; its state does not grow with the number of images."""

    def update(self, maps: torch.Tensor, masks: torch.Tensor, images: torch.Tensor,
               targets: torch.Tensor) -> None:
        """``maps`` (N, H, W) in [0, 1] (as scored: :func:`wsolctl.metrics.prepare_cams`); ``masks``
        (N, H, W) bool; ``images`` (N, C, H', W') as fed to the model; ``targets`` (N,) the class
        each map explains."""

    def compute(self) -> dict[str, float]:
        """The declared columns of everything seen so far; NaN where no image counted."""

    # and, for a metric that declares ``resampling``:
    # def per_image(self) -> np.ndarray: (N, ...) the statistics of each image seen, in the order fed


@dataclass(frozen=True)
class MeterContext:
    """What a meter may use besides the batches it is fed."""

    settings: Any  # the recipe's `evaluation` section (wsolctl.recipe.schema.Evaluation)
    model: Any  # the model being scored (``model(images).logits``), or None unless ``forward_passes``
    localization: LocalizationMeter  # the always-on PxAP meter of the same maps (shares its histogram)
    params: Any = None  # the metric's validated ``Params`` (recipe: ``evaluation.metric_params.<name>``)


class Metric(Plugin):
    """Base class of metric plugins; a subclass sets the class attributes and implements ``meter``."""

    api_version: ClassVar[int] = API_VERSION
    description: ClassVar[str] = ""  # one line, shown by `wsolctl metrics`
    columns: ClassVar[tuple[Column, ...]] = ()
    forward_passes: ClassVar[bool] = False  # the meter calls the model (e.g. deletion): it gets ``context.model``
    tables: ClassVar[tuple[ReportTable, ...]] = ()
    prominent: ClassVar[bool] = False  # its tables follow PxAP's Table 1 (else they follow Table 5)
    resampling: ClassVar[Literal["", "values", "sums"]] = ""  # how intervals resample it (module docstring)
    # former `evaluation` keys of its params (accepted in recipes with a deprecation warning): key -> param
    legacy_settings: ClassVar[dict[str, str]] = {}

    @classmethod
    def meter(cls, context: MeterContext) -> MapMeter:
        raise NotImplementedError(f"metric {name_of(cls)!r} does not implement meter()")

    @classmethod
    def resampled(cls, sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``resampling = "sums"``: the columns, ``(B,)`` each, from ``sums[name]`` ``(B, ...)``, the
        per-image statistics of each metric (its own under its name, ``wsolctl.plugins.name_of(cls)``; ``"pxap"``: the always-on
        meter's (background, foreground) histograms) summed over each of B resamples."""
        raise NotImplementedError(f"metric {name_of(cls)!r} declares resampling {cls.resampling!r} without resampled()")

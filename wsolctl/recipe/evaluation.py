"""The recipe's ``evaluation`` section: metrics and their params, the pseudo-annotator, checks,
bootstrap; which settings reach only the final test or only the tables (``TEST_ONLY``,
``RESULTS_ONLY``)."""
from __future__ import annotations

import warnings
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from wsolctl import metrics as metric_plugins
from wsolctl.errors import UnknownPlugin
from wsolctl.recipe.base import NEW_DEFAULT, PluginSpec, Strict
from wsolctl.selection import CheckName


class AnnotatorSpec(PluginSpec):
    """A pseudo-annotator (entry point group ``wsolctl.annotators``): maps a validation image (and, for
    some, a reference model) to a pseudo-mask, for selection and thresholds without pixel annotations."""

    kind: ClassVar[str] = "annotators"


def _known_metric(name: str) -> str:
    """``pxap`` (always on) or a ``wsolctl.metrics`` plugin (loaded: its declaration is checked)."""
    if name != metric_plugins.BUILT_IN:
        try:
            metric_plugins.load(name)
        except UnknownPlugin as exc:
            raise PydanticCustomError("unknown_plugin", str(exc)) from None
    return name


MetricName = Annotated[str, AfterValidator(_known_metric)]


# Settings that only the final test reads: left out of run ids (see wsolctl.engine.plan.numbers).
TEST_ONLY = {"test_only": True}


# Settings that only the tables written from the test scores read (neither run ids nor test.json).
RESULTS_ONLY = {"results_only": True}


class Bootstrap(Strict):
    """Confidence intervals: the test images resampled within class (docs/results.md)."""

    samples: int = Field(2000, ge=0, le=100000, description="bootstrap resamples; 0 turns intervals off")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the percentile intervals")


class Evaluation(Strict):
    batch_size: int = Field(32, ge=1)
    thresholds: int = Field(1000, ge=2, le=100000, description="number of CAM thresholds in [0, 1)")
    cam_target: Literal["ground-truth", "predicted"] = Field(
        "ground-truth", description="class whose map is scored (survey: ground truth, also for negatives)")
    # Test-time only (validation keeps PxAP for B-LOC, so they are not in run ids; `select` applies the
    # study's current values to finished runs). Metrics are plugins (wsolctl/metrics/).
    examples_per_class: int = Field(4, ge=0, description="test images per class whose CAMs are kept for figures",
                                    json_schema_extra=TEST_ONLY)
    metrics: list[MetricName] = Field(
        ["pxap", "dice"], min_length=1, json_schema_extra=TEST_ONLY,
        description="localization metrics scored on test: pxap (always on) and installed metric plugins "
                    "(`wsolctl metrics`); those that call the model (deletion, insertion) cost k+1 forward "
                    "passes per image")
    annotator: Optional[AnnotatorSpec] = Field(
        None, json_schema_extra=NEW_DEFAULT, description="pseudo-annotator of the valpx images, for `b-pseudo` selection and the `val-pseudo` "
        "threshold (no pixel annotation needed; docs/results.md)")
    pseudo_threshold: Literal["val-pseudo", "otsu"] = Field(
        "val-pseudo", json_schema_extra=TEST_ONLY,
        description="threshold of the b-pseudo models: τ* on the validation pseudo-masks, or Otsu on each map")
    checks: list[CheckName] = Field(
        [], json_schema_extra=TEST_ONLY,
        description="sanity checks of the selected models' maps (opt-in; model-randomisation: Adebayo et al. 2018)")
    check_images: int = Field(8, ge=1, le=1024, json_schema_extra=TEST_ONLY,
                              description="test images (a seeded subset) of the sanity checks")

    bootstrap: Bootstrap = Field(default_factory=Bootstrap, json_schema_extra=RESULTS_ONLY,
                                 description="confidence intervals and paired comparisons over resampled test images")
    metric_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, json_schema_extra=TEST_ONLY,
        description="per metric plugin of `metrics`: its params, validated by the metric's Params model")

    @model_validator(mode="before")
    @classmethod
    def _legacy_metric_settings(cls, data: Any) -> Any:
        """Settings of metrics that were evaluation keys before they moved into the metrics' params
        (``Metric.legacy_settings``, e.g. ``box_thresholds``): accepted with a deprecation warning and
        mapped for the metrics the recipe lists."""
        if not isinstance(data, dict) or not data.keys() - cls.model_fields.keys():
            return data
        moved = metric_plugins.legacy_settings()
        data = dict(data)
        legacy = {key: data.pop(key) for key in list(data) if key in moved}
        changed = [key for key, value in legacy.items() if not metric_plugins.legacy_is_default(key, value)]
        if changed:  # (at their defaults: a recipe.resolved.yaml written before the move, nothing to say)
            # one line on stderr, about the recipe (no code line of this library under it)
            warnings.warn_explicit("; ".join(f"evaluation.{key} is deprecated: use evaluation.metric_params."
                                             f"{' / '.join(name for name, _ in moved[key])}.{moved[key][0][1]}"
                                             for key in changed), FutureWarning, "recipe", 0)
        if legacy:
            data["metric_params"] = metric_plugins.legacy_params(
                legacy, data.get("metrics", cls.model_fields["metrics"].default), data.get("metric_params") or {})
        return data

    @field_validator("metrics")
    @classmethod
    def _unique_metrics(cls, metrics: list[str]) -> list[str]:
        if len(set(metrics)) != len(metrics):
            raise ValueError("a metric is listed twice")
        return metrics

    @field_validator("metric_params")
    @classmethod
    def _metric_params(cls, given: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        """Each entry names a metric of ``metrics`` and validates against that metric's ``Params``."""
        for name, params in given.items():
            if name not in info.data.get("metrics", [name]):
                raise ValueError(f"{name!r} is not in evaluation.metrics")
            try:
                metric_plugins.load(name).Params.model_validate(params)
            except ValidationError as exc:  # named here: pydantic would drop the metric from the path
                raise ValueError("; ".join(f"{'.'.join(map(str, [name, *e['loc']]))}: {e['msg']}"
                                           for e in exc.errors())) from None
        return given

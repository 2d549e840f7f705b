"""The recipe schema (pydantic v2, ``extra="forbid"`` everywhere).

Defaults follow the survey's protocol (shared/reference/methods-and-protocol.md §5, §7): SGD with
Nesterov momentum 0.9, weight decay 1e-4, lr 1e-3 with a 10x ratio on the classifier part, step
decay, resize 256 → random crop 224 with flips and colour jitter, evaluation at 224×224,
1000 thresholds, B-LOC and B-CL selection.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from wsolctl import metrics as metric_plugins, plugins
from wsolctl.errors import InputError, NotCached, UnknownPlugin
from wsolctl.executors import ExecutorName
from wsolctl.selection import DEFAULT_RULES, RULES, CheckName, RuleName


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Channel = Annotated[float, Field(allow_inf_nan=False)]
Spread = Annotated[float, Field(gt=0, allow_inf_nan=False)]
# A setting added after run ids existed, whose default reproduces the former behaviour: left out of
# run ids while at its default (see :func:`numbers`), so adding it changes no id.
NEW_DEFAULT = {"omit_default": True}


def numbers(model: BaseModel, exclude: set[str] = frozenset()) -> Any:
    """``model`` as JSON data without its display-only and test-only fields, nor its ``omit_default``
    fields at their default, at any depth."""
    dump = model.model_dump(mode="json", exclude=set(exclude))
    _drop_display_only(model, dump)
    return dump


def _drop_display_only(value: Any, dump: Any) -> None:
    if isinstance(value, BaseModel) and isinstance(dump, dict):
        for name, field in type(value).model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and (extra.get("display_only") or extra.get("test_only") or extra.get("results_only") or (
                    extra.get("omit_default") and getattr(value, name) == field.default)):
                dump.pop(name, None)
            elif name in dump:
                _drop_display_only(getattr(value, name), dump[name])
    elif isinstance(value, (list, tuple)) and isinstance(dump, list):
        for item, item_dump in zip(value, dump):
            _drop_display_only(item, item_dump)


class Normalize(Strict):
    """Per-channel (RGB) normalisation of images in [0, 1]: ``(x - mean) / std``."""

    mean: tuple[Channel, Channel, Channel]
    std: tuple[Spread, Spread, Spread]


IMAGENET = Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))  # the survey's, timm's default


class _Unresolved(BaseModel):
    """Stands for the params of a plugin that could not be found (the validation fails anyway)."""


class PluginSpec(Strict):
    """A plugin reference: ``name`` (an entry point of the ``wsolctl.<kind>`` group) and ``params``,
    validated by the plugin's own ``Params`` model: ``params`` *is* that model once validated."""

    kind: ClassVar[str]  # the plugin kind, e.g. "methods"
    name: str = Field(min_length=1)
    params: SerializeAsAny[BaseModel] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        try:
            cls.plugin_class(name)
        except UnknownPlugin as exc:
            raise PydanticCustomError("unknown_plugin", str(exc)) from None
        return name

    @field_validator("params", mode="before")
    @classmethod
    def _plugin_params(cls, params: Any, info: ValidationInfo) -> Any:
        if "name" not in info.data:  # unknown plugin: reported on `name`, the spec is invalid anyway
            return _Unresolved()
        return cls.plugin_class(info.data["name"]).Params.model_validate(params or {}, context=info.context)

    @classmethod
    def plugin_class(cls, name: str) -> Any:
        return plugins.load(cls.kind, name)

    @property
    def plugin(self) -> Any:
        """The plugin class this spec names (imported on first use)."""
        return self.plugin_class(self.name)

    def instantiate(self) -> Any:
        """The plugin, built with its validated params."""
        return self.plugin(self.params)


class DatasetSpec(PluginSpec):
    kind: ClassVar[str] = "datasets"
    root: str = Field(min_length=1, description="Folder holding the fold files (created for synthetic data).")
    fold: int = Field(0, ge=0, description="Which fold-K folder to use.")
    masks: bool = Field(True, json_schema_extra=NEW_DEFAULT, description="false: read no pixel annotation anywhere (every mask empty; select "
                        "with b-pseudo or b-cl, score what needs no mask), as for data that has none")


    def missing(self) -> Optional[str]:
        """What the data lacks at ``root`` (the plugin's ``missing(root)``, read only), or None. Not a
        validator: a recipe read back where the data is not mounted (``predict``) stays valid."""
        check = getattr(self.plugin, "missing", None)  # optional member of a dataset plugin
        return check(self.instantiate(), Path(self.root)) if check else None


class BackboneSpec(PluginSpec):
    kind: ClassVar[str] = "backbones"
    pretrained: Union[bool, str] = Field(
        False, description="true: the architecture's default timm weights (ImageNet for the WSOL backbones), "
        "read from the Hugging Face cache and downloaded there on first use (HF_HUB_OFFLINE=1 honoured); "
        "a path: a local weights file (.pth/.pt/.safetensors); false: random initialisation")
    freeze: Union[bool, int] = Field(
        False, description="true: freeze the whole backbone (everything below the method's head); N: freeze "
        "the stem and the first N stages (CNN) or blocks (ViT). Frozen parts get no gradients, are left out "
        "of the optimizer and stay in eval mode (BatchNorm statistics fixed)")
    normalize: Optional[Normalize] = Field(
        None, json_schema_extra=NEW_DEFAULT,
        description="{mean, std} the images are normalised with; default: the backbone's own (timm's pretrained "
        "config, the hub config.json, the named model's card; ImageNet's for the survey's WSOL backbones)")

    def normalization(self) -> Normalize:
        """The normalisation this backbone's images get: the recipe's override or the backbone's own
        (reads an ``hf-hub:`` model's cached config.json; NotCached when it is not there)."""
        return self.normalize or self.instantiate().normalization()

    @field_validator("pretrained")
    @classmethod
    def _weights_file(cls, value: Union[bool, str]) -> Union[bool, str]:
        if isinstance(value, str) and not Path(value).is_file():
            raise ValueError(f"weights file not found: {value}")
        return value

    @field_validator("freeze")
    @classmethod
    def _stages(cls, value: Union[bool, int]) -> Union[bool, int]:
        if not isinstance(value, bool) and value < 0:
            raise ValueError("must be true, false or a number of stages ≥ 0")
        return value


class Optimizer(Strict):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    lr_classifier_ratio: float = Field(10.0, gt=0, description="lr multiplier of the classifier part (survey: 10).")


class Scheduler(Strict):
    name: Literal["step", "cosine", "constant"] = "step"
    step_size: int = Field(40, ge=1, description="epochs between decays (step)")
    gamma: float = Field(0.1, gt=0, le=1)
    min_lr: float = Field(1e-6, ge=0)


class Augment(Strict):
    resize: Optional[int] = Field(None, ge=8, description="resize side before the random crop; default image_size·256/224")
    crop: bool = True
    hflip: float = Field(0.5, ge=0, le=1)
    vflip: float = Field(0.5, ge=0, le=1)
    color_jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.05)


class Train(Strict):
    epochs: int = Field(150, ge=0)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    scheduler: Scheduler = Field(default_factory=Scheduler)
    augment: Augment = Field(default_factory=Augment)
    amp: Literal["auto", True, False] = Field("auto", description="mixed precision; auto = on for CUDA only")
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    feature_cache: bool = Field(
        False, json_schema_extra=NEW_DEFAULT,
        description="frozen backbones (freeze: true): encode the training set and valcl once, store the output maps "
        "on disk next to the data, train the heads and score valcl accuracy on them (valpx maps, test and predict "
        "still run the whole model)")
    feature_cache_dir: Optional[str] = Field(
        None, json_schema_extra={"display_only": True},
        description="feature_cache: the folder caches are kept in (default: $WSOLCTL_FEATURE_CACHE, else "
        "<dataset root>/features, which fails on read-only shared storage); not part of run ids")
    feature_copies: int = Field(
        1, ge=1, json_schema_extra=NEW_DEFAULT,
        description="feature_cache: augmented copies of the training set encoded once; epoch e trains on copy "
        "(e-1) mod feature_copies. With a deterministic augment (crop: false, no flips, no colour jitter) one "
        "copy gives exactly the uncached training inputs")


class _Partial(Strict):
    """Base of :func:`partial` models: only the fields a recipe sets are dumped."""

    @model_serializer(mode="wrap")
    def _only_set(self, handler: Any) -> dict:
        return {key: value for key, value in handler(self).items() if value is not None}


def partial(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with every field optional (default None) and nested models partial in turn: the
    shape of an override that is deep-merged over a complete ``model`` (see :func:`merged`)."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            annotation = partial(annotation)
        else:
            annotation = Annotated[(annotation, *info.metadata)] if info.metadata else annotation
        fields[name] = (Optional[annotation], Field(None, description=info.description))
    return create_model(f"Partial{model.__name__}", __base__=_Partial, __doc__=model.__doc__, **fields)


def merged(base: BaseModel, override: Optional[BaseModel]) -> BaseModel:
    """``base`` with the fields ``override`` (a :func:`partial` model) sets, recursively."""
    if override is None:
        return base
    update = {}
    for name in type(override).model_fields:
        value = getattr(override, name)
        if value is not None:
            current = getattr(base, name)
            update[name] = merged(current, value) if isinstance(current, BaseModel) else value
    return base.model_copy(update=update)


TrainOverride = partial(Train)


class MethodSpec(PluginSpec):
    kind: ClassVar[str] = "methods"
    backbones: Optional[list[str]] = Field(
        None, description="run this method only on these of the recipe's backbones (default: all)")
    train: Optional[TrainOverride] = Field(  # type: ignore[valid-type]
        None, description="training settings of this method's runs, deep-merged over the recipe's `train`")

    def prerequisite(self) -> Optional[MethodSpec]:
        """The method whose trained model this one builds on (its plugin's ``prerequisite()``), or None."""
        needed = self.instantiate().prerequisite()
        return None if needed is None else MethodSpec.model_validate(needed)


class AnnotatorSpec(PluginSpec):
    """A pseudo-annotator (entry point group ``wsolctl.annotators``): maps a validation image (and, for
    some, a reference model) to a pseudo-mask, for selection and thresholds without pixel annotations."""

    kind: ClassVar[str] = "annotators"


class TrackerSpec(PluginSpec):
    """An experiment tracker (entry point group ``wsolctl.trackers``, e.g. mlflow, tensorboard): logs each
    finished training run and the study's result files. Never part of a run id."""

    kind: ClassVar[str] = "trackers"


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
        if legacy:
            # one line on stderr, about the recipe (no code line of this library under it)
            warnings.warn_explicit("; ".join(f"evaluation.{key} is deprecated: use evaluation.metric_params."
                                             f"{' / '.join(name for name, _ in moved[key])}.{moved[key][0][1]}"
                                             for key in legacy), FutureWarning, "recipe", 0)
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


class RandomSearch(Strict):
    trials: int = Field(ge=1, description="configurations drawn (without replacement) from the grid")
    seed: int = Field(0, ge=0)


OWNED = {"seed": "seeds", "dataset.fold": "folds"}  # grid keys that sweep.seeds / sweep.folds set


class Sweep(Strict):
    """Hyper-parameter search and repetitions. The search runs on ``search_fold``, scored on the
    validation splits (B-LOC on valpx, B-CL on valcl); each method's chosen configuration then runs
    on every fold and seed and is scored on test once."""

    grid: dict[str, list[Any]] = Field(default_factory=dict,
                                       description="dotted recipe key -> values, e.g. train.lr: [0.1, 0.01]")
    params: dict[str, dict[str, list[Any]]] = Field(
        default_factory=dict, description="method name -> {param: values}; overrides search spaces")
    search: Literal["none", "table7"] = Field("none", description="table7: add each method's own search space")
    random: Optional[RandomSearch] = None
    folds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, description="default: [dataset.fold]")
    seeds: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, description="default: [seed]")
    search_fold: Optional[int] = Field(None, ge=0, description="fold of the search; default: the first fold")

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if key.split(".")[0] in ("methods", "sweep", "executor", "name"):
                raise ValueError(f"{key!r} cannot be swept here (use sweep.params for method parameters)")
            if key in OWNED:
                raise ValueError(f"{key!r} cannot be a grid key: sweep.{OWNED[key]} sets it for every run "
                                 f"(use sweep.{OWNED[key]}: [...])")
            if not values:
                raise ValueError(f"{key!r} has no values")
        return grid


def _module_problems(method: MethodSpec, index: int, backbone_name: str, backbone: Any) -> list[tuple[tuple, str]]:
    """The backbone modules ``method``'s params name that ``backbone`` does not have (built on the
    ``meta`` device only when some are named)."""
    wanted = method.instantiate().backbone_modules()
    if not wanted:
        return []
    names = backbone.module_names()
    problems = []
    for name in wanted:
        if name not in names and name.removeprefix("backbone.") not in names:
            close = plugins.close_matches(name, sorted(names), cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else \
                f"; its last modules: {', '.join(sorted(names)[-4:])}"
            problems.append((("methods", index, "params"),
                             f"{method.name}: layer {name!r} is not a module of backbone {backbone_name!r}{hint}"))
    return problems


class Executor(Strict):
    """Where runs execute; the engine code is the same for every executor."""

    name: ExecutorName = "local"
    workers: int = Field(1, ge=1, description="local: parallel worker processes")
    devices: list[str] = Field(default_factory=list, description="local: one device per worker, e.g. [cuda:0, cuda:1]")
    address: Optional[str] = Field(None, description="ray: 'auto', 'host:port' or none to start a local Ray")
    cpus_per_run: float = Field(1.0, gt=0)
    gpus_per_run: float = Field(0.0, ge=0)
    retries: int = Field(1, ge=0, description="ray: retries of a run whose worker died")
    threads: Optional[int] = Field(None, ge=1, description=(
        "torch CPU threads per run; default: cores / workers. Results are bit-identical across "
        "executors only with the same thread count (float sums depend on it)"))


class Recipe(Strict):
    """A whole study: data × backbones × methods, trained and evaluated under one protocol.

    Immutable and complete once validated: plugin ``params`` are the plugins' own validated models,
    and every method supports every backbone it runs on."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    image_size: int = Field(224, ge=32, le=2048, description="training crop and evaluation side (survey: 224)")
    dataset: DatasetSpec
    backbones: list[BackboneSpec] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    train: Train = Field(default_factory=Train)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    selection: list[RuleName] = Field(list(DEFAULT_RULES), min_length=1)
    sweep: Optional[Sweep] = None
    executor: Executor = Field(default_factory=Executor)
    tracking: list[TrackerSpec] = Field(
        default_factory=list, description="experiment trackers the runs are logged to, e.g. [{name: mlflow}, "
        "{name: tensorboard}] (optional extras; docs/results.md). Not part of run ids")

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[MethodSpec]) -> list[MethodSpec]:
        keys = [json.dumps(m.model_dump(mode="json", exclude={"backbones"}), sort_keys=True) for m in methods]
        if len(set(keys)) != len(keys):
            raise ValueError("the same method with the same params is listed twice")
        return methods

    @field_validator("methods")
    @classmethod
    def _method_backbones_exist(cls, methods: list[MethodSpec], info: ValidationInfo) -> list[MethodSpec]:
        # A field validator (backbones are validated first), so that the problem points at methods.
        names = [b.name for b in info.data.get("backbones", [])]
        for method in methods if "backbones" in info.data else []:
            unknown = sorted(set(method.backbones or []) - set(names))
            if unknown:
                raise ValueError(f"method {method.name!r} names backbones not in the recipe: {unknown}")
        return methods

    @field_validator("selection")
    @classmethod
    def _rules_have_what_they_need(cls, selection: list[str], info: ValidationInfo) -> list[str]:
        evaluation = info.data.get("evaluation")
        dataset = info.data.get("dataset")
        if dataset is not None and evaluation is not None:
            for name in selection:
                problem = RULES[name].problem(masks=dataset.masks, annotator=evaluation.annotator is not None)
                if problem:
                    raise ValueError(problem)
        if dataset is not None and not dataset.masks and evaluation is not None and evaluation.annotator is not None \
                and evaluation.annotator.plugin.reads_masks:
            raise ValueError(f"annotator {evaluation.annotator.name} reads the validation masks, and dataset.masks "
                             "is false")
        annotator = evaluation.annotator if evaluation is not None else None
        source = annotator.plugin.source_method(annotator.params) if annotator is not None else None
        pseudo = [name for name in selection if RULES[name].needs == "annotator"]
        if pseudo and source in {m.name for m in info.data.get("methods", [])}:
            raise ValueError(f"{pseudo[0]} would select {source} against pseudo-masks made by {source} itself "
                             f"(annotator {annotator.name}): circular, it favours the checkpoint closest to the "
                             "annotator's model; take the pseudo-masks from another method's run or from haematoxylin")
        if len(set(selection)) != len(selection):
            raise ValueError("a rule is listed twice")
        return selection

    @model_validator(mode="after")
    def _supported(self) -> "Recipe":
        """What the backbones declare (``Backbone.info()``, built without weights or network) against
        what their settings and the methods need: a validation error, not a crash mid-run."""
        problems = self.support_problems() + self.feature_cache_problems()
        errors = [InitErrorDetails(type=PydanticCustomError("unsupported", message), loc=loc, input=None)
                  for loc, message in problems]
        if errors:
            raise ValidationError.from_exception_data(type(self).__name__, errors)
        return self

    def support_problems(self) -> list[tuple[tuple, str]]:
        """(recipe path, message) for each backbone setting or method its backbone cannot support. An
        ``hf-hub:`` backbone whose config is not cached yet is skipped (checked again when the study
        starts, once the config is fetched)."""
        problems = []
        for j, spec in enumerate(self.backbones):
            backbone = spec.instantiate()
            try:
                info = backbone.info()
            except NotCached:
                continue
            except InputError as exc:
                problems.append((("backbones", j, "name"), str(exc)))
                continue
            if isinstance(spec.pretrained, str) and spec.normalize is None and not backbone.file_normalization_known:
                mean, std = (", ".join(f"{v:g}" for v in values) for values in (info.normalize.mean, info.normalize.std))
                problems.append((("backbones", j, "normalize"), (
                    f"{spec.name!r} with a local weights file: the file cannot say which normalisation it was trained "
                    f"with (timm's default weights of this name use mean [{mean}] / std [{std}]); set normalize: "
                    "{mean: [...], std: [...]} (ImageNet's: [0.485, 0.456, 0.406] / [0.229, 0.224, 0.225]), or "
                    "name the model if wsolctl knows it (`wsolctl backbones`)")))
            if spec.pretrained is True and not backbone.pretrained_name:
                problems.append((("backbones", j, "pretrained"),
                                 f"backbone {spec.name!r} declares no default pretrained weights"))
            if not isinstance(spec.freeze, bool) and spec.freeze > len(info.stages):
                problems.append((("backbones", j, "freeze"), f"backbone {spec.name!r} declares {len(info.stages)} stages"))
            for i, method in enumerate(self.methods):
                if method.backbones is None or spec.name in method.backbones:
                    needed = method.prerequisite()  # trained first, on the same backbone
                    for m in (method, needed) if needed else (method,):
                        reason = m.plugin.unsupported(info)
                        if reason:
                            problems.append((("methods", i, "name"),
                                             f"{m.name} does not support backbone {spec.name!r}: {reason}"))
                            break
                    problems += _module_problems(method, i, spec.name, backbone)
        return problems

    def feature_cache_problems(self) -> list[tuple[tuple, str]]:
        """``train.feature_cache`` needs a wholly frozen backbone and methods that train on its output
        map alone (``Method.feature_cache_refusal``, from what the method declares)."""
        problems = []
        for i, method in enumerate(self.methods):
            if not self.train_of(method).feature_cache:
                continue
            reason = method.plugin.feature_cache_refusal()
            if reason:
                problems.append((("methods", i, "name"), f"{method.name} cannot train on cached encoder outputs "
                                 f"(train.feature_cache): {reason}"))
            for backbone in self.backbones_of(method):
                if backbone.freeze is not True:
                    j = self.backbones.index(backbone)
                    problems.append((("backbones", j, "freeze"), f"train.feature_cache needs freeze: true on "
                                     f"backbone {backbone.name!r} (only a wholly frozen encoder can be run once)"))
        return list(dict.fromkeys(problems))

    def backbones_of(self, method: MethodSpec) -> list[BackboneSpec]:
        """The backbones ``method`` runs on."""
        return [b for b in self.backbones if method.backbones is None or b.name in method.backbones]

    def train_of(self, method: MethodSpec) -> Train:
        """The training settings of ``method``'s runs: ``train`` with the method's own overrides."""
        return merged(self.train, method.train)

    def resolved_dict(self) -> dict:
        """The fully resolved recipe as plain data, plugin params with their defaults filled in."""
        return self.model_dump(mode="json")

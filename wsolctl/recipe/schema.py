"""The recipe schema (pydantic v2, ``extra="forbid"`` everywhere).

Defaults follow the survey's protocol (shared/reference/methods-and-protocol.md §5, §7): SGD with
Nesterov momentum 0.9, weight decay 1e-4, lr 1e-3 with a 10x ratio on the classifier part, step
decay, resize 256 → random crop 224 with flips and colour jitter, evaluation at 224×224,
1000 thresholds, B-LOC and B-CL selection.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from wsolctl import plugins
from wsolctl.errors import InputError, NotCached
from wsolctl.executors import ExecutorName
from wsolctl.recipe.base import NEW_DEFAULT, Normalize, PluginSpec, Strict, merged
from wsolctl.recipe.evaluation import Evaluation
from wsolctl.recipe.training import Train, TrainOverride
from wsolctl.selection import DEFAULT_RULES, RULES, RuleName


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


class TrackerSpec(PluginSpec):
    """An experiment tracker (entry point group ``wsolctl.trackers``, e.g. mlflow, tensorboard): logs each
    finished training run and the study's result files. Never part of a run id."""

    kind: ClassVar[str] = "trackers"


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

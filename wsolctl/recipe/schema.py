"""The recipe schema (pydantic v2, ``extra="forbid"`` everywhere).

Defaults follow the survey's protocol (shared/reference/methods-and-protocol.md §5, §7): SGD with
Nesterov momentum 0.9, weight decay 1e-4, lr 1e-3 with a 10x ratio on the classifier part, step
decay, resize 256 → random crop 224 with flips and colour jitter, evaluation at 224×224,
1000 thresholds, B-LOC and B-CL selection.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginSpec(Strict):
    """A plugin reference: ``name`` plus ``params`` validated later by the plugin's own model."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    _resolved: Optional[BaseModel] = PrivateAttr(default=None)

    @property
    def resolved_params(self) -> BaseModel:
        """The plugin's validated params model (set by the loader)."""
        return self._resolved

    @resolved_params.setter
    def resolved_params(self, value: Optional[BaseModel]) -> None:
        self._resolved = value


class DatasetSpec(PluginSpec):
    root: str = Field(min_length=1, description="Folder holding the fold files (created for synthetic data).")
    fold: int = Field(0, ge=0, description="Which fold-K folder to use.")


class BackboneSpec(PluginSpec):
    pretrained: Union[bool, str] = Field(
        False, description="true: the architecture's default timm weights (ImageNet for the WSOL backbones), "
        "read from the Hugging Face cache and downloaded there on first use (HF_HUB_OFFLINE=1 honoured); "
        "a path: a local weights file (.pth/.pt/.safetensors); false: random initialisation")
    freeze: Union[bool, int] = Field(
        False, description="true: freeze the whole backbone (everything below the method's head); N: freeze "
        "the stem and the first N stages (CNN) or blocks (ViT). Frozen parts get no gradients, are left out "
        "of the optimizer and stay in eval mode (BatchNorm statistics fixed)")

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
    backbones: Optional[list[str]] = Field(
        None, description="run this method only on these of the recipe's backbones (default: all)")


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


class Evaluation(Strict):
    batch_size: int = Field(32, ge=1)
    thresholds: int = Field(1000, ge=2, le=100000, description="number of CAM thresholds in [0, 1)")
    cam_target: Literal["ground-truth", "predicted"] = Field(
        "ground-truth", description="class whose map is scored (survey: ground truth, also for negatives)")
    examples_per_class: int = Field(4, ge=0, description="test images per class whose CAMs are kept for figures")


class RandomSearch(Strict):
    trials: int = Field(ge=1, description="configurations drawn (without replacement) from the grid")
    seed: int = Field(0, ge=0)


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
    folds: list[int] = Field(default_factory=list, description="default: [dataset.fold]")
    seeds: list[int] = Field(default_factory=list, description="default: [seed]")
    search_fold: Optional[int] = Field(None, ge=0, description="fold of the search; default: the first fold")

    @field_validator("grid")
    @classmethod
    def _grid_keys(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in grid.items():
            if key.split(".")[0] in ("methods", "sweep", "executor", "name"):
                raise ValueError(f"{key!r} cannot be swept here (use sweep.params for method parameters)")
            if not values:
                raise ValueError(f"{key!r} has no values")
        return grid


class Executor(Strict):
    """Where runs execute; the engine code is the same for every executor."""

    name: Literal["local", "ray"] = "local"
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
    """A whole study: data × backbones × methods, trained and evaluated under one protocol."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    seed: int = Field(0, ge=0)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    image_size: int = Field(224, ge=32, le=2048, description="training crop and evaluation side (survey: 224)")
    dataset: DatasetSpec
    backbones: list[BackboneSpec] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)
    train: Train = Field(default_factory=Train)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    selection: list[Literal["b-loc", "b-cl"]] = Field(["b-loc", "b-cl"], min_length=1)
    sweep: Optional[Sweep] = None
    executor: Executor = Field(default_factory=Executor)
    _positions: dict = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _method_backbones_exist(self) -> "Recipe":
        names = [b.name for b in self.backbones]
        for method in self.methods:
            unknown = sorted(set(method.backbones or []) - set(names))
            if unknown:
                raise ValueError(f"method {method.name!r} names backbones not in the recipe: {unknown}")
        return self

    @field_validator("methods")
    @classmethod
    def _unique_methods(cls, methods: list[MethodSpec]) -> list[MethodSpec]:
        keys = [(m.name, repr(sorted(m.params.items()))) for m in methods]
        if len(set(keys)) != len(keys):
            raise ValueError("the same method with the same params is listed twice")
        return methods

    def resolved_dict(self) -> dict:
        """The fully resolved recipe, plugin params with their defaults filled in."""
        data = self.model_dump(mode="json")
        specs = [("dataset", self.dataset)] + [("backbones", b) for b in self.backbones] + [("methods", m) for m in self.methods]
        index = {"backbones": 0, "methods": 0}
        for key, spec in specs:
            target = data[key] if key == "dataset" else data[key][index[key]]
            if key != "dataset":
                index[key] += 1
            if spec.resolved_params is not None:
                target["params"] = spec.resolved_params.model_dump(mode="json")
        return data

"""Building blocks of the recipe schema: strict models, numbers for run ids, partial models
(overrides), and a plugin reference (``PluginSpec``: a name and the plugin's own validated ``Params``)."""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from wsolctl import plugins
from wsolctl.errors import UnknownPlugin


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

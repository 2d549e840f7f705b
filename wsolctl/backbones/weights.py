"""Pretrained weights from the Hugging Face Hub, as timm loads them, with one-line errors.

``backbones[].pretrained: true`` loads the default pretrained weights of the backbone's timm name
(``Backbone.pretrained_name``), and an ``hf-hub:org/name`` backbone always needs its ``config.json``
(its architecture) and, when pretrained, its weights. timm fetches both through huggingface_hub into
the standard cache (``HF_HOME``/``HF_HUB_CACHE``), which honours ``HF_HUB_OFFLINE=1`` and the
``HF_TOKEN`` of gated models; this module only finds out what is needed and whether it is cached:

- :func:`ensure` (called before a study trains): fail in one line when something is missing and the
  hub may not be reached, or download it now, once, before the workers start.
- :func:`fetch` / :func:`status`: ``wsolctl weights fetch|list RECIPE``.
- :func:`create_model`: ``timm.create_model`` with hub failures turned into one-line InputErrors.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional

from wsolctl.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from wsolctl.recipe.schema import Recipe

HF_HUB = "hf-hub:"  # the prefix of a backbone name on the Hugging Face Hub (timm's)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order (safetensors first)
PROBE_TIMEOUT_S = 5  # the hub's reachability check before a download


@dataclass(frozen=True)
class HubWeights:
    """The hub files a timm name needs: ``model`` as given, its repository and revision, and whether
    it needs the weights (pretrained) and the timm ``config.json`` (``hf-hub:`` names)."""

    model: str
    repo_id: str
    revision: Optional[str] = None
    weights: bool = True
    config: bool = False
    filename: Optional[str] = None  # a weights file named by timm's pretrained_cfg (hf_hub_filename)

    @classmethod
    def of(cls, model: str, weights: bool = True) -> "HubWeights":
        """Raises InputError for a timm name whose default weights are not on the hub."""
        if model.startswith(HF_HUB):
            repo, _, revision = model[len(HF_HUB):].partition("@")
            return cls(model, repo, revision or None, weights=weights, config=True)
        import timm

        cfg = timm.models.get_pretrained_cfg(model)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            raise InputError(f"timm model {model!r} has no default pretrained weights on the Hugging Face Hub; "
                             f"use a local weights file (pretrained: PATH) or an hf-hub: name")
        repo, _, revision = hub_id.partition("@")
        return cls(model, repo, revision or None, weights=weights, filename=getattr(cfg, "hf_hub_filename", None))

    @property
    def cache(self) -> Path:
        from huggingface_hub import constants

        return Path(constants.HF_HUB_CACHE)

    @property
    def page(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"

    def files(self) -> list[tuple[str, ...]]:
        """Needed files, each as alternatives (any one of them will do), in timm's order."""
        needed = [("config.json",)] if self.config else []
        if self.weights:
            needed.append((self.filename,) if self.filename else WEIGHT_FILES)
        return needed

    def cached(self) -> Optional[list[Path]]:
        """The cached paths of every needed file, or None when one is missing."""
        found = []
        for choices in self.files():
            path = next((p for p in (cached_file(self.repo_id, f, self.revision) for f in choices) if p), None)
            if path is None:
                return None
            found.append(path)
        return found

    def missing(self) -> str:
        what = "pretrained weights of" if self.weights else "the timm config (config.json) of"
        return (f"{what} {self.model!r} (hub id {self.repo_id}): not in the Hugging Face cache {self.cache} "
                f"and HF_HUB_OFFLINE=1 forbids downloading; run `wsolctl weights fetch RECIPE` "
                f"where the hub is reachable, with the same HF_HOME")


def cached_file(repo_id: str, filename: str, revision: Optional[str] = None) -> Optional[Path]:
    """Path of a file in the hub cache (no network), or None."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(path) if isinstance(path, str) else None


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def hub_errors(weights: HubWeights) -> Iterator[None]:
    """Turn huggingface_hub's failures into one-line InputErrors that name the model and its hub id."""
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    name = f"{weights.model!r} (hub id {weights.repo_id})"
    try:
        yield
    except GatedRepoError:
        raise InputError(f"{name} is a gated model: ask for access at {weights.page}, then set HF_TOKEN "
                         f"(or run `hf auth login`) to a token of the account that has it") from None
    except RepositoryNotFoundError:
        raise InputError(f"{name}: no such model on the Hugging Face Hub, or it is private "
                         f"(set HF_TOKEN to a token that can read it)") from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if offline():
            raise InputError(weights.missing()) from None
        raise InputError(f"{name}: the Hugging Face Hub cannot be reached and the files are not in the cache "
                         f"{weights.cache}; run `wsolctl weights fetch RECIPE` where it is reachable, or set "
                         f"HF_HUB_OFFLINE=1 to use only the cache") from None


def create_model(name: str, pretrained: bool, **kwargs) -> "nn.Module":
    """``timm.create_model`` (reading the hub cache, or downloading into it when allowed)."""
    import timm

    if not pretrained and not name.startswith(HF_HUB):
        return timm.create_model(name, pretrained=False, **kwargs)
    with hub_errors(HubWeights.of(name, weights=pretrained)):
        return timm.create_model(name, pretrained=pretrained, **kwargs)


def reachable(weights: HubWeights) -> None:
    """One short request to the hub before a download: when it cannot be reached, fail now with the
    real cause (huggingface_hub would retry for tens of seconds, then report a missing file)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # whatever the HTTP client raises: the cause is what the user needs
        cause = str(exc).splitlines()[0] if str(exc) else ""
        raise InputError(f"{weights.model!r} (hub id {weights.repo_id}): not in the Hugging Face cache {weights.cache}, "
                         f"and the hub ({constants.ENDPOINT}) cannot be reached: {type(exc).__name__}: {cause}; "
                         "run `wsolctl weights fetch RECIPE` where it is reachable (same HF_HOME), then set "
                         "HF_HUB_OFFLINE=1, or give the weights file (pretrained: PATH)") from None


def download(weights: HubWeights) -> list[Path]:
    """Download what is missing into the cache (as timm would) and return the cached paths."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    if not offline() and weights.cached() is None:  # offline or cached: huggingface_hub fails or reads at once
        reachable(weights)
    paths = []
    with hub_errors(weights):
        for choices in weights.files():
            for i, filename in enumerate(choices):
                try:
                    paths.append(Path(hf_hub_download(weights.repo_id, filename, revision=weights.revision)))
                    break
                except EntryNotFoundError:
                    if i == len(choices) - 1:
                        raise InputError(f"{weights.model!r} (hub id {weights.repo_id}) has none of "
                                         f"{', '.join(choices)}") from None
    return paths


# ------------------------------------------------------------------------------------------ recipes
@dataclass(frozen=True)
class Need:
    backbone: str  # the recipe's backbone name
    weights: HubWeights


def needs(recipe: "Recipe") -> list[Need]:
    """What the recipe's backbones need from the hub: the default weights of those with
    ``pretrained: true`` and the config of ``hf-hub:`` ones. Each repository once."""
    found: dict[tuple, Need] = {}
    for spec in recipe.backbones:
        backbone = spec.instantiate()
        name = backbone.pretrained_name if spec.pretrained is True else backbone.architecture
        if spec.pretrained is True or name.startswith(HF_HUB):
            if not name:
                raise InputError(f"backbone {spec.name!r} declares no default pretrained weights")
            weights = HubWeights.of(name, weights=spec.pretrained is True)
            key = (weights.repo_id, weights.revision)
            if key not in found or weights.weights:
                found[key] = Need(spec.name, weights)
    return list(found.values())


def ensure_cached(weights: HubWeights, backbone: Optional[str] = None) -> None:
    """The files are cached, or are downloaded now; offline with one missing → one-line InputError."""
    if weights.cached() is not None:
        return
    if offline():
        raise InputError((f"backbone {backbone!r}: " if backbone else "") + weights.missing())
    download(weights)


def ensure(recipe: "Recipe") -> None:
    """Before training: every needed file is cached, or is downloaded now (one process, before the
    workers start)."""
    for need in needs(recipe):
        ensure_cached(need.weights, need.backbone)


def fetch(recipe: "Recipe") -> list[dict]:
    """``wsolctl weights fetch``: download every needed file; one row per repository."""
    return [_row(need, download(need.weights)) for need in needs(recipe)]


def status(recipe: "Recipe") -> list[dict]:
    """``wsolctl weights list``: what is cached, per backbone (no network)."""
    return [_row(need, need.weights.cached()) for need in needs(recipe)]


def _row(need: Need, paths: Optional[list[Path]]) -> dict:
    w = need.weights
    return {"backbone": need.backbone, "model": w.model, "hub_id": w.repo_id,
            "files": " + ".join("config" if c == ("config.json",) else "weights" for c in w.files()),
            "cached": [str(p) for p in paths] if paths else None, "cache": str(w.cache)}


def describe_row(row: dict) -> str:
    where = row["cached"][-1] if row["cached"] else f"missing from {row['cache']}"
    return f"{row['backbone']}: {row['hub_id']} ({row['files']}): {where}"

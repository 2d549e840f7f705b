"""Named pathology foundation models: one table (:data:`MODELS`) of the published encoders, each with
what its model card says it needs, so that a recipe names one (``name: uni2-h``).

Each entry gives the hub id, the timm architecture and the ``timm.create_model`` arguments of the card
and of its config.json (layers by name, from :data:`wsolctl.backbones.timm_any.LAYERS`), the normalisation
the card prescribes, the tokens ahead of the patch tokens (class + register), whether the hub gates it
and a licence note. So the table alone builds the network: validating a recipe, and ``pretrained:
PATH`` (a file downloaded once: safetensors or a torch state dict, loaded with ``weights_only``), need
no hub access; ``pretrained: true`` loads the hub's files through timm as usual. The declared token
layout is checked against the built model. wsolctl builds every token model with a dynamic image
size and no classifier (a card's ``dynamic_img_size=False`` / ``num_classes=0`` are its own business).

A recipe can also give the same thing by hand: ``name: hf-hub:MahmoodLab/UNI2-h`` with
``params: {model_args: {...}}`` and ``normalize: {mean, std}``.

Card facts were checked against the model cards' published loading code (UNI, UNI2-h, Virchow2,
H-optimus-0/1) as quoted by toolkits that wrap them (TRIDENT, LazySlide, eva); licence notes are a
summary: the model card is authoritative.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Optional

from wsolctl.backbones.base import BackboneInfo
from wsolctl.backbones.timm_any import HF_HUB, TimmBackbone, check_model_args
from wsolctl.errors import InputError
from wsolctl.recipe.base import IMAGENET, Normalize

HALF = Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
H_OPTIMUS = Normalize(mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517))


@dataclass(frozen=True)
class Card:
    """One named model. ``timm_reason``: why timm cannot load it (then it is listed, not usable)."""

    name: str
    title: str
    hub_id: str
    encoder: str  # architecture in words
    create_args: dict[str, Any] = field(default_factory=dict)
    normalize: Normalize = IMAGENET
    prefix_tokens: int = 1  # class + register tokens
    patch: int = 16
    gated: bool = True
    licence: str = ""
    timm_reason: Optional[str] = None
    arch: Optional[str] = None  # the timm architecture its config.json names: built with no hub access

    @property
    def architecture(self) -> str:
        return self.arch or self.model

    @property
    def model(self) -> str:
        return HF_HUB + self.hub_id

    @property
    def layout(self) -> str:
        registers = self.prefix_tokens - 1
        return "class token" + (f" + {registers} register tokens" if registers else "")


SWIGLU = {"mlp_layer": "SwiGLUPacked", "act_layer": "SiLU"}
# create_args: the card's arguments plus the architecture arguments its config.json holds, so that
# the table alone describes the network (a config.json's model_args come first, these override them).
MODELS: tuple[Card, ...] = (
    Card("uni", "UNI", "MahmoodLab/UNI", "ViT-L/16", {"img_size": 224, "patch_size": 16, "init_values": 1e-5},
         licence="CC-BY-NC-ND-4.0, academic research only", arch="vit_large_patch16_224"),
    Card("uni2-h", "UNI2-h", "MahmoodLab/UNI2-h", "ViT-H/14 (SwiGLU)",
         {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
          "mlp_ratio": 5.33334, "no_embed_class": True, "reg_tokens": 8, **SWIGLU},
         prefix_tokens=9, patch=14, licence="CC-BY-NC-ND-4.0, academic research only", arch="vit_giant_patch14_224"),
    Card("virchow2", "Virchow2", "paige-ai/Virchow2", "ViT-H/14 (SwiGLU)",
         {"img_size": 224, "init_values": 1e-5, "reg_tokens": 4, "mlp_ratio": 5.3375, **SWIGLU},
         prefix_tokens=5, patch=14, licence="CC-BY-NC-ND-4.0, non-commercial", arch="vit_huge_patch14_224"),
    Card("h-optimus-0", "H-optimus-0", "bioptimus/H-optimus-0", "ViT-g/14", {"img_size": 224, "init_values": 1e-5},
         normalize=H_OPTIMUS, prefix_tokens=5, patch=14, licence="Apache-2.0", arch="vit_giant_patch14_reg4_dinov2"),
    Card("h-optimus-1", "H-optimus-1", "bioptimus/H-optimus-1", "ViT-g/14", {"img_size": 224, "init_values": 1e-5},
         normalize=H_OPTIMUS, prefix_tokens=5, patch=14, licence="academic research use (access on request)",
         arch="vit_giant_patch14_reg4_dinov2"),
    Card("prov-gigapath", "Prov-GigaPath", "prov-gigapath/prov-gigapath", "ViT-g tile encoder, patch 16",
         {"img_size": 224, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24, "init_values": 1e-5,
          "mlp_ratio": 5.33334}, licence="Apache-2.0 (access on request)", arch="vit_giant_patch14_dinov2"),
    Card("kaiko-vits16", "Kaiko ViT-S/16", "1aurent/vit_small_patch16_224.kaiko_ai_towards_large_pathology_fms",
         "ViT-S/16", normalize=HALF, gated=False, licence="kaiko.ai's (timm port by 1aurent; see the card)",
         arch="vit_small_patch16_224"),
    Card("kaiko-vitb16", "Kaiko ViT-B/16", "1aurent/vit_base_patch16_224.kaiko_ai_towards_large_pathology_fms",
         "ViT-B/16", normalize=HALF, gated=False, licence="kaiko.ai's (timm port by 1aurent; see the card)",
         arch="vit_base_patch16_224"),
    Card("phikon-v2", "Phikon-v2", "owkin/phikon-v2", "ViT-L/16 (DINOv2)", gated=False,
         licence="Owkin non-commercial",
         timm_reason="a Hugging Face transformers model (AutoModel, Dinov2Model), not a timm one: timm cannot build "
                     "it, so wsolctl cannot use it as a backbone"),
)
CARDS = {card.name: card for card in MODELS}
for _card in MODELS:  # a typo in the table fails at import, not in a user's run
    check_model_args(_card.create_args)


class NamedModel(TimmBackbone):
    """A named foundation model (``card``): its hub id, its card's create_model arguments (the
    recipe's ``params.model_args`` on top) and its normalisation."""

    card: ClassVar[Card]

    @property
    def model_name(self) -> str:  # type: ignore[override]
        return self.card.model

    @property
    def architecture(self) -> str:
        return self.card.architecture

    def model_args(self) -> dict[str, Any]:
        return {**self.card.create_args, **super().model_args()}

    def normalization(self) -> Normalize:
        return self.card.normalize  # known before the config.json is cached

    def info(self) -> BackboneInfo:
        if self.card.timm_reason:
            raise InputError(f"backbone {self.name!r} ({self.card.hub_id}): {self.card.timm_reason}")
        info = super().info()
        if info.prefix_tokens != self.card.prefix_tokens:
            raise InputError(f"backbone {self.name!r}: the config.json of {self.card.hub_id} builds "
                             f"{info.prefix_tokens} prefix token(s), its card says {self.card.layout}")
        return replace(info, normalize=self.card.normalize)


def named(name: str) -> type[NamedModel]:
    card = CARDS[name]
    return type(f"NamedModel[{name}]", (NamedModel,), {"card": card, "name": name, "title": card.title})


# the entry points (pyproject.toml, wsolctl.backbones)
UNI = named("uni")
UNI2H = named("uni2-h")
VIRCHOW2 = named("virchow2")
H_OPTIMUS_0 = named("h-optimus-0")
H_OPTIMUS_1 = named("h-optimus-1")
PROV_GIGAPATH = named("prov-gigapath")
KAIKO_VITS16 = named("kaiko-vits16")
KAIKO_VITB16 = named("kaiko-vitb16")
PHIKON_V2 = named("phikon-v2")

"""DeiT backbones (Touvron et al., 2021) for TS-CAM and any CAM-style method: timm's
``deit_{tiny,small,base}_patch16_224`` through the same path as any timm vision transformer
(:mod:`wsolctl.backbones.timm_any`): patch tokens as a (N, D, h, w) map, class token dropped, any input
size through position-embedding interpolation; TS-CAM hooks the blocks' ``attn``."""
from __future__ import annotations

from wsolctl.backbones.timm_any import TimmBackbone
from wsolctl.plugins import NoParams


class _DeiT(TimmBackbone):
    """TS-CAM trains every parameter at one learning rate (survey code); the method's head is
    still put at lr × lr_classifier_ratio by the engine (set the ratio to 1 to match the survey)."""

    Params = NoParams


class DeiTTiny(_DeiT):
    model_name = "deit_tiny_patch16_224"
    title, survey_rank = "DeiT-T", 5


class DeiTSmall(_DeiT):
    model_name = "deit_small_patch16_224"
    title, survey_rank = "DeiT-S", 6


class DeiTBase(_DeiT):
    model_name = "deit_base_patch16_224"
    title, survey_rank = "DeiT-B", 7

"""``wsolctl.models.base``, kept for third-party backbone plugins: every name of
:mod:`wsolctl.backbones.base` (``Backbone``, ``BackboneInfo``, ``Stage``, ``timm_model``, ...)."""
from wsolctl.backbones import base as _base


def __getattr__(name: str):
    return getattr(_base, name)

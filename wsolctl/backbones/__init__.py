"""Backbones: feature extractors mapping images (N,3,H,W) to features (N,C,h,w), each declaring what
it is (:class:`wsolctl.models.base.BackboneInfo`).

Each is registered in the ``wsolctl.backbones`` entry-point group; any other timm model name (CNN or
ViT) or ``hf-hub:org/name`` works through :mod:`wsolctl.models.timm_any`. Pretrained weights come
through the Hugging Face cache (:mod:`wsolctl.models.weights`).
"""

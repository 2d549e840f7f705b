"""Backbones: feature extractors mapping images (N,3,H,W) to features (N,C,h,w), each declaring what
it is (:class:`wsolctl.backbones.base.BackboneInfo`).

Each is registered in the ``wsolctl.backbones`` entry-point group; any other timm model name (CNN or
ViT) or ``hf-hub:org/name`` works through :mod:`wsolctl.backbones.timm_any`. Pretrained weights come
through the Hugging Face cache (:mod:`wsolctl.backbones.weights`).
"""

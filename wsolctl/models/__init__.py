"""Backbones: feature extractors mapping images (N,3,H,W) to features (N,C,h,w).

Each is registered in the ``wsolctl.backbones`` entry-point group; any other timm CNN name works
through :mod:`wsolctl.models.timm_cnn`.
"""

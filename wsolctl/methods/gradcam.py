"""Grad-CAM (Selvaraju et al., 2017) through Captum's LayerGradCam: channel weights are the
spatial mean of d(logit_target)/dA, map = ReLU(Σ_k w_k A_k)."""
from __future__ import annotations

from wsolctl.methods.topdown import TopDownMethod


class GradCAM(TopDownMethod):
    def attribute(self, forward_func, layer, images, targets):
        from captum.attr import LayerGradCam

        maps = LayerGradCam(forward_func, layer).attribute(images, target=targets, relu_attributions=True)
        return maps[:, 0]

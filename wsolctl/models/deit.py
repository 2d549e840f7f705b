"""DeiT backbones (Touvron et al., 2021) for TS-CAM and any CAM-style method.

The timm ``deit_{tiny,small,base}_patch16_224`` vision transformer is split into named stages:

``embed``  patch embedding (16×16 patches) + class token + position embedding → tokens (N, 1+h·w, D)
``blocks`` the transformer blocks (``blocks.0`` … ``blocks.11``; TS-CAM hooks their ``attn``)
``norm``   the final LayerNorm
``tokens`` drops the class token and lays the patch tokens out as a map (N, D, h, w)

so the backbone's output is a spatial feature map like a CNN's (CAM, Grad-CAM, MAXMIN, U-Net work on
it) and the ViT blocks stay reachable for TS-CAM's attention.

Input size: the model is built for 224 (a 14×14 token grid; the survey's setting) with timm's
*dynamic image size*: at other sizes the 14×14 position embedding is resampled (bicubic) to the
actual grid at every forward, and sides that are not a multiple of 16 are zero-padded up to one. So
any recipe ``image_size`` works (a 224 input gives 14×14 tokens, 64 gives 4×4) and local weights
trained at 224 load unchanged. The token grid is ``ceil(image_size / 16)`` per side.
"""
from __future__ import annotations

from wsolctl.models.base import Backbone, sequential, timm_model

PATCH = 16


class _Grid:
    """The token grid (h, w) of the latest forward, shared by ``embed`` (writes) and ``tokens``
    (reads): after the position embedding the tokens are a flat sequence."""

    hw: tuple[int, int] = (0, 0)


def _stages(net, grid: _Grid):
    import torch
    from timm.layers import resample_abs_pos_embed
    from torch import nn

    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = net.patch_embed  # NHWC output (dynamic image size)
            self.cls_token = net.cls_token
            self.pos_embed = net.pos_embed  # (1, 1 + 14·14, D): class-token slot first
            self.pos_drop = net.pos_drop
            self.norm_pre = net.norm_pre
            self.base_grid = tuple(net.patch_embed.grid_size)
            self.grid = grid  # a plain attribute (not a module), so a deepcopy keeps it shared

        def forward(self, x):
            x = self.patch_embed(x)
            n, h, w, d = x.shape
            self.grid.hw = (h, w)
            pos = resample_abs_pos_embed(self.pos_embed, (h, w), old_size=self.base_grid, num_prefix_tokens=1)
            x = torch.cat([self.cls_token.expand(n, -1, -1), x.reshape(n, h * w, d)], dim=1) + pos
            return self.norm_pre(self.pos_drop(x))

    class TokenMap(nn.Module):
        def __init__(self):
            super().__init__()
            self.grid = grid

        def forward(self, x):
            h, w = self.grid.hw
            patches = x[:, 1:]
            if patches.shape[1] != h * w:
                raise RuntimeError(f"expected {h}×{w} patch tokens, got {patches.shape[1]}")
            return patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)

    return [("embed", Embed()), ("blocks", net.blocks), ("norm", net.norm), ("tokens", TokenMap())]


class _DeiT(Backbone):
    arch = ""
    cam_layer = "tokens"
    # TS-CAM trains every parameter at one learning rate (survey code); the method's head is still
    # put at lr × lr_classifier_ratio by the engine (set the ratio to 1 to match the survey).
    classifier_prefixes = ()

    def build(self, pretrained=False):
        net = timm_model(self.arch, pretrained, num_classes=0, global_pool="",
                         dynamic_img_size=True, dynamic_img_pad=True)
        return sequential(_stages(net, _Grid()), net.num_features)


class DeiTTiny(_DeiT):
    arch = "deit_tiny_patch16_224"
    title, survey_rank = "DeiT-T", 5


class DeiTSmall(_DeiT):
    arch = "deit_small_patch16_224"
    title, survey_rank = "DeiT-S", 6


class DeiTBase(_DeiT):
    arch = "deit_base_patch16_224"
    title, survey_rank = "DeiT-B", 7


DEIT_NAMES = ("deit-tiny", "deit-small", "deit-base")

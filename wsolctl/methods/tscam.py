"""TS-CAM (Gao et al., 2021): token semantic coupled attention maps, on token backbones with a class
token (DeiT, as in the paper, or any timm ViT).

- Head: a 3×3 convolution on the patch-token map (N, D, h, w) → class maps (N, C, h, w); the logits
  are their global average (trained with cross-entropy).
- Semantic-agnostic attention: for every transformer block, the attention of the class token to each
  patch token, averaged over heads; summed over all blocks → (N, h, w).
- CAM of class c = class map c ⊙ attention (no ReLU, as in the reference code; the engine min-max
  normalises).

The attention is captured with forward hooks on each block's ``attn`` module that recompute the
class-token row of softmax(q·kᵀ·scale) from the module's input and its own ``qkv`` projection, so it
works whether timm runs the fused (scaled_dot_product_attention) kernel or not, and costs one row
of the attention matrix per layer. Hooks are attached only while ``cams`` runs.
"""
from __future__ import annotations

from contextlib import contextmanager

from wsolctl._lazy import nn, torch
from wsolctl.methods.base import Method, Output
from wsolctl.methods.ops import select


def attention_modules(module) -> list:
    """The self-attention modules (timm ``Attention``-like: ``qkv`` and ``num_heads``) in order."""
    return [m for m in module.modules() if hasattr(m, "qkv") and hasattr(m, "num_heads")]


def heads_qkv(attn, x):
    """(q · scale, k, v), each (N, heads, T, head_dim), of one timm attention module for its input
    ``x`` (N, T, D): its own ``qkv`` projection and q/k normalisation, as its forward computes them."""
    n, t, _ = x.shape
    heads = attn.num_heads
    head_dim = getattr(attn, "head_dim", attn.qkv.out_features // (3 * heads))
    q, k, v = attn.qkv(x).reshape(n, t, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if getattr(attn, "q_norm", None) is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    return q * getattr(attn, "scale", head_dim ** -0.5), k, v


def cls_attention(attn, x, prefix: int = 1):
    """Class-token → patch-token attention of one timm attention module for its input ``x``
    (N, prefix + L, D), averaged over heads: (N, L). The class token is the first of the ``prefix``
    tokens (timm puts register tokens after it)."""
    q, k, _ = heads_qkv(attn, x)
    row = (q[:, :, :1] @ k.transpose(-2, -1)).softmax(dim=-1)  # (N, heads, 1, T)
    return row[:, :, 0, prefix:].mean(dim=1)


@contextmanager
def captured_attention(backbone):
    """Within the block, ``store`` collects one (N, L) class-token attention per layer and forward."""
    store: list = []
    prefix = getattr(backbone, "num_prefix_tokens", 1)
    handles = [m.register_forward_hook(lambda mod, args, out: store.append(cls_attention(mod, args[0], prefix)))
               for m in attention_modules(backbone)]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


class TSCAM(Method):
    survey_rank = 13
    in_survey = True
    kind = "bottom-up"

    @classmethod
    def unsupported(cls, backbone):
        if backbone.kind == "tokens" and backbone.prefix_tokens >= 1:
            return None
        return ("TS-CAM couples the class token's attention to the patch tokens: it needs a token backbone "
                "(ViT / DeiT) with a class token")

    def build_head(self, in_channels: int, num_classes: int):
        return nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)

    def forward(self, model, images, labels=None) -> Output:
        class_maps = model.head(model.backbone(images))
        return Output(logits=class_maps.mean(dim=(2, 3)), class_maps=class_maps)

    def attention(self, model, images):
        """Semantic-agnostic attention summed over layers, (N, h, w), and the forward's output."""
        with captured_attention(model.backbone) as store:
            output = model(images)
        if not store:
            raise RuntimeError("TS-CAM found no attention module in the backbone")
        n, _, h, w = output.class_maps.shape
        return torch.stack(store).sum(dim=0).reshape(n, h, w), output

    def cams(self, model, images, targets):
        attention, output = self.attention(model, images)
        maps = select(output.class_maps, targets)
        return maps * attention

"""Attention rollout (Abnar and Zuidema, 2020; the ``jacobgil/vit-explain`` recipe), a top-down method
for token backbones (ViT, DeiT, timm ``hf-hub:`` models). Not in the survey.

For every attention block l (in forward order) the attention probabilities (N, heads, T, T) are fused
over the heads (``head_fusion``: mean, as the paper; max / min, as vit-explain offers); optionally
the lowest ``discard_ratio`` fraction of each image's fused entries is set to 0 (vit-explain; the
class token's attention to itself is kept); the identity is added for the residual path and the
rows are renormalised: Â_l = (A_l + I) / rowsum. Rollout R = Â_L ··· Â_1 (N, T, T).

- With a class token (timm ``cls_token``): the map is its row over the patch tokens, R[cls, patches].
- Without one (global-average-pooled ViTs): the pooled representation is the mean of the patch
  tokens, so the map is the mean of the patch tokens' rows, mean_i R[i, patches].

The map is class-agnostic (targets are ignored) and at the patch grid's resolution. The attention
probabilities are read by running each attention module's non-fused path (timm's ``fused_attn``
switched off for the call, its ``attn_drop`` hooked: identity in eval), which is how the
attention modules are found (they declare ``fused_attn``); the model is otherwise unchanged. Batched: one forward for the batch, the rollout a batched matrix product per block.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import torch
from wsolctl.methods.topdown import TopDownMethod, unfused_attention


class RolloutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    head_fusion: Literal["mean", "max", "min"] = Field("mean", description="how the heads' attentions are fused (paper: mean)")
    discard_ratio: float = Field(0.0, ge=0, lt=1, description=(
        "fraction of each image's lowest fused attentions set to 0 before the rollout (paper: 0; vit-explain: 0.9)"))


@contextmanager
def recorded_attention(net):
    """Collects the attention probabilities of every timm attention module of ``net`` during the
    forwards run inside the block."""
    with unfused_attention(net) as modules:
        if not modules:
            raise ValueError(f"attention rollout: no timm attention module (fused_attn + attn_drop) in {type(net).__name__}")
        found = []
        handles = [m.attn_drop.register_forward_hook(lambda mod, args, out: found.append(out)) for m in modules]
        try:
            yield found
        finally:
            for h in handles:
                h.remove()


def rollout(attentions: list["torch.Tensor"], head_fusion: str = "mean", discard_ratio: float = 0.0) -> "torch.Tensor":
    """(N, heads, T, T) per block, in forward order → R = Â_L ··· Â_1 (N, T, T)."""
    n, _, t, _ = attentions[0].shape
    eye = torch.eye(t, device=attentions[0].device, dtype=attentions[0].dtype)
    result = eye.expand(n, t, t)
    for attention in attentions:
        fused = getattr(attention, head_fusion)(dim=1)
        fused = fused.values if head_fusion != "mean" else fused
        drop = int(t * t * discard_ratio)
        if drop:
            keep = torch.ones_like(fused).flatten(1)
            keep.scatter_(1, fused.flatten(1).topk(drop, dim=1, largest=False).indices, 0.0)
            keep[:, 0] = 1.0  # the class token's attention to itself (vit-explain)
            fused = fused * keep.view_as(fused)
        a = fused + eye
        result = (a / a.sum(dim=-1, keepdim=True)) @ result
    return result


class AttentionRollout(TopDownMethod):
    Params = RolloutParams

    @classmethod
    def unsupported(cls, backbone):
        return None if backbone.kind == "tokens" else "attention rollout needs a token backbone (ViT / DeiT)"

    def layer_names(self, default):
        return [default]  # every attention block is used; no layer to choose

    def explain(self, forward_func, layers, images, targets, tokens=None):
        if tokens is None:
            raise ValueError("attention rollout needs a timm token model (ViT / DeiT)")
        from wsolctl.backbones.featuremap import token_grid

        with torch.no_grad(), recorded_attention(tokens) as found:
            forward_func(images)
        r = rollout(found, self.params.head_fusion, self.params.discard_ratio)
        prefix = int(tokens.num_prefix_tokens)
        if getattr(tokens, "cls_token", None) is not None:
            flow = r[:, 0, prefix:]
        else:
            flow = r[:, prefix:, prefix:].mean(dim=1)
        return flow.reshape(len(images), *token_grid(tokens, images.shape[-2:])).detach()

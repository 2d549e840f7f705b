"""SAT (Wu et al., "Spatial-Aware Token for Weakly Supervised Object Localization", ICCV 2023), as the
PixelCAM repository (``dlib/div_classifiers/sat.py``, ``SatLoss``) runs it, on token backbones.

- A learnable **spatial-aware token** (``loc_token``) is appended after the patch tokens at the input
  of the transformer blocks and removed at their output (the backbone's map stays the patch tokens).
- In each of the last ``gated_blocks`` blocks, the token's attention logits to every token, averaged
  over heads and passed through a sigmoid, form a mask m ∈ (0, 1) over the tokens; the block's
  softmax attention is multiplied column-wise by m (keys with a low m are damped; no renormalisation).
- Localization map = the masks of those blocks over the patch tokens, averaged: (N, h, w). It does
  not depend on the class (min-max normalised for scoring, as the reference's ``ReadyCam``).
- Classification: a 3×3 convolution on the patch map → class maps → global average → logits.
- Loss = CE + ``area_weight``·|mean over the batch of the mean mask − ``area``|
  + ``norm_weight``·mean(m̃ (1 − m̃)), m̃ = the mask smoothed by the reference's 3×3 Gaussian
  (``get_kernel(3, nsig=6)``): the area term sizes the mask, the other pushes it to 0 or 1.

The token mask is computed by forward hooks that are attached only while a forward runs: a pre-hook
on the ``blocks`` sequence appends the token, a hook on each gated attention module recomputes its
output with the mask (from the module's own ``qkv``/``proj``, whatever attention kernel timm picks),
and a hook on ``blocks`` drops the token again. Deviations: docs/methods/sat.md.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import F, nn, torch
from wsolctl.methods.base import Method, Output
from wsolctl.methods.tscam import attention_modules, heads_qkv


class SATParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    area: float = Field(0.35, gt=0, lt=1, description="target mean of the token mask (reference sat_area_th)")
    area_weight: float = Field(1.0, ge=0, description="weight of |mean mask − area| (reference: 1)")
    norm_weight: float = Field(1.0, ge=0, description="weight of mean(m̃(1 − m̃)), pushing the mask to 0/1 (reference: 1)")
    gated_blocks: int = Field(3, ge=1, description="last blocks whose attention the mask gates and whose masks "
                                                    "are averaged (reference: blocks 9-11 of 12)")


def gaussian_kernel(size: int = 3, nsig: float = 6.0):
    """The reference's ``get_kernel``: √(outer product) of the normal mass in ``size`` bins spanning
    ±(nsig + half a bin), normalised to sum 1; (1, 1, size, size)."""
    step = (2 * nsig + 1.0) / size
    edges = [-nsig - step / 2 + i * (2 * nsig + step) / size for i in range(size + 1)]
    cdf = [0.5 * (1 + math.erf(e / math.sqrt(2))) for e in edges]
    mass = torch.tensor([b - a for a, b in zip(cdf, cdf[1:])], dtype=torch.float64)
    kernel = torch.outer(mass, mass).sqrt()
    return (kernel / kernel.sum()).float()[None, None]


def gated_attention(attn, x, gate: bool):
    """A timm attention module's output for ``x`` (N, T, D) whose last token is the spatial-aware
    token, and that token's mask over the tokens, (N, T). With ``gate`` the softmax attention is
    multiplied by the mask, as in the reference's blocks ≥ 9."""
    q, k, v = heads_qkv(attn, x)
    logits = q @ k.transpose(-2, -1)  # (N, heads, T, T)
    mask = torch.sigmoid(logits[:, :, -1:, :].mean(dim=1, keepdim=True))  # (N, 1, 1, T)
    weights = logits.softmax(dim=-1)
    if gate:
        weights = weights * mask
    out = (attn.attn_drop(weights) @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
    out = attn.norm(out) if hasattr(attn, "norm") else out
    if getattr(attn, "gate", None) is not None:
        out = out * attn.gate(x).sigmoid()
    return attn.proj_drop(attn.proj(out)), mask[:, 0, 0]


@contextmanager
def spatial_token(backbone, token, gated_blocks: int):
    """While open, the backbone's blocks see ``token`` (1, 1, D) appended to their input; ``masks``
    collects the token's mask over the tokens, (N, T), of each of the last ``gated_blocks``
    attention modules, per forward."""
    blocks = getattr(backbone, "blocks", None)
    attentions = attention_modules(blocks) if isinstance(blocks, nn.Sequential) else []
    if len(attentions) < gated_blocks:
        raise RuntimeError("SAT needs a timm vision transformer: a `blocks` sequence with at least "
                           f"{gated_blocks} attention modules (qkv, num_heads); found {len(attentions)}")
    masks: list = []

    def gated(module, args, out):
        result, mask = gated_attention(module, args[0], gate=True)
        masks.append(mask)
        return result

    handles = [blocks.register_forward_pre_hook(
                   lambda module, args: (torch.cat([args[0], token.expand(args[0].shape[0], -1, -1)], dim=1),)),
               blocks.register_forward_hook(lambda module, args, out: out[:, :-1])]
    handles += [m.register_forward_hook(gated) for m in attentions[-gated_blocks:]]
    try:
        yield masks
    finally:
        for handle in handles:
            handle.remove()


class SATHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.loc_token = nn.Parameter(torch.empty(1, 1, in_channels))
        nn.init.trunc_normal_(self.loc_token, std=0.02)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=1)
        nn.init.trunc_normal_(self.classifier.weight, std=0.02)
        nn.init.zeros_(self.classifier.bias)


class SAT(Method):
    kind = "bottom-up"
    Params = SATParams

    @classmethod
    def unsupported(cls, backbone) -> Optional[str]:
        if backbone.kind == "tokens":
            return None
        return "SAT adds a token to a vision transformer's token sequence: it needs a token backbone (ViT / DeiT)"

    def build_head(self, in_channels: int, num_classes: int):
        return SATHead(in_channels, num_classes)

    def forward(self, model, images, labels=None) -> Output:
        head, prefix = model.head, getattr(model.backbone, "num_prefix_tokens", 0)
        with spatial_token(model.backbone, head.loc_token, self.params.gated_blocks) as masks:
            features = model.backbone(images)
        class_maps = head.classifier(features)
        n, _, h, w = features.shape
        mask = torch.stack(masks[-self.params.gated_blocks:]).mean(dim=0)[:, prefix:-1].reshape(n, 1, h, w)
        return Output(logits=class_maps.mean(dim=(2, 3)), class_maps=class_maps, extras={"token_mask": mask})

    def loss_terms(self, output: Output, batch) -> dict:
        mask = output.extras["token_mask"].float()
        smooth = F.conv2d(mask, gaussian_kernel().to(mask), padding=1)
        return {"ce": F.cross_entropy(output.logits, batch.labels),
                "area": (mask.flatten(1).mean(dim=1).mean() - self.params.area).abs(),
                "norm": ((1 - smooth) * smooth).mean()}

    def loss(self, output: Output, batch):
        p, t = self.params, self.loss_terms(output, batch)
        return t["ce"] + p.area_weight * t["area"] + p.norm_weight * t["norm"]

    def cams(self, model, images, targets):
        return model(images).extras["token_mask"][:, 0]

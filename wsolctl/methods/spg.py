"""SPG, Self-Produced Guidance (Zhang et al., ECCV 2018), compact version of the survey's
reference implementation (itself from clovaai/wsolevaluation).

The backbone is tapped at two intermediate stages (ResNet: after layer3 block 0 and after layer3;
VGG16: after conv4_3 and conv5_3; InceptionV3: after Mixed_5d and Mixed_6d). Each tap feeds a
3×3 conv (B1a / B2a) and a shared 1-channel head (B_shared): the maps B1, B2. The final features
feed the classifier (a 1×1 conv to class maps, then GAP: the CAM) and a 1-channel head C.

Training (everything at the input resolution, after bilinear upsampling; detached seeds):
- seeds from the main classifier's min-max normalised map of the ground-truth class supervise B2,
- seeds from sigmoid(B2) supervise B1,
- seeds from (sigmoid(B1) + sigmoid(B2)) / 2 supervise C,
each with BCE on the seed pixels only (fg: value > δh, or > 0.7·max if that leaves < 30 pixels;
bg: value < δl; everything else is ignored). Loss = CE + the three BCE terms (weight 1).
CAM = the classifier's class map. See docs/methods/erasing.md for the deviations.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from wsolctl._lazy import F, nn, torch
from wsolctl.methods.base import Method, Output
from wsolctl.methods.layout import wsol_layout_only, wsol_taps
from wsolctl.methods.ops import minmax, select

MIN_FOREGROUND = 30  # pixels; below it the fg seed threshold falls back to 0.7 × max (reference)
IGNORE = -1.0


def _search(values: list) -> dict:
    return {"search": values}


class SPGParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    threshold_1h: float = Field(0.7, ge=0, le=1, description="δ1h: fg seeds for B2 from the class map",
                                json_schema_extra=_search([0.5, 0.7]))
    threshold_1l: float = Field(0.01, ge=0, le=1, description="δ1l: bg seeds for B2 from the class map",
                                json_schema_extra=_search([0.01, 0.05, 0.1]))
    threshold_2h: float = Field(0.5, ge=0, le=1, description="δ2h: fg seeds for B1 from sigmoid(B2)",
                                json_schema_extra=_search([0.5, 0.6, 0.7]))
    threshold_2l: float = Field(0.05, ge=0, le=1, description="δ2l: bg seeds for B1 from sigmoid(B2)",
                                json_schema_extra=_search([0.01, 0.05, 0.1]))
    threshold_3h: float = Field(0.7, ge=0, le=1, description="δ3h: fg seeds for C from the fused B1/B2 map",
                                json_schema_extra=_search([0.5, 0.6, 0.7]))
    threshold_3l: float = Field(0.1, ge=0, le=1, description="δ3l: bg seeds for C from the fused B1/B2 map",
                                json_schema_extra=_search([0.01, 0.05, 0.1]))


def run_with_taps(module: "nn.Module", x: "torch.Tensor", taps, prefix: str = "", out=None):
    """Run an ``nn.Sequential`` stage by stage (descending into nested Sequentials that contain a
    tap) and return (output, {tap: that stage's output})."""
    out = {} if out is None else out
    for name, child in module.named_children():
        path = prefix + name
        if isinstance(child, nn.Sequential) and any(t.startswith(path + ".") for t in taps):
            x, _ = run_with_taps(child, x, taps, path + ".", out)
        else:
            x = child(x)
        if path in taps:
            out[path] = x
    return x, out


def seed_targets(values: "torch.Tensor", high: float, low: float) -> "torch.Tensor":
    """(N, 1, H, W) maps in [0, 1] → targets: 1 (fg: > high, or > 0.7·max when fewer than 30
    pixels pass), 0 (bg: < low; wins over fg), IGNORE elsewhere."""
    flat = values.flatten(1)
    fg = flat > high
    few = fg.sum(dim=1) < MIN_FOREGROUND
    if few.any():
        fallback = flat > 0.7 * flat.max(dim=1, keepdim=True).values
        fg = torch.where(few.unsqueeze(1), fallback, fg)
    targets = torch.full_like(flat, IGNORE)
    targets[fg] = 1.0
    targets[flat < low] = 0.0
    return targets.view_as(values)


def seed_bce(logits: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
    """Mean BCE-with-logits over the seed pixels (0 when there are none)."""
    keep = targets != IGNORE
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[keep].float(), targets[keep].float())


class SPG(Method):
    survey_rank = 8
    in_survey = True
    kind = "bottom-up"
    Params = SPGParams

    @classmethod
    def unsupported(cls, backbone):
        return wsol_layout_only(backbone, "SPG taps intermediate stages of the WSOL backbones")

    def adapt_backbone(self, backbone, info):
        where = wsol_taps(backbone, info)
        taps = where.spg
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():  # channels of the tapped stages, from one small probe
            _, feats = run_with_taps(backbone, torch.zeros(1, 3, 96, 96), taps)
        backbone.train(was_training)
        backbone.spg_taps = taps  # read back in forward (the evaluating instance never adapts)
        self._tap_channels = tuple(feats[t].shape[1] for t in taps)
        self._mid = where.spg_width or self._tap_channels[1]
        return backbone

    def build_head(self, in_channels, num_classes):
        (c1, c2), mid = self._tap_channels, self._mid
        return nn.ModuleDict({
            "A4": nn.Conv2d(in_channels, num_classes, 1),
            "B1a": nn.Sequential(nn.Conv2d(c1, mid, 3, padding=1), nn.ReLU(inplace=False)),
            "B2a": nn.Sequential(nn.Conv2d(c2, mid, 3, padding=1), nn.ReLU(inplace=False)),
            "B_shared": nn.Sequential(nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(inplace=False),
                                      nn.Conv2d(mid, 1, 1)),
            "C": nn.Sequential(nn.Conv2d(in_channels, 512, 3, padding=1), nn.ReLU(inplace=False),
                               nn.Conv2d(512, 1, 1)),
        })

    def forward(self, model, images, labels=None) -> Output:
        head, taps = model.head, model.backbone.spg_taps
        features, feats = run_with_taps(model.backbone, images, taps)
        class_maps = head["A4"](features)
        extras = {}
        if model.training:
            extras = {"b1": head["B_shared"](head["B1a"](feats[taps[0]])),
                      "b2": head["B_shared"](head["B2a"](feats[taps[1]])),
                      "c": head["C"](features)}
        return Output(logits=class_maps.mean(dim=(2, 3)), class_maps=class_maps, extras=extras)

    def loss(self, output, batch):
        p = self.params
        size = batch.images.shape[-2:]

        def up(t):
            return F.interpolate(t, size=size, mode="bilinear", align_corners=False)

        b1, b2, c = (up(output.extras[k]) for k in ("b1", "b2", "c"))
        attention = minmax(select(up(output.class_maps.detach()), batch.labels)).unsqueeze(1)
        b1_prob, b2_prob = torch.sigmoid(b1.detach()), torch.sigmoid(b2.detach())
        fused = (b1_prob + b2_prob) / 2
        return (F.cross_entropy(output.logits, batch.labels)
                + seed_bce(b2, seed_targets(attention, p.threshold_1h, p.threshold_1l))
                + seed_bce(b1, seed_targets(b2_prob, p.threshold_2h, p.threshold_2l))
                + seed_bce(c, seed_targets(fused, p.threshold_3h, p.threshold_3l)))

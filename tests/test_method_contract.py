"""The plugin contract, checked for every registered method (as timm tests every registered model): a
newly registered method is tested here without a line of test code.

For each method: its default params validate and round-trip; it builds on the first contract backbone
its own ``unsupported()`` hook accepts; a training forward pass gives logits, a finite loss (on pixel
masks when ``needs_masks``) whose backward reaches the trainable parameters; and ``cams`` gives one
finite (N, h, w) map per image. A method with a ``prerequisite()`` gets the state of a freshly built
prerequisite model first, as the engine hands it over."""
import json

import pytest
import torch

from tests.conftest import backbone_info, build_model
from wsolctl import plugins
from wsolctl.methods.base import Batch

# Tiny backbones, cheapest first; each method takes the first one it supports. test_resnet is timm's
# test-sized ResNet (through the any-timm-CNN fallback), then the survey's WSOL ResNet, then a DeiT.
BACKBONES = ("test_resnet", "resnet18-wsol", "deit-tiny")
SIZE, LABELS = 48, torch.tensor([0, 1])


def supported_backbone(cls) -> str:
    reasons = {name: cls.unsupported(backbone_info(name)) for name in BACKBONES}
    chosen = [name for name, reason in reasons.items() if reason is None]
    if not chosen:
        pytest.fail(f"no contract backbone supports this method: {reasons}")
    return chosen[0]


def with_prerequisite(model, backbone: str):
    spec = model.method.prerequisite()
    if spec is None:
        return model
    cls = plugins.load("methods", spec["name"])
    source = build_model(cls(cls.Params.model_validate(spec["params"])), backbone, seed=1)
    model.method.load_prerequisite(model, source.state_dict())
    return model


def toy_batch() -> Batch:
    images = torch.randn(len(LABELS), 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(len(LABELS), SIZE, SIZE, dtype=torch.bool)
    masks[1, 12:30, 6:24] = True  # the positive image's object; the negative has none
    return Batch(images, LABELS.clone(), masks)


# Their default params cost hundreds of forward passes per map (measured under load: 238 s and 69 s of
# the fast tier's 1180 s): only in the full suite.
COSTLY = {"sscam", "iscam"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in COSTLY else n
                                  for n in sorted(plugins.registered("methods"))])
def test_method_contract(name):
    cls = plugins.load("methods", name)
    params = cls.Params()
    assert cls.Params.model_validate(params.model_dump()) == params
    assert cls.Params.model_validate_json(params.model_dump_json()) == params
    assert cls.Params.model_json_schema()["type"] == "object"

    assert cls.kind in ("bottom-up", "top-down", "fully-supervised")
    json.dumps(cls(params).training_key())  # it is hashed into run ids

    backbone = supported_backbone(cls)
    model = with_prerequisite(build_model(cls(params), backbone), backbone)
    full = toy_batch()
    batch = model.method.augment(Batch(full.images, full.labels, full.masks if cls.needs_masks else None))

    model.train()
    output = model(batch.images, batch.labels)
    assert output.logits.shape == (len(LABELS), 2)
    loss = model.method.loss(output, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)

    model.eval()
    with torch.no_grad():  # as the engine calls it
        cams = model.method.cams(model, full.images, LABELS)
    assert cams.dim() == 3 and cams.shape[0] == len(LABELS) and min(cams.shape[1:]) >= 1
    assert torch.isfinite(cams).all()

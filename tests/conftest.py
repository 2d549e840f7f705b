import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub downloads, ever


TINY = """\
name: tiny
seed: 0
device: cpu
image_size: 48
dataset:
  name: synthetic-glas
  root: {root}
  params: {{size: 64, train_per_class: 6, test_per_class: 3, folds: 2, valpx_per_class: 1}}
backbones:
  - name: resnet18-wsol
methods:
  - name: cam
  - name: gradcam
train:
  epochs: 1
  batch_size: 4
  lr: 0.01
evaluation:
  thresholds: 100
"""


@pytest.fixture
def tiny_recipe(tmp_path):
    """A recipe that trains in seconds; its synthetic data lives in the test's tmp dir."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(root=tmp_path / "data"))
    return path


def build_model(method, backbone="resnet18-wsol", num_classes: int = 2, seed: int = 0):
    """The engine's WSOLModel for a method instance, built the way the engine builds it: on a backbone
    plugin (by name, no pretrained weights) with the backbone's CAM layer and classifier prefixes, or
    on a given module with an ``out_channels`` attribute (e.g. an identity whose "features" are the
    input; no CAM layer then). Seeded, so two builds are identical."""
    import torch

    from wsolctl import plugins
    from wsolctl.engine.model import WSOLModel
    from wsolctl.models.base import BackboneInfo, Stage

    torch.manual_seed(seed)
    if not isinstance(backbone, str):  # one stage: the module's output
        info = BackboneInfo("cnn", (Stage("", backbone.out_channels, 1),), cam_layer="")
        return WSOLModel(backbone, method, num_classes, info)
    spec = plugins.load("backbones", backbone)()
    return WSOLModel(spec.build(False), method, num_classes, spec.info(), spec.classifier_prefixes)


def backbone_info(name: str):
    """The declaration (BackboneInfo) of a backbone by its recipe name."""
    from wsolctl import plugins

    return plugins.load("backbones", name)().info()

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


def backbone_info(name: str):
    """The declaration (BackboneInfo) of a backbone by its recipe name."""
    from wsolctl import plugins

    return plugins.load("backbones", name)().info()

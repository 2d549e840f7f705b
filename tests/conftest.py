import contextlib
import os
import sys
from pathlib import Path

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
    from wsolctl.backbones.base import BackboneInfo, Stage
    from wsolctl.engine.model import WSOLModel

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


@contextlib.contextmanager
def plugins_on_path(folder: Path):
    """The plugins whose dist-info lies in ``folder`` registered while the block runs (as if installed)."""
    from wsolctl import plugins

    def forget():
        plugins.registered.cache_clear()
        plugins.load.cache_clear()

    sys.path.insert(0, str(folder))
    forget()
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        forget()


def assert_not_degenerate(results) -> None:
    """Every row's PxAP differs from the all-foreground map's (``baseline_pxap``): a constant, empty
    or NaN map scores exactly that, so a method whose maps collapse fails here."""
    for row in results.iter_rows(named=True):
        assert row["pxap"] != row["baseline_pxap"], (row["backbone"], row["method"], row["selection"], row["pxap"])


def assert_localizes(results) -> None:
    """Every method's B-LOC model (``results.parquet`` rows) scores a PxAP above the all-foreground
    map's (``baseline_pxap``, the test set's ROI fraction) on a tiny synthetic split whose ROI is
    distinct. A constant, empty or NaN map scores exactly the baseline, and one unrelated to the ROI
    has no reason to beat it; runs are deterministic on CPU, so the margins measured here hold."""
    rows = results.filter(results["selection"] == "b-loc")
    assert len(rows), "no B-LOC rows"
    for row in rows.iter_rows(named=True):
        assert row["pxap"] > row["baseline_pxap"], (row["backbone"], row["method"], row["pxap"], row["baseline_pxap"])

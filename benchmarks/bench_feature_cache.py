"""A frozen ViT-S study (CAM + Grad-CAM, 20 epochs) with and without ``train.feature_cache``.

    python benchmarks/bench_feature_cache.py [--epochs 20] [--size 64] [--train-per-class 48] [--device cpu]

Both studies run in this process on the same synthetic data (generated first, not timed), one after
the other: cached first (its time includes encoding the training set once), then uncached. Reported:
wall time of ``train`` (all epochs, with per-epoch validation) and of ``select`` (the test, whole
model in both), their ratios, and the selected PxAP of each (method, rule). The augment is
deterministic (resize only), so the heads see the same inputs either way and the PxAPs should agree
to float noise; the encoder is random (no hub here) but frozen, as a pretrained one would be.

Where the time goes: uncached, every epoch runs the encoder on the training set (forward only: a
frozen encoder needs no backward) plus the validation sets; cached, only the validation sets (valcl
accuracy, valpx PxAP with Grad-CAM's forward + backward) still run the whole model each epoch.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl

from wsolctl import pipeline
from wsolctl.engine.build import prepare_dataset
from wsolctl.recipe import load_recipe

RECIPE = """\
name: bench-feature-cache
seed: 0
device: {device}
image_size: {size}
dataset:
  name: synthetic-glas
  root: {root}
  params: {{size: {size}, train_per_class: {train}, test_per_class: 8, folds: 1, valpx_per_class: 2,
           valcl_fraction: 0.1}}
backbones:
  - {{name: vit_small_patch16_224, freeze: true}}
methods:
  - name: cam
  - name: gradcam
train:
  epochs: {epochs}
  batch_size: 16
  lr: 0.01
  feature_cache: {cache}
  augment: {{crop: false, hflip: 0, vflip: 0, color_jitter: [0, 0, 0, 0]}}
evaluation:
  thresholds: 1000
  examples_per_class: 0
  metrics: [pxap]
"""


def study(base: Path, cache: bool, args) -> dict:
    path = base / f"cache-{cache}.yaml"
    path.write_text(RECIPE.format(device=args.device, size=args.size, root=base / "data", train=args.train_per_class,
                                  epochs=args.epochs, cache=str(cache).lower()))
    recipe = load_recipe(path)
    out = base / f"out-{cache}"
    began = time.perf_counter()
    pipeline.train(recipe, out, quiet=True)
    trained = time.perf_counter()
    pipeline.select(out, quiet=True)
    selected = time.perf_counter()
    results = pl.read_parquet(out / "results.parquet").sort("method", "selection")
    return {"train_s": trained - began, "select_s": selected - trained,
            "pxap": {f"{r['method']}/{r['selection']}": round(r["pxap"], 3) for r in results.iter_rows(named=True)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--train-per-class", type=int, default=48)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        path = base / "prepare.yaml"
        path.write_text(RECIPE.format(device=args.device, size=args.size, root=base / "data", epochs=0, cache="false",
                                      train=args.train_per_class))
        prepare_dataset(load_recipe(path))  # the data, generated once before timing
        cached, plain = study(base, True, args), study(base, False, args)
    print(json.dumps({"cached": cached, "uncached": plain}, indent=2))
    print(f"train: {plain['train_s']:.1f} s uncached / {cached['train_s']:.1f} s cached = "
          f"{plain['train_s'] / cached['train_s']:.2f}x; select (whole model both): {plain['select_s']:.1f} s / "
          f"{cached['select_s']:.1f} s")
    for key in plain["pxap"]:
        print(f"selected PxAP {key}: uncached {plain['pxap'][key]} cached {cached['pxap'][key]}")


if __name__ == "__main__":
    main()

"""Bootstrap intervals of a whole study against that study's test evaluation (issue 25, target ≤ 5 %).

    python benchmarks/bench_bootstrap.py [--methods 20] [--images 80] [--size 224] [--samples 2000]

The study: ``--methods`` methods on one backbone, each selected by B-LOC and B-CL (2 × methods rows),
``--images`` test images (half per class), 1000 thresholds, the default metrics (PxAP, Dice) plus
the internal Otsu metric and accuracy. Per row, the per-image statistics the evaluation keeps
(``LocalizationMeter(per_image=True)``, Otsu's counts, correctness) are written as ``select`` writes
them, from CAM-like maps (random 7×7 maps through ``prepare_cams``) and centred square masks.

Bootstrap: :func:`wsolctl.results.intervals.add_intervals` on those rows (loading the files, every
interval, comparisons.parquet and ranks.parquet), timed once.

Evaluation (the reference, same run): a lower bound of the study's test evaluation, per row one
``model(images)`` forward (resnet18-wsol + CAM's head; every method computes at least that, Grad-CAM
also a backward) plus the meters' updates of the same maps, per image; timed on ``--batch`` images
and multiplied by rows × images. Lower bound, so the printed share is an upper bound.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import timed

from wsolctl import plugins
from wsolctl.engine.model import WSOLModel
from wsolctl.engine.pseudo import OtsuMeter
from wsolctl.engine.rundir import RunDir
from wsolctl.metrics import LocalizationMeter, prepare_cams
from wsolctl.results.intervals import add_intervals


def maps_and_masks(images: int, size: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    maps = prepare_cams(torch.rand(images, 7, 7, generator=generator), (size, size))
    masks = torch.zeros(images, size, size, dtype=torch.bool)
    masks[images // 2:, size // 4:3 * size // 4, size // 4:3 * size // 4] = True  # class 1: a square of tumour
    return maps, masks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", type=int, default=20)
    parser.add_argument("--images", type=int, default=80)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8, help="images of the timed evaluation step")
    args = parser.parse_args()
    torch.manual_seed(0)
    labels = np.repeat([0, 1], [args.images // 2, args.images - args.images // 2])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in range(args.methods):
            maps, masks = maps_and_masks(args.images, args.size, seed=m)
            meter, otsu = LocalizationMeter(1000, per_image=True), OtsuMeter()
            meter.update(maps, masks)
            otsu.update(maps, masks)
            statistics = {"pxap": meter.per_image(), "otsu-threshold": otsu.per_image()}
            values = meter.compute().as_dict()
            for rule in ("b-loc", "b-cl"):
                correct = np.random.default_rng(m).random(args.images) < 0.8
                RunDir.of(tmp, "r").write_test_images(f"m{m:02d}", rule, {"labels": labels, "correct": correct},
                                                      statistics)
                rows.append({"run_id": "r", "dataset": "d", "fold": 0, "seed": 0, "backbone": "b",
                             "method": f"m{m:02d}", "selection": rule, "threshold_rule": "test-masks",
                             "cl_acc": 100.0 * correct.mean(), **values, "dice_fg_otsu": 0.0, "iou_fg_otsu": 0.0})
        from wsolctl import metrics

        start = time.perf_counter()
        add_intervals(Path(tmp), rows, metrics.chosen(["pxap", "dice"]), args.samples, 0.95)
        bootstrap_s = time.perf_counter() - start

    backbone = plugins.load("backbones", "resnet18-wsol")()
    model = WSOLModel(backbone.build(False), plugins.load("methods", "cam")(), 2, backbone.info()).eval()
    images = torch.randn(args.batch, 3, args.size, args.size)
    maps, masks = maps_and_masks(args.batch, args.size, seed=0)

    def step() -> None:
        with torch.no_grad():
            model(images).logits.argmax(1)
        LocalizationMeter(1000, per_image=True).update(maps, masks)
        OtsuMeter().update(maps, masks)

    per_image = min(timed(step, torch.device("cpu")) for _ in range(3)) / args.batch
    evaluation_s = per_image * args.images * len(rows)
    print(f"{len(rows)} rows × {args.images} images at {args.size}², {args.samples} resamples")
    print(f"evaluation (lower bound): {evaluation_s:8.1f} s  ({1000 * per_image:.1f} ms per image and row)")
    print(f"bootstrap:                {bootstrap_s:8.1f} s")
    print(f"bootstrap / evaluation:   {100 * bootstrap_s / evaluation_s:8.2f} %")


if __name__ == "__main__":
    main()

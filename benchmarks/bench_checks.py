"""Cost of the model-randomisation sanity check (``evaluation.checks: [model-randomisation]``)
against computing the same method's maps once on the same images.

    python benchmarks/bench_checks.py [--backbone resnet18-wsol] [--method cam] [--size 224] [--images 8]

The check copies the model, computes the trained maps, then for each of the head and the backbone's
declared stages re-initialises it and recomputes the maps (1 + stages + 1 map computations), and
compares each with Spearman (twice) and SSIM per image on the CPU. The expected ratio is therefore
about ``stages + 2`` plus the similarity work; random weights (the cost does not depend on them).
"""
from __future__ import annotations

import argparse

import torch
from timing import timed

from wsolctl import plugins
from wsolctl.engine.checks import model_randomisation
from wsolctl.engine.model import WSOLModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet18-wsol")
    parser.add_argument("--method", default="cam")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=8, help="evaluation.check_images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    backbone = plugins.load("backbones", args.backbone)()
    method = plugins.load("methods", args.method)()
    model = WSOLModel(backbone.build(False), method, 2, backbone.info().cam_layer).to(device).eval()
    images = torch.randn(args.images, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 2, (args.images,), device=device)
    stages = [s.module for s in backbone.info().stages]

    def maps() -> None:
        with torch.no_grad():
            method.cams(model, images, targets).cpu()

    maps()  # warm-up
    reference = min(timed(maps, device) for _ in range(3))
    check = timed(lambda: model_randomisation(model, method, images, targets, stages), device)
    print(f"{args.backbone} + {args.method}, {args.images} images of {args.size}², {device}, "
          f"torch threads {torch.get_num_threads()}, {len(stages)} stages + head")
    print(f"maps once (reference)          {reference:8.2f} s   1.00×")
    print(f"model-randomisation check      {check:8.2f} s {check / reference:6.2f}×")


if __name__ == "__main__":
    main()

"""Cost of the test-time metrics beyond PxAP, against a plain evaluation forward pass.

    python benchmarks/bench_metrics.py [--backbone resnet18-wsol] [--size 224] [--images 16]
                                       [--batch 16] [--steps 16] [--box-thresholds 100]

One model (the backbone + CAM's head, random weights: the cost does not depend on them), one batch
of random images and CAM-like maps (random 7×7 maps through ``prepare_cams``: min-max, bilinear to
the image size) with a centred square mask. Each line is the seconds per image of one meter's
``update`` and its ratio to ``model(images)`` on the same batch, the forward that evaluation does
anyway for accuracy. Deletion/insertion run ``k + 1`` forwards per image in chunks of ``--batch``,
so their ratio is about ``k + 1``; ROAD runs 2 × 9 + 1 forwards per image plus one sparse linear
solve per image, percentile and order on the CPU (the imputation); MaxBoxAccV2 is CPU work (one labelling pass per distinct
threshold) and does not depend on the model.
"""
from __future__ import annotations

import argparse

import torch
from timing import timed

from wsolctl import plugins
from wsolctl.engine.model import WSOLModel
from wsolctl.metrics import LocalizationMeter, prepare_cams
from wsolctl.metrics.boxes import MaxBoxAccV2Meter
from wsolctl.metrics.faithfulness import FaithfulnessMeter
from wsolctl.metrics.pointing import PointingGameMeter
from wsolctl.metrics.road import RoadMeter


def seconds(fn, device: torch.device, repeats: int = 1) -> float:
    """The best of ``repeats`` timings."""
    return min(timed(fn, device) for _ in range(repeats))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet18-wsol")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=16, help="forward chunk (evaluation.batch_size)")
    parser.add_argument("--steps", type=int, default=16, help="evaluation.faithfulness_steps")
    parser.add_argument("--box-thresholds", type=int, default=100, help="evaluation.box_thresholds")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    backbone = plugins.load("backbones", args.backbone)()
    model = WSOLModel(backbone.build(False), plugins.load("methods", "cam")(), 2, backbone.info()).to(device).eval()
    images = torch.randn(args.images, 3, args.size, args.size, device=device)
    targets = torch.randint(0, 2, (args.images,), device=device)
    maps = prepare_cams(torch.rand(args.images, 7, 7, device=device), (args.size, args.size))
    masks = torch.zeros(args.images, args.size, args.size, dtype=torch.bool, device=device)
    quarter = args.size // 4
    masks[:, quarter:3 * quarter, quarter:3 * quarter] = True

    def forward() -> None:
        with torch.no_grad():
            for lo in range(0, args.images, args.batch):
                model(images[lo:lo + args.batch]).logits.cpu()

    forward()  # warm-up
    reference = seconds(forward, device, repeats=3) / args.images
    meters = {
        "PxAP (LocalizationMeter)": lambda: LocalizationMeter(1000),
        f"MaxBoxAccV2 ({args.box_thresholds} thresholds)": lambda: MaxBoxAccV2Meter(args.box_thresholds),
        "pointing game": PointingGameMeter,
        f"deletion (k={args.steps})": lambda: FaithfulnessMeter(model, "deletion", args.steps, args.batch),
        f"insertion (k={args.steps})": lambda: FaithfulnessMeter(model, "insertion", args.steps, args.batch),
        "ROAD (9 percentiles, MoRF + LeRF)": lambda: RoadMeter(model, batch_size=args.batch),
    }
    print(f"{args.backbone}, {args.images} images of {args.size}², batch {args.batch}, {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'evaluation forward (reference)':34s} {reference * 1000:9.1f} ms/image   1.00×")
    for name, make in meters.items():
        meter = make()
        update = meter.update if isinstance(meter, LocalizationMeter) else (
            lambda m, f, meter=meter: meter.update(m, f, images, targets))
        cost = seconds(lambda: update(maps, masks), device) / args.images
        print(f"{name:34s} {cost * 1000:9.1f} ms/image {cost / reference:6.2f}×")


if __name__ == "__main__":
    main()

"""The top-down methods beyond the survey (issue 18) against pytorch-grad-cam 1.5.7 (the ``bench`` / ``dev``
extra), and their memory over many batches.

    python benchmarks/bench_topdown_beyond.py                      # speed: resnet50 @ 224, batch 8, CPU
    python benchmarks/bench_topdown_beyond.py --mode memory        # RSS over 500 batches, every new method

Speed: timm ``--arch`` (pretrained=False, seed 0, eval), layer ``layer4``, randn inputs (seed 0), targets
= each image's argmax. Per method: seconds per batch for wsolctl (maps + the same bilinear resize and
min-max that pytorch-grad-cam returns) and for pytorch-grad-cam (hooks built and released inside the
call), median of ``--rounds`` interleaved rounds after one warm-up, so both see the same machine load;
and Pearson r of the maps (minimum over images; for Eigen-/KPCA-CAM up to the component's sign, which
pytorch-grad-cam leaves to LAPACK). FullGrad is compared in its ``pytorch-grad-cam`` variant; ShapleyCAM
on ResNet-50 has H·A = 0 (ReLU network). Attention rollout has no pytorch-grad-cam counterpart.

Memory: resident set size (/proc/self/statm) after ``--warmup`` batches and after ``--batches`` more,
per method, on a small CNN (two biased conv + BatchNorm layers, layer: the second conv; timm
``test_vit`` for rollout) at ``--mem-size`` px (32), batch 8: what must stay flat (no hooks, graphs or
tensors kept between calls; the model's size does not matter for that).
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics

import numpy as np
import torch
from bench_topdown import minmax_up, pearson_min, timed

NEW = ["hirescam", "gradcamelementwise", "eigencam", "eigengradcam", "kpcacam", "fem", "shapleycam", "fullgrad",
       "finercam"]
SIGNLESS = {"eigencam", "eigengradcam", "kpcacam"}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def pgc_call(name, model, layer, x, targets):
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget

    cls = {"hirescam": pgc.HiResCAM, "gradcamelementwise": pgc.GradCAMElementWise, "eigencam": pgc.EigenCAM,
           "eigengradcam": pgc.EigenGradCAM, "kpcacam": pgc.KPCA_CAM, "fem": pgc.FEM, "shapleycam": pgc.ShapleyCAM,
           "fullgrad": pgc.FullGrad, "finercam": pgc.FinerCAM}[name]
    pgc_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    if name == "finercam":
        with torch.no_grad():
            logits = model(x)
        order = (logits - logits.gather(1, targets[:, None])).abs().argsort(1)
        pgc_targets = [FinerWeightedTarget(int(t), [int(j) for j in order[i, 1:4]], 1.0) for i, t in enumerate(targets)]
    with cls(model=model, target_layers=[layer]) as obj:
        return obj(input_tensor=x, targets=pgc_targets)


def ours_call(name, model, layer, x, targets, sign=1):
    from wsolctl.explain import cams
    from wsolctl.methods import eigencam

    params = {"variant": "pytorch-grad-cam"} if name == "fullgrad" else {}
    original = eigencam.oriented
    if sign < 0:
        eigencam.oriented = lambda p, sign="peak": -original(p, sign)
    try:
        with torch.no_grad():
            maps = cams(model, x, targets, method=name, layer=None if name == "fullgrad" else layer, **params)
    finally:
        eigencam.oriented = original
    return minmax_up(maps, x.shape[-2:])


def speed(args) -> None:
    import timm

    torch.manual_seed(0)
    extra = {"output_stride": args.output_stride} if args.output_stride != 32 else {}
    model = timm.create_model(args.arch, pretrained=False, num_classes=1000, **extra).eval()
    if args.kpca_full_eigh:  # the path before issue 27: every eigenpair, whatever the size
        from wsolctl.methods import eigencam

        eigencam.ARPACK_ABOVE = 10 ** 9
    layer = model.get_submodule("layer4")
    x = torch.randn(args.batch, 3, args.size, args.size)
    with torch.no_grad():
        targets = model(x).argmax(1)
    print(f"arch={args.arch} output_stride={args.output_stride} kpca_full_eigh={args.kpca_full_eigh} "
          f"size={args.size} batch={args.batch} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} rounds={args.rounds}", flush=True)
    rows = []
    for name in args.methods.split(","):
        a, b = ours_call(name, model, layer, x, targets), pgc_call(name, model, layer, x, targets)  # warm-up
        r = pearson_min(a, b)
        if name in SIGNLESS:  # per image, the better of the two signs
            flipped = ours_call(name, model, layer, x, targets, sign=-1)
            r = min(max(pearson_min(a[i:i + 1], b[i:i + 1]), pearson_min(flipped[i:i + 1], b[i:i + 1]))
                    for i in range(len(a)))
        t_ours, t_theirs = [], []
        for _ in range(args.rounds):
            t_ours.append(timed(lambda: ours_call(name, model, layer, x, targets), 1))
            t_theirs.append(timed(lambda: pgc_call(name, model, layer, x, targets), 1))
        to, tt = statistics.median(t_ours), statistics.median(t_theirs)
        rows.append((name, r, to, tt))
        print(f"  {name:20s} r_min={r:.6f} wsolctl {to:.3f}s pgc {tt:.3f}s speed-up {tt / to:.2f}x "
              f"(per round: {', '.join(f'{b_ / a_:.2f}x' for a_, b_ in zip(t_ours, t_theirs))})", flush=True)
    print("\n| method | r (min over images) | wsolctl s/batch | pgc s/batch | speed-up |")
    print("|---|---|---|---|---|")
    for name, r, to, tt in rows:
        print(f"| {name} | {r:.6f} | {to:.3f} | {tt:.3f} | {tt / to:.2f}× |")


def small_cnn() -> "torch.nn.Module":
    """A few-layer CNN with biased convolutions and BatchNorm (FullGrad's bias layers): the memory run
    checks what a call keeps (hooks, graphs, tensors), which does not depend on the model's size."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.GELU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3)).eval()


def memory(args) -> None:
    import timm

    from wsolctl.explain import cams

    cnn = small_cnn()
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=args.mem_size).eval()
    x, targets = torch.randn(8, 3, args.mem_size, args.mem_size), torch.arange(8) % 3
    print(f"batches={args.batches} warm-up={args.warmup} batch=8 size={args.mem_size}", flush=True)
    print("\n| method | model | RSS after warm-up (MB) | RSS after batches (MB) | growth (MB) |")
    print("|---|---|---|---|---|")
    for name in args.methods.split(",") + ["rollout"]:
        model, layer = (vit, "blocks.1.norm1") if name == "rollout" else (cnn, "4")

        def batch():
            with torch.no_grad():
                return cams(model, x, targets, method=name, layer=None if name == "fullgrad" else layer).sum().item()

        for _ in range(args.warmup):
            batch()
        gc.collect()
        before = rss_mb()
        for _ in range(args.batches):
            batch()
        gc.collect()
        after = rss_mb()
        print(f"| {name} | {'test_vit' if name == 'rollout' else 'small CNN'} | {before:.1f} | {after:.1f} | "
              f"{after - before:+.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["speed", "memory"], default="speed")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--mem-size", type=int, default=32, help="input size of the memory run")
    parser.add_argument("--methods", default=",".join(NEW))
    parser.add_argument("--output-stride", type=int, default=32,
                        help="timm output_stride (8: layer4 at 1/8, the WSOL backbones' resolution)")
    parser.add_argument("--kpca-full-eigh", action="store_true", help="KPCA-CAM as before issue 27 (full eigh)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    np.seterr(all="ignore")
    speed(args) if args.mode == "speed" else memory(args)


if __name__ == "__main__":
    main()

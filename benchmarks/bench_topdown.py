"""wsolctl.explain vs pytorch-grad-cam 1.5.7 (``pip install grad-cam==1.5.7``, the ``bench`` extra) on
the same model, layer, inputs and targets, in the same process.

    python benchmarks/bench_topdown.py                       # gradient family, resnet50 @ 224
    python benchmarks/bench_topdown.py --family score        # Score-CAM / Ablation-CAM, resnet18 @ 64
    python benchmarks/bench_topdown.py --family score --arch resnet50 --batches 8 --methods scorecam

Model: timm ``--arch`` (pretrained=False, seed 0, eval). Targets: each image's argmax class, so that
the maps are not trivially zero. Inputs: randn (seed 0); the batch-8 inputs start with the batch-1 one.
For each method: Pearson r between the two libraries' maps after bilinear resize to the input size and
min-max (per image, minimum over images), and images/s at batch 1 and 8 (median of ``--rounds``
interleaved rounds after one warm-up). The wsolctl time includes the same resize + min-max that
pytorch-grad-cam does, so both produce the same thing. Also: one Grad-CAM batch's cost as a ratio to
a plain forward + ``loss.backward()`` of the same batch.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def minmax_up(maps: torch.Tensor, size) -> np.ndarray:
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    flat = up.flatten(1)
    low, high = flat.min(1, keepdim=True)[0], flat.max(1, keepdim=True)[0]
    return ((flat - low) / (high - low).clamp_min(1e-7)).view_as(up).numpy()


def pearson_min(a: np.ndarray, b: np.ndarray) -> float:
    rs = []
    for x, y in zip(a, b):
        if x.std() == 0 or y.std() == 0:
            rs.append(1.0 if np.allclose(x, y, atol=1e-5) else float("nan"))
        else:
            rs.append(float(np.corrcoef(x.ravel(), y.ravel())[0, 1]))
    return min(rs)


def timed(fn, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--family", choices=["gradient", "score"], default="gradient")
    parser.add_argument("--arch", default=None, help="default: resnet50 (gradient), resnet18 (score)")
    parser.add_argument("--size", type=int, default=None, help="default: 224 (gradient), 64 (score)")
    parser.add_argument("--layer", default="layer4")
    parser.add_argument("--rounds", type=int, default=None, help="timed interleaved rounds; default 3 (gradient), 1 (score)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the family's methods")
    args = parser.parse_args()
    import timm
    from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from wsolctl.explain import cams

    torch.set_num_threads(args.threads)
    score = args.family == "score"
    args.rounds = args.rounds or (1 if score else 3)
    arch = args.arch or ("resnet18" if score else "resnet50")
    size = args.size or (64 if score else 224)
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=1000).eval()
    layer = model.get_submodule(args.layer)
    x_all = torch.randn(8, 3, size, size)
    methods = ({"scorecam": ScoreCAM, "ablationcam": AblationCAM} if score else
               {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM})
    if args.methods:
        methods = {name: methods[name] for name in args.methods.split(",")}
    print(f"arch={arch} size={size} layer={args.layer} threads={torch.get_num_threads()} torch={torch.__version__}")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        x = x_all[:batch]
        with torch.no_grad():
            targets = model(x).argmax(1)
            acts = {}
            h = layer.register_forward_hook(lambda m, i, o: acts.setdefault("a", o.clone()))
            model(x)
            h.remove()
        flat = acts["a"].flatten(2)
        constant = (flat.amax(2) == flat.amin(2)).float().mean().item()
        print(f"batch {batch}: targets {targets.tolist()}, layer {tuple(acts['a'].shape)}, "
              f"constant channels {100 * constant:.1f}%")
        pgc_targets = [ClassifierOutputTarget(int(t)) for t in targets]
        for name, cls in methods.items():
            extra = {"batch_size": 32} if name == "ablationcam" else {}
            def theirs():
                # hooks live only during the call, so they never slow down the other library's run
                obj = cls(model=model, target_layers=[layer], **extra)
                if name == "scorecam":
                    obj.batch_size = 16  # its default, stated
                try:
                    return obj(input_tensor=x, targets=pgc_targets)
                finally:
                    obj.activations_and_grads.release()

            def ours():
                return minmax_up(cams(model, x, targets, method=name, layer=layer), x.shape[-2:])

            a, b = ours(), theirs()  # warm-up + correctness
            r = pearson_min(a, b)
            diff = float(np.abs(a - b).max())
            t_ours, t_theirs = [], []
            for _ in range(args.rounds):
                t_ours.append(timed(ours, 1))
                t_theirs.append(timed(theirs, 1))
            to, tt = statistics.median(t_ours), statistics.median(t_theirs)
            rows.append((name, batch, r, diff, batch / to, batch / tt, tt / to))
            print(f"  {name:12s} b{batch}: r_min={r:.6f} max|d|={diff:.2e}  wsolctl {batch / to:8.2f} img/s  "
                  f"pgc {batch / tt:8.2f} img/s  speed-up {tt / to:.2f}x  "
                  f"(per round: {', '.join(f'{b_ / a_:.2f}x' for a_, b_ in zip(t_ours, t_theirs))})", flush=True)
        if not score:
            def fwd_bwd():
                model.zero_grad(set_to_none=True)
                logits = model(x)
                logits[torch.arange(batch), targets].sum().backward()

            def fwd():
                with torch.no_grad():
                    model(x)

            def ours_raw():
                cams(model, x, targets, method="gradcam", layer=layer)

            fwd_bwd(), ours_raw()
            tb, tg, tf = [], [], []
            for _ in range(args.rounds):
                tb.append(timed(fwd_bwd, 1))
                tg.append(timed(ours_raw, 1))
                tf.append(timed(fwd, 1))
            tb, tg, tf = (statistics.median(t) for t in (tb, tg, tf))
            model.zero_grad(set_to_none=True)
            print(f"  cost b{batch}: forward {tf:.3f}s, forward+backward {tb:.3f}s, wsolctl gradcam {tg:.3f}s "
                  f"→ gradcam / (forward+backward) = {tg / tb:.2f}x, / forward = {tg / tf:.2f}x", flush=True)
    print("\n| method | batch | r (min over images) | max abs diff | wsolctl img/s | pgc img/s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, batch, r, diff, so, st, sp in rows:
        print(f"| {name} | {batch} | {r:.6f} | {diff:.1e} | {so:.2f} | {st:.2f} | {sp:.2f}× |")


if __name__ == "__main__":
    main()

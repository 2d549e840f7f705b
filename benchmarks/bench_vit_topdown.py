"""wsolctl.explain on a vision transformer vs pytorch-grad-cam 1.5.7 with its ``reshape_transform``
(the ``bench`` extra), on the same timm ViT, layer, inputs and targets, in the same process.

    python benchmarks/bench_vit_topdown.py                    # ViT-S/16 @ 224, blocks.11.norm1
    python benchmarks/bench_vit_topdown.py --device cuda

Model: timm ``--arch`` (pretrained=False, seed 0, eval), a plain classifier (class-token pooling).
Layer: the last block's ``norm1`` (wsolctl's default for token models; pytorch-grad-cam's documented
choice). pytorch-grad-cam gets the ``reshape_transform`` of its ViT tutorial (drop the class token,
lay the 14×14 patch tokens out as a map); wsolctl needs none. Targets: each image's argmax class.
Agreement: Pearson r per image (minimum reported) after bilinear resize to the input and min-max, as
in bench_topdown.py. Cost: one Grad-CAM batch (the raw maps) as a ratio to a plain forward +
``loss.backward()`` of the same batch, median of ``--rounds`` interleaved rounds after a warm-up.
"""
from __future__ import annotations

import argparse
import statistics

import torch
from bench_topdown import minmax_up, pearson_min, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="vit_small_patch16_224")
    parser.add_argument("--layer", default=None, help="default: the last block's norm1")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", default="gradcam,layercam,gradcampp,xgradcam",
                        help="compared with pytorch-grad-cam (empty: only the cost)")
    args = parser.parse_args()
    import timm
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, XGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from wsolctl.explain import cams

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = timm.create_model(args.arch, pretrained=False).eval().to(device)
    layer_name = args.layer or f"blocks.{len(model.blocks) - 1}.norm1"
    layer = model.get_submodule(layer_name)
    size = model.pretrained_cfg["input_size"][-1]
    x = torch.randn(args.batch, 3, size, size).to(device)
    grid = model.patch_embed.grid_size
    with torch.no_grad():
        targets = model(x).argmax(1)
    print(f"arch={args.arch} size={size} layer={layer_name} batch={args.batch} device={device} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")

    def reshape_transform(tokens):  # pytorch-grad-cam's ViT tutorial
        maps = tokens[:, model.num_prefix_tokens:].reshape(tokens.size(0), *grid, tokens.size(2))
        return maps.permute(0, 3, 1, 2)

    pgc_targets = [ClassifierOutputTarget(int(t)) for t in targets]
    print("\n| method | r (min over images) | max abs diff | wsolctl img/s | pgc img/s | speed-up |")
    print("|---|---|---|---|---|---|")
    classes = {"gradcam": GradCAM, "layercam": LayerCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM}
    for name in filter(None, args.methods.split(",")):
        cls = classes[name]
        def theirs():
            obj = cls(model=model, target_layers=[layer], reshape_transform=reshape_transform)
            try:
                return obj(input_tensor=x, targets=pgc_targets)
            finally:
                obj.activations_and_grads.release()

        def ours():
            return minmax_up(cams(model, x, targets, method=name, layer=layer_name).cpu(), x.shape[-2:])

        a, b = ours(), theirs()
        r, diff = pearson_min(a, b), float(abs(a - b).max())
        t_ours, t_theirs = [], []
        for _ in range(args.rounds):
            t_ours.append(timed(ours, 1))
            t_theirs.append(timed(theirs, 1))
        to, tt = statistics.median(t_ours), statistics.median(t_theirs)
        print(f"| {name} | {r:.6f} | {diff:.1e} | {args.batch / to:.2f} | {args.batch / tt:.2f} | {tt / to:.2f}× |",
              flush=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(x)[torch.arange(len(x)), targets].sum().backward()
        sync()

    def gradcam():
        cams(model, x, targets, method="gradcam", layer=layer_name)
        sync()

    fwd_bwd(), gradcam()
    tb, tg = [], []
    for _ in range(args.rounds):
        tb.append(timed(fwd_bwd, 1))
        tg.append(timed(gradcam, 1))
    tb, tg = statistics.median(tb), statistics.median(tg)
    print(f"\ncost: forward+backward {tb:.4f}s, wsolctl gradcam {tg:.4f}s → gradcam / (forward+backward) = "
          f"{tg / tb:.2f}× (target ≤ 1.2×)")


if __name__ == "__main__":
    main()

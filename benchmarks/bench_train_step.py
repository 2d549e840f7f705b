"""One wsolctl training step vs a bare timm forward/backward/SGD loop on the same model and batch.

    python benchmarks/bench_train_step.py [--backbone resnet18-wsol] [--size 224] [--batch 8] [--steps 10]

Both sides train the same module (the backbone plus CAM's GAP + linear head) with the same SGD
settings; the wsolctl side goes through ``WSOLModel.forward`` → ``method.loss`` →
``engine.train.train_step`` (GradScaler disabled on CPU, as in the engine). Rounds alternate so
that machine noise hits both; the median step time of each is compared. Target: ≤ 1.10×.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from timing import timed

from wsolctl import plugins
from wsolctl.engine.model import WSOLModel
from wsolctl.engine.train import train_step
from wsolctl.methods.base import Batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="resnet18-wsol")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    backbone = plugins.load("backbones", args.backbone)()
    method = plugins.load("methods", "cam")()
    model = WSOLModel(backbone.build(False), method, 2, backbone.info()).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, 2, (args.batch,), device=device)

    def bare() -> None:
        logits = model.head(model.backbone(images).mean(dim=(2, 3)))
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()

    def engine() -> None:
        train_step(model, Batch(images, labels), optimizer, scaler, use_amp=False)

    for _ in range(2):  # warm-up
        bare(), engine()
    times = {"bare": [], "engine": []}
    for _ in range(args.steps):
        times["bare"].append(timed(bare, device))
        times["engine"].append(timed(engine, device))
    b, e = statistics.median(times["bare"]), statistics.median(times["engine"])
    print(f"device={device} threads={torch.get_num_threads()} backbone={args.backbone} batch={args.batch} size={args.size}")
    print(f"bare timm step   : {b * 1000:8.1f} ms (median of {args.steps})")
    print(f"wsolctl step     : {e * 1000:8.1f} ms (median of {args.steps})")
    print(f"overhead ratio   : {e / b:.3f}x (target <= 1.10)")


if __name__ == "__main__":
    main()

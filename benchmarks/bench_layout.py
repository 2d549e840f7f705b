"""Forward throughput of a timm model in NCHW vs channels-last layout, as Score-CAM runs its masked
batches (``torch.inference_mode``, ``chunk_size`` images per forward).

    python benchmarks/bench_layout.py                        # resnet50 @ 64, batches 16 and 32

Interleaved rounds after one warm-up; prints the median images/s of each layout (wall clock and
process CPU time, the latter less sensitive to other jobs on a shared machine) and their ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batches", default="16,32")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import timm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.arch, pretrained=False, num_classes=1000).eval()
    print(f"arch={args.arch} size={args.size} threads={torch.get_num_threads()} torch={torch.__version__}")
    print("| batch | NCHW img/s (wall / cpu) | channels-last img/s (wall / cpu) | ratio (wall / cpu) |")
    print("|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        x = torch.randn(batch, 3, args.size, args.size)
        inputs = {"nchw": x, "cl": x.contiguous(memory_format=torch.channels_last)}
        times = {k: ([], []) for k in inputs}
        with torch.inference_mode():
            for value in inputs.values():
                model(value)
            for _ in range(args.rounds):
                for key, value in inputs.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    model(value)
                    times[key][0].append(time.perf_counter() - wall)
                    times[key][1].append(time.process_time() - cpu)
        rate = {k: [batch / statistics.median(t) for t in v] for k, v in times.items()}
        print(f"| {batch} | {rate['nchw'][0]:.1f} / {rate['nchw'][1]:.1f} | {rate['cl'][0]:.1f} / {rate['cl'][1]:.1f} "
              f"| {rate['cl'][0] / rate['nchw'][0]:.2f}× / {rate['cl'][1] / rate['nchw'][1]:.2f}× |", flush=True)


if __name__ == "__main__":
    main()

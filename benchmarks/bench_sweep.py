"""Sweep scale-out: N tiny runs sequentially vs on 2 local workers vs on a local Ray, and the
scheduling overhead per run of each executor.

    python benchmarks/bench_sweep.py [--runs 6] [--epochs 1]

All three train the same runs (a grid over train.lr on the tiny synthetic recipe) with one torch
thread per run, into fresh output directories. "Overhead per run" = (executor wall time − summed
in-run training time reported by the runs) / runs: process start-up, data loading in workers,
imports, scheduling.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl

from wsolctl import pipeline

RECIPE = """
name: bench-sweep
seed: 0
device: cpu
image_size: 48
dataset:
  name: synthetic-glas
  root: {root}
  params: {{size: 64, train_per_class: 8, test_per_class: 3, folds: 1, valpx_per_class: 1}}
backbones: [{{name: resnet18-wsol}}]
methods: [{{name: cam}}]
train: {{epochs: {epochs}, batch_size: 4}}
evaluation: {{thresholds: 100}}
sweep:
  grid: {{train.lr: {lrs}}}
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    lrs = json.dumps([round(0.001 * (i + 1), 6) for i in range(args.runs)])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recipe = tmp / "sweep.yaml"
        recipe.write_text(RECIPE.format(root=tmp / "data", epochs=args.epochs, lrs=lrs))
        pipeline.train(recipe, tmp / "warm", ["sweep.grid={train.lr: [0.5]}"], quiet=True)  # data + imports
        times = {}
        for name, overrides in (("sequential", []), ("local x2", ["executor.workers=2"]),
                                ("ray x2", ["executor.name=ray", "executor.cpus_per_run=1"])):
            start = time.perf_counter()
            out = pipeline.train(recipe, tmp / name.replace(" ", ""), overrides + ["executor.threads=1"], quiet=True)
            wall = time.perf_counter() - start
            inside = pl.read_parquet(out / "runs.parquet")["duration_s"].sum()
            times[name] = wall
            print(f"{name:11s}: {wall:6.1f} s wall for {args.runs} runs; in-run time {inside:6.1f} s; "
                  f"overhead/run {(wall - inside / (1 if name == 'sequential' else 2)) / args.runs:5.2f} s")
        for name in ("local x2", "ray x2"):
            print(f"scaling {name} vs sequential: {times['sequential'] / times[name]:.2f}x (ideal 2.00x on 2 cores)")


if __name__ == "__main__":
    main()

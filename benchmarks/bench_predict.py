"""``wsolctl predict``: tiles/s against the model's bare forward, and peak RSS against slide size.

    python benchmarks/bench_predict.py throughput [--side 4096] [--size 224] [--tile 256] [--batch 16]
    python benchmarks/bench_predict.py memory [--side 4096] [--size 224] [--tile 256]

throughput: a synthetic JPEG slide, CAM on ResNet-18 trained for one epoch (weights do not matter for
speed). The reference is the bare forward the map needs (``TileScorer``: upload, normalise, forward,
class maps) on the same tissue tiles held in memory; it is compared with ``predict`` end to end on
the slide file (tissue detection, reading and decoding, stitching, heatmap TIFF, regions, overlay).
Both in this process, same threads, same batch size; the best of ``--repeat`` runs each.

memory: ``predict`` in a fresh subprocess on a slide of side ``--side`` and on one of side
``2·side`` (4× the area, 4× the tiles); prints each process's peak RSS (ru_maxrss) and the ratio.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from slides import tiny_study, write_slide  # noqa: E402


def _slide(folder: Path, side: int) -> Path:
    path = folder / f"slide-{side}.tif"
    if not path.is_file():
        r = side / 10
        write_slide(path, side, side, [(side * 0.35, side * 0.35, r), (side * 0.68, side * 0.62, 0.75 * r)])
    return path


def throughput(args) -> None:
    import numpy as np
    import torch

    from wsolctl.predict import PredictOptions, TileScorer, load_selected, predict
    from wsolctl.predict.heatmap import heatmap_downsample
    from wsolctl.predict.tiles import Grid, Tissue, read_tile, tissue_tiles
    from wsolctl.wsi.slide import Slide

    folder = Path(args.work)
    study = tiny_study(folder, args.size)
    path = _slide(folder, args.side)
    options = PredictOptions(tile_size=args.tile, batch_size=args.batch, device="cpu", readers=args.readers)
    loaded = load_selected(study, device="cpu")
    scorer = TileScorer(loaded, 1)
    slide = Slide(path)
    grid = Grid.of(args.tile, 0, 0.0)
    tissue = Tissue.detect(slide, options.tissue_downsample)
    origins = tissue_tiles(slide, grid, tissue, options.min_tissue)
    cells = round(grid.footprint / heatmap_downsample(grid.footprint, scorer.map_side))
    tiles = np.stack([read_tile(slide, grid, tissue, x, y, args.tile, loaded.image_size, cells).pixels for x, y in origins])
    bare, end_to_end = [], []
    for repeat in range(args.repeat):
        began = time.perf_counter()
        for start in range(0, len(tiles), args.batch):
            scorer(tiles[start: start + args.batch])
        bare.append(len(tiles) / (time.perf_counter() - began))
        out = Path(tempfile.mkdtemp(dir=folder))
        began = time.perf_counter()
        result = predict(study, [path], out, options, quiet=True)
        end_to_end.append(result.rows[0]["tiles"] / (time.perf_counter() - began))
        assert result.rows[0]["status"] == "ok", result.rows[0]["error"]
    print(f"slide {args.side}² · {len(tiles)} tissue tiles of {args.tile}² → {loaded.image_size}² · batch {args.batch} · "
          f"torch threads {torch.get_num_threads()} · readers {args.readers}")
    print(f"bare forward (TileScorer on tiles in memory): {max(bare):.1f} tiles/s   runs: {[round(v, 1) for v in bare]}")
    print(f"predict end to end (file → outputs):         {max(end_to_end):.1f} tiles/s   runs: {[round(v, 1) for v in end_to_end]}")
    print(f"ratio predict / bare: {max(end_to_end) / max(bare):.2f}")


CHILD = """
import json, resource, sys
from pathlib import Path
from wsolctl.predict import PredictOptions, predict
study, slide, out, tile = sys.argv[1:5]
result = predict(Path(study), [Path(slide)], Path(out), PredictOptions(tile_size=int(tile), device="cpu"), quiet=True)
row = result.rows[0]
print(json.dumps({"maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "tiles": row["tiles"],
                  "status": row["status"], "error": row["error"], "duration_s": row["duration_s"]}))
"""


def memory(args) -> None:
    folder = Path(args.work)
    study = tiny_study(folder, args.size)
    measured = {}
    for side in (args.side, 2 * args.side):
        path = _slide(folder, side)
        out = tempfile.mkdtemp(dir=folder)
        done = subprocess.run([sys.executable, "-c", CHILD, str(study), str(path), out, str(args.tile)],
                              capture_output=True, text=True, check=True)
        measured[side] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"slide {side}² ({path.stat().st_size / 2**20:.0f} MiB on disk): {measured[side]}")
    small, large = measured[args.side], measured[2 * args.side]
    print(f"tiles ×{large['tiles'] / small['tiles']:.2f}, peak RSS ×{large['maxrss_mib'] / small['maxrss_mib']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["throughput", "memory"])
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--size", type=int, default=224, help="model input side")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "wsolctl-bench-predict"))
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    throughput(args) if args.mode == "throughput" else memory(args)
    print(f"this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()

"""``wsolctl sample camelyon16 --workers N`` against one worker on the same multi-slide input.

    python benchmarks/bench_sample.py [--slides 8] [--side 4096] [--patch 256] [--workers 2] [--executor local]

Writes ``--slides`` synthetic JPEG slides (half tumour with an ASAP XML of two round tumours, half
normal), samples them with one worker and with ``--workers`` into fresh folders (no cache), checks
that the manifests are identical, and prints both wall times and the speed-up.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from slides import write_slide  # noqa: E402


def _inputs(folder: Path, count: int, side: int) -> tuple[Path, Path]:
    from wsolctl.wsi.annotations import asap_xml

    slides, xml = folder / f"slides-{count}-{side}", folder / f"xml-{count}-{side}"
    slides.mkdir(parents=True, exist_ok=True)
    xml.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        tumour = i % 2 == 0
        name = f"{'tumor' if tumour else 'normal'}_{i:03d}"
        shift = 0.05 * (i % 3)
        tumors = [(side * (0.35 + shift), side * 0.4, side / 9), (side * 0.65, side * (0.6 - shift), side / 12)]
        if not (slides / f"{name}.tif").is_file():
            write_slide(slides / f"{name}.tif", side, side, tumors if tumour else [])
        if tumour:
            circles = [[(cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 48, endpoint=False)]
                       for cx, cy, r in tumors]
            (xml / f"{name}.xml").write_text(asap_xml([("_0", c) for c in circles]))
    return slides, xml


def main() -> None:
    import polars as pl

    from wsolctl.data.camelyon import sample_camelyon16
    from wsolctl.wsi.camelyon16 import SamplingParams

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=8)
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor", default="local", choices=["local", "ray"])
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "wsolctl-bench-sample"))
    args = parser.parse_args()
    folder = Path(args.work)
    slides, xml = _inputs(folder, args.slides, args.side)
    params = SamplingParams(patch_size=args.patch, pn=0.2, folds=2)
    times = {}
    for workers, executor in ((1, "local"), (args.workers, args.executor)):
        out = Path(tempfile.mkdtemp(dir=folder))
        began = time.perf_counter()
        stamp = sample_camelyon16(slides, xml, out, None, params, quiet=True, workers=workers, executor=executor)
        times[workers] = (time.perf_counter() - began, pl.read_parquet(out / "manifest.parquet"))
        print(f"workers {workers} ({executor}): {times[workers][0]:.1f} s, counts {stamp['counts']}")
    same = times[1][1].equals(times[args.workers][1])
    print(f"{args.slides} slides of {args.side}², patches {args.patch}: manifest identical: {same}; "
          f"speed-up ×{times[1][0] / times[args.workers][0]:.2f}")


if __name__ == "__main__":
    main()

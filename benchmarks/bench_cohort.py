"""``wsolctl sample slides`` against today's ``sample camelyon16`` on the same slides (one worker each).

    python benchmarks/bench_cohort.py [--slides 4] [--side 4096] [--patch 256]

Writes the synthetic JPEG slides of bench_sample.py (half tumour with an ASAP XML of two round
tumours, half normal, 0.25 µm/px) and a manifest of them, samples both ways into fresh folders (no
cache) at the slides' own resolution, and prints each sampler's wall time, patches written and time
per patch, and the ratio cohort / CAMELYON16 of the time per patch (target: ≤ 1.2). The cohort
sampler also runs at ``--mpp 0.5`` (half the level-0 pixels per patch read, resampled).
Both keep every tumour cell with ≥ 20 % tumour (CAMELYON16 with ``p1 = 1``: no calibration); CAMELYON16
then draws as many normal patches as tumour ones, the cohort sampler keeps every tissue cell of the
normal slides, hence the comparison per written patch.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_sample import _inputs  # noqa: E402


def main() -> None:
    from wsolctl.data.camelyon import sample_camelyon16
    from wsolctl.data.cohort import sample_cohort
    from wsolctl.wsi.camelyon16 import SamplingParams
    from wsolctl.wsi.cohort import CohortParams

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--side", type=int, default=4096)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "wsolctl-bench-sample"))
    args = parser.parse_args()
    folder = Path(args.work)
    slides, xml = _inputs(folder, args.slides, args.side)
    manifest = folder / f"manifest-{args.slides}-{args.side}.csv"
    lines = ["slide,label,annotations,patient"]
    for path in sorted(slides.glob("*.tif")):
        tumour = path.stem.startswith("tumor")
        annotations = f"{xml.name}/{path.stem}.xml" if tumour else ""
        lines.append(f"{slides.name}/{path.name},{'tumor' if tumour else 'normal'},{annotations},{path.stem}")
    manifest.write_text("\n".join(lines) + "\n")

    def timed(label, call, count):
        out = Path(tempfile.mkdtemp(dir=folder))
        began = time.perf_counter()
        stamp = call(out)
        seconds = time.perf_counter() - began
        n = count(stamp)
        print(f"{label}: {seconds:.1f} s, {n} patches, {1000 * seconds / n:.1f} ms/patch")
        return seconds / n

    camelyon = timed("sample camelyon16", lambda out: sample_camelyon16(
        slides, xml, out, None, SamplingParams(patch_size=args.patch, p1=1.0, folds=2), quiet=True),
        lambda s: sum(sum(c.values()) for c in s["counts"].values()))
    native = timed("sample slides (native mpp)", lambda out: sample_cohort(
        manifest, out, CohortParams(patch_size=args.patch, folds=2), quiet=True),
        lambda s: sum(s["counts"].values()))
    coarse = timed("sample slides --mpp 0.5", lambda out: sample_cohort(
        manifest, out, CohortParams(patch_size=args.patch, mpp=0.5, folds=2), quiet=True),
        lambda s: sum(s["counts"].values()))
    print(f"{args.slides} slides of {args.side}², patches {args.patch}: time per patch, sample slides / "
          f"sample camelyon16: ×{native / camelyon:.2f} (native mpp), ×{coarse / camelyon:.2f} (--mpp 0.5)")


if __name__ == "__main__":
    main()

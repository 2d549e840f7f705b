"""LocalizationMeter vs the straightforward per-image ``np.histogram`` implementation of PxAP.

    python benchmarks/bench_meter.py [--images 500] [--size 224] [--threads 1] [--noise]

Both consume the same float32 CAMs and masks, generated in chunks (so the process never holds the
whole split); they are timed on the same chunks in the same run. Also prints the meter's state
size and the process peak RSS after the first 100 and after all images, to show that memory does
not grow with the number of images. ``ReferenceMeter`` is also what tests/test_metrics.py checks
the meter against.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from wsolctl.metrics import LocalizationMeter, prepare_cams


class ReferenceMeter:
    """wsolevaluation's MaskEvaluator accumulation and PxAP, re-derived: one np.histogram per image."""

    def __init__(self, n_thresholds: int = 1000):
        thresholds = np.arange(0, 1, 1 / n_thresholds)[:n_thresholds]
        self.edges = np.concatenate([thresholds, [1.0, 2.0, 3.0]])
        self.fg = np.zeros(len(self.edges) - 1, dtype=np.int64)
        self.bg = np.zeros(len(self.edges) - 1, dtype=np.int64)

    def update(self, cams: np.ndarray, masks: np.ndarray) -> None:
        for cam, mask in zip(cams, masks):
            self.fg += np.histogram(cam[mask], bins=self.edges)[0]
            self.bg += np.histogram(cam[~mask], bins=self.edges)[0]

    def pxap(self) -> float:
        tp, fp = self.fg[::-1].cumsum(), self.bg[::-1].cumsum()  # score >= 2, >= 1, ..., >= 0
        fn = self.fg.sum() - tp
        with np.errstate(invalid="ignore"):  # 0/0 where nothing is predicted; masked out below
            precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        keep = (tp + fp)[1:] != 0
        return float(100 * (precision[1:] * np.diff(recall))[keep].sum())


def synthetic_chunks(images: int, size: int, chunk: int, noise: bool = False, seed: int = 0):
    """(cams, masks) numpy batches: one disk of foreground per image.

    CAMs are CAM-like by default: a blob plus noise at 1/8 resolution, through ``prepare_cams``
    (min-max, bilinear upsampling), as the evaluation sees them; ``noise=True`` gives i.i.d.
    uniform scores instead.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    for start in range(0, images, chunk):
        count = min(chunk, images - start)
        cx, cy = rng.uniform(0.2, 0.8, (2, count, 1, 1))
        radius = rng.uniform(0.1, 0.3, (count, 1, 1))
        masks = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        if noise:
            cams = rng.random((count, size, size), dtype=np.float32)
        else:
            low = masks[:, ::8, ::8]
            low = low + rng.normal(0, 0.5, low.shape)
            cams = prepare_cams(torch.from_numpy(low), (size, size)).numpy()
        yield cams, masks


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--chunk", type=int, default=50, help="images per update() call")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: the reference is single-threaded numpy)")
    parser.add_argument("--noise", action="store_true", help="i.i.d. uniform scores instead of CAM-like maps")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    meter, reference = LocalizationMeter(), ReferenceMeter()
    meter.update(*map(torch.from_numpy, next(synthetic_chunks(2, args.size, 2))))  # warm-up
    meter.reset()
    t_meter = t_reference = 0.0
    seen, memory = 0, []
    for cams, masks in synthetic_chunks(args.images, args.size, args.chunk, args.noise):
        cams_t, masks_t = torch.from_numpy(cams), torch.from_numpy(masks)
        start = time.perf_counter()
        meter.update(cams_t, masks_t)
        t_meter += time.perf_counter() - start
        start = time.perf_counter()
        reference.update(cams, masks)
        t_reference += time.perf_counter() - start
        seen += len(cams)
        if (not memory and seen >= 100) or seen == args.images:
            memory.append((seen, meter.state_dict()["histogram"].nbytes, peak_rss_mib()))

    result = meter.compute()
    histogram = meter.state_dict()["histogram"].numpy()
    same_counts = np.array_equal(histogram[1], reference.fg) and np.array_equal(histogram[0], reference.bg)
    kind = "i.i.d. uniform" if args.noise else "CAM-like"
    print(f"{args.images} images of {args.size}x{args.size} {kind} float32 CAMs, CPU, torch threads = "
          f"{torch.get_num_threads()} (reference: numpy, single-threaded), {args.chunk} images per update")
    print(f"LocalizationMeter     : {args.images / t_meter:10.0f} images/s  ({t_meter:.3f} s)")
    print(f"per-image np.histogram: {args.images / t_reference:10.0f} images/s  ({t_reference:.3f} s)")
    print(f"speed-up              : {t_reference / t_meter:10.1f}x")
    print(f"PxAP meter = {result.pxap!r}, reference = {reference.pxap()!r}, identical: "
          f"{result.pxap == reference.pxap()}; histograms identical: {same_counts}")
    for images, state_bytes, rss in memory:
        print(f"after {images:5d} images: meter state {state_bytes} bytes, process peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()

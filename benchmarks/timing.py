"""Shared timing helper of the benchmark scripts (run as ``python benchmarks/<script>.py``)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call of ``fn``, waiting for queued CUDA work before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start

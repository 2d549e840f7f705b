"""Executors schedule training runs; the work itself is always :func:`run_task` (same code for
every executor), given a run directory whose ``spec.json`` says what to train. ``local`` runs in this process (workers = 1) or in a pool of spawned processes,
one device per worker; ``ray`` submits one task per run to a Ray cluster (optional dependency)."""
from __future__ import annotations

import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Optional

from wsolctl.engine.rundir import RunDir
from wsolctl.errors import InputError
from wsolctl.progress import Progress
from wsolctl.recipe.schema import Executor


def run_task(run_dir: Path, device_name: str, progress: Optional[Progress] = None, threads: Optional[int] = None) -> dict:
    """Train the run of ``run_dir`` (its ``spec.json``); never raises for a failing run: the failure
    is recorded and returned."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from wsolctl.engine.build import build_data, resolve_device
    from wsolctl.engine.train import train_run

    run = RunDir(run_dir)
    run_id = run.run_id
    run.clear_failure()
    began = time.perf_counter()
    try:
        spec = run.spec()
        device = resolve_device(device_name)
        data = build_data(spec, device)
        train_run(spec, data, run, device, progress or Progress(quiet=True))
        return {"run_id": run_id, "status": "done", "error": None, "duration_s": time.perf_counter() - began}
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # isolate: one bad run must not stop the others
        error = f"{type(exc).__name__}: {exc}"
        run.write_failure(error, traceback.format_exc())
        return {"run_id": run_id, "status": "failed", "error": error, "duration_s": time.perf_counter() - began}
    finally:
        if device_name.startswith("cuda"):
            torch.cuda.empty_cache()


def execute(tasks: list[Path], config: Executor, default_device: str, progress: Progress) -> list[dict]:
    """Run every task (a run directory holding its spec.json); returns one status dict per task (in order)."""
    if not tasks:
        return []
    if config.name == "ray":
        return _ray(tasks, config, default_device, progress)
    if config.workers == 1:
        return _sequential(tasks, config.devices[0] if config.devices else default_device, progress, config.threads)
    return _pool(tasks, config, default_device, progress)


class _Board:
    """One progress line for a sweep: done / running / failed / queued, with ETA."""

    def __init__(self, progress: Progress, total: int):
        self.task = progress.task("runs", total)
        self.counts = {"done": 0, "running": 0, "failed": 0, "queued": total}

    def update(self, started: int = 0, finished: Optional[str] = None) -> None:
        self.counts["queued"] -= started
        self.counts["running"] += started
        if finished:
            self.counts["running"] -= 1
            self.counts[finished] += 1
            self.task.advance()
        self.task.describe("runs: " + " · ".join(f"{k} {v}" for k, v in self.counts.items()))


def _sequential(tasks: list[Path], device: str, progress: Progress, threads: Optional[int]) -> list[dict]:
    import torch

    board, out, before = _Board(progress, len(tasks)), [], torch.get_num_threads()
    try:
        for task in tasks:
            board.update(started=1)
            out.append(run_task(task, device, progress, threads))
            board.update(finished=out[-1]["status"])
    finally:
        torch.set_num_threads(before)
    return out


_WORKER_DEVICE = "cpu"


def _init_worker(devices, threads: int) -> None:
    global _WORKER_DEVICE
    import torch

    _WORKER_DEVICE = devices.get()
    torch.set_num_threads(threads)


def _pool_task(task: Path) -> dict:
    return run_task(task, _WORKER_DEVICE)


def _pool(tasks: list[Path], config: Executor, default_device: str, progress: Progress) -> list[dict]:
    ctx = get_context("spawn")  # fork is unsafe with torch threads and CUDA
    devices = ctx.Manager().Queue()
    for i in range(config.workers):
        devices.put(config.devices[i % len(config.devices)] if config.devices else default_device)
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.workers)
    board = _Board(progress, len(tasks))
    results: dict[str, dict] = {}
    with ProcessPoolExecutor(config.workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(devices, threads)) as pool:
        pending = {}
        for task in tasks:
            pending[pool.submit(_pool_task, task)] = task
        board.update(started=min(config.workers, len(tasks)))
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                results[task.name] = _result_or_crash(future.result, task)
                board.update(started=1 if board.counts["queued"] else 0, finished=results[task.name]["status"])
    return [results[t.name] for t in tasks]


def _result_or_crash(get: Callable[[], dict], task: Path) -> dict:
    """A worker process that died (OOM killer, segfault) is a failed run, not a failed sweep."""
    try:
        return get()
    except Exception as exc:
        error = f"worker died: {type(exc).__name__}: {exc}"
        RunDir(task).write_failure(error)
        return {"run_id": task.name, "status": "failed", "error": error, "duration_s": None}


def _ray(tasks: list[Path], config: Executor, default_device: str, progress: Progress) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise InputError("executor 'ray' needs Ray: pip install 'wsolctl[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=config.address, include_dashboard=False, log_to_driver=False,
                 **({} if config.address else {"num_cpus": os.cpu_count()}))
    device = "cuda" if config.gpus_per_run > 0 else ("cpu" if default_device == "auto" else default_device)
    remote = ray.remote(num_cpus=config.cpus_per_run, num_gpus=config.gpus_per_run,
                        max_retries=config.retries)(run_task)
    board = _Board(progress, len(tasks))
    threads = config.threads or max(1, int(config.cpus_per_run))
    refs = {remote.remote(task, device, None, threads): task for task in tasks}
    board.update(started=len(tasks))  # Ray queues internally; "running" here means submitted
    results: dict[str, dict] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        task = refs[ready[0]]
        results[task.name] = _result_or_crash(lambda ref=ready[0]: ray.get(ref), task)
        board.update(finished=results[task.name]["status"])
    return [results[t.name] for t in tasks]

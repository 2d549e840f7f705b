"""Training runs on the executor stack (:mod:`wsolctl.executors`): the work itself is always
:func:`run_task` (same code for every executor), given a run directory whose ``spec.json`` says what
to train. Runs in this process share its progress display; worker processes are handed one device
each; a scheduler that places devices (Ray) gets runs that ask for ``cuda`` when they ask for GPUs."""
from __future__ import annotations

import os
import time
import traceback
from functools import partial
from pathlib import Path
from typing import Optional

from wsolctl.engine.rundir import RunDir
from wsolctl.executors import Resources, WorkerDied, WorkerPool, backend, threads_per_worker
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
    import torch

    kind = backend(config.name)
    initializer, initargs = None, ()
    if kind.in_process(config.workers):
        work = partial(run_task, device_name=config.devices[0] if config.devices else default_device,
                       progress=progress, threads=config.threads)
    elif kind.schedules_devices:
        device = "cuda" if config.gpus_per_run > 0 else ("cpu" if default_device == "auto" else default_device)
        work = partial(run_task, device_name=device, threads=config.threads or max(1, int(config.cpus_per_run)))
    else:  # one device per worker process
        initializer, initargs = _init_worker, (_device_queue(config, default_device),
                                               config.threads or threads_per_worker(config.workers))
        work = _pool_task
    resources = Resources(cpus=config.cpus_per_run, gpus=config.gpus_per_run, retries=config.retries,
                          address=config.address, local_cpus=os.cpu_count())
    pool = WorkerPool(config.workers, config.name, initializer, initargs, resources=resources)
    board, results, before = _Board(progress, len(tasks)), {}, torch.get_num_threads()
    board.update(started=pool.running_at_once(len(tasks)))
    try:
        with pool:
            for index, result in pool.map(work, tasks):
                results[index] = _failed(tasks[index], result) if isinstance(result, WorkerDied) else result
                board.update(started=1 if board.counts["queued"] else 0, finished=results[index]["status"])
    finally:
        torch.set_num_threads(before)
    return [results[i] for i in range(len(tasks))]


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


_WORKER_DEVICE = "cpu"


def _device_queue(config: Executor, default_device: str):
    """One device per worker process, each taken once by :func:`_init_worker`."""
    from multiprocessing import get_context

    devices = get_context("spawn").Manager().Queue()
    for i in range(config.workers):
        devices.put(config.devices[i % len(config.devices)] if config.devices else default_device)
    return devices


def _init_worker(devices, threads: int) -> None:
    global _WORKER_DEVICE
    import torch

    _WORKER_DEVICE = devices.get()
    torch.set_num_threads(threads)


def _pool_task(task: Path) -> dict:
    return run_task(task, _WORKER_DEVICE)


def _failed(task: Path, died: WorkerDied) -> dict:
    """A worker that died (OOM killer, segfault) is a failed run, not a failed sweep."""
    error = str(died)
    RunDir(task).write_failure(error)
    return {"run_id": task.name, "status": "failed", "error": error, "duration_s": None}

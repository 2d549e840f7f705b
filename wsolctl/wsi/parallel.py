"""Run one function over many slides: in this process, in a pool of spawned processes, or on Ray.

Results come back in completion order as ``(index, result)``; the function must be importable at
module level (it is pickled by reference). An exception it raises is raised here, as if it ran in
this process; a worker process that dies instead yields a ``WorkerDied`` result for its item.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Callable, Iterator, Optional, Sequence

EXECUTORS = ("local", "ray")


class WorkerDied(RuntimeError):
    """The process running an item died (killed, out of memory, crashed in native code)."""


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def parallel_map(fn: Callable[..., Any], items: Sequence[Any], workers: int = 1, executor: str = "local",
                 initializer: Optional[Callable[..., None]] = None, initargs: tuple = ()) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, fn(items[index]))`` as items finish. ``initializer(*initargs)`` runs once per
    worker process (and once here when ``workers == 1`` and the executor is local)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: choose from {', '.join(EXECUTORS)}")
    if executor == "ray":
        yield from _ray(fn, items, workers, initializer, initargs)
    elif workers <= 1 or len(items) <= 1:
        if initializer is not None:
            initializer(*initargs)
        for index, item in enumerate(items):
            yield index, fn(item)
    else:
        yield from _pool(fn, items, workers, initializer, initargs)


def _pool(fn, items, workers, initializer, initargs) -> Iterator[tuple[int, Any]]:
    ctx = get_context("spawn")  # fork is unsafe once torch threads, CUDA or large-image caches exist
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=ctx, initializer=initializer,
                             initargs=initargs) as pool:
        pending = {pool.submit(fn, item): index for index, item in enumerate(items)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as exc:  # killed, out of memory, crashed in native code
                    result = WorkerDied(f"worker died: {exc}")
                yield index, result


def _ray(fn, items, workers, initializer, initargs) -> Iterator[tuple[int, Any]]:
    try:
        import ray
    except ImportError:
        from wsolctl.errors import InputError

        raise InputError("executor 'ray' needs Ray: pip install 'wsolctl[ray]'") from None
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False, num_cpus=max(1, workers))

    def call(item):
        if initializer is not None:
            initializer(*initargs)  # idempotent initialisers: Ray reuses worker processes
        return fn(item)

    remote = ray.remote(num_cpus=1, max_retries=0)(call)
    refs = {remote.remote(item): index for index, item in enumerate(items)}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            result = ray.get(ready[0])
        except ray.exceptions.WorkerCrashedError as exc:
            result = WorkerDied(f"worker died: {exc}")
        except ray.exceptions.RayTaskError as exc:  # re-raise what the function raised
            raise exc.as_instanceof_cause() from None
        yield refs[ready[0]], result

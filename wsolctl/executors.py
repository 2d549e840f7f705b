"""Run one function over many slides: in this process, in a pool of spawned processes, or on Ray.

``SlidePool`` is a context manager; its processes (or Ray) start on the first parallel ``map`` and
serve every later one, so a job with several phases (the CAMELYON16 sampler) pays the start-up
once. ``map`` yields ``(index, result)`` in completion order; the function must be importable at
module level (it is pickled by reference). An exception it raises is raised here, as if it ran in
this process; a worker process that dies instead yields a :class:`WorkerDied` result for its item.
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


def fork_is_safe() -> bool:
    import sys
    from multiprocessing import get_all_start_methods

    return "fork" in get_all_start_methods() and "torch" not in sys.modules


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


class SlidePool:
    """``workers`` parallel slides with the ``local`` (process pool) or ``ray`` executor; one local
    worker runs everything in this process. ``initializer(*initargs)`` runs once per worker process
    (Ray: before every item, so it must be idempotent; once here for a single local worker).

    ``start_method``: ``spawn`` (default) is always safe; ``fork`` starts workers in milliseconds and
    is what :func:`fork_is_safe` allows: torch (its thread pools, CUDA) not imported, and workers
    started with :meth:`start` before this process runs other threads (e.g. a progress display)."""

    def __init__(self, workers: int = 1, executor: str = "local", initializer: Optional[Callable[..., None]] = None,
                 initargs: tuple = (), start_method: str = "spawn"):
        if executor not in EXECUTORS:
            raise ValueError(f"executor {executor!r}: choose from {', '.join(EXECUTORS)}")
        self.workers, self.executor, self.start_method = max(1, workers), executor, start_method
        self.initializer, self.initargs = initializer, initargs
        self._pool: Optional[ProcessPoolExecutor] = None
        self._initialised = False

    @property
    def sequential(self) -> bool:
        return self.executor == "local" and self.workers == 1

    def __enter__(self) -> "SlidePool":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def start(self) -> "SlidePool":
        """Start the local worker processes now (e.g. before any other thread exists, for ``fork``)."""
        if self.executor == "local" and not self.sequential and self._pool is None:
            ctx = get_context(self.start_method)
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=self.initializer,
                                             initargs=self.initargs)
            for future in [self._pool.submit(os.getpid) for _ in range(self.workers)]:
                future.result()
        return self

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if not items:
            return
        if self.executor == "ray":
            yield from self._ray(fn, items)
        elif self.sequential:
            if self.initializer is not None and not self._initialised:
                self.initializer(*self.initargs)
                self._initialised = True
            for index, item in enumerate(items):
                yield index, fn(item)
        else:
            yield from self._local(fn, items)

    def _local(self, fn, items) -> Iterator[tuple[int, Any]]:
        self.start()
        pending = {self._pool.submit(fn, item): index for index, item in enumerate(items)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as exc:  # killed, out of memory, crashed in native code
                    result = WorkerDied(f"worker died: {exc}")
                yield index, result

    def _ray(self, fn, items) -> Iterator[tuple[int, Any]]:
        try:
            import ray
        except ImportError:
            from wsolctl.errors import InputError

            raise InputError("executor 'ray' needs Ray: pip install 'wsolctl[ray]'") from None
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False, num_cpus=self.workers)
        initializer, initargs = self.initializer, self.initargs

        def call(item):
            if initializer is not None:
                initializer(*initargs)
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

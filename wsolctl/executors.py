"""The one executor stack: run one function over many items in this process, in a pool of spawned
(or forked) processes, or as Ray tasks. Training runs (``engine.executors``), slide sampling
(``wsi.slidejobs``) and prediction (``predict.run``) all map their work over a :class:`WorkerPool`.

An executor is a declared class (:data:`EXECUTORS`, looked up by the name a recipe or ``--executor``
gives); code above chooses by what the class declares, never by its name. The pool is a context
manager; its processes (or Ray) start on the first parallel ``map`` and serve every later one, so a
job with several phases (the CAMELYON16 sampler) pays the start-up once. ``map`` yields
``(index, result)`` in completion order; the function must be importable at module level (it is
pickled by reference). An exception it raises is raised here, as if it ran in this process; a worker
that dies instead yields a :class:`WorkerDied` result for its item.
"""
from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, Callable, ClassVar, Iterator, Literal, Optional, Sequence


class WorkerDied(RuntimeError):
    """The process running an item died (killed, out of memory, crashed in native code)."""


def fork_is_safe() -> bool:
    import sys
    from multiprocessing import get_all_start_methods

    return "fork" in get_all_start_methods() and "torch" not in sys.modules


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@dataclass(frozen=True)
class Resources:
    """What each item asks of a cluster scheduler (Ray), and where that cluster is: ``address`` none
    starts a local one with ``local_cpus`` CPUs (default: the pool's workers)."""

    cpus: float = 1.0
    gpus: float = 0.0
    retries: int = 0
    address: Optional[str] = None
    local_cpus: Optional[int] = None


class Backend:
    """One way to run items. ``in_process`` (for this many workers): items run here, one after
    another; ``schedules_devices``: the scheduler gives each item its devices (an item asks for
    ``cuda``), instead of each worker process being handed one; ``submits_all``: every item is
    submitted at once (the scheduler queues them) rather than ``workers`` at a time."""

    name: ClassVar[str]
    schedules_devices: ClassVar[bool] = False
    submits_all: ClassVar[bool] = False

    def __init__(self, pool: "WorkerPool"):
        self.pool = pool

    @classmethod
    def in_process(cls, workers: int) -> bool:
        return False

    def start(self) -> None:
        """Start workers now (before other threads exist, for ``fork``); a no-op where nothing starts."""

    def close(self) -> None:
        """Stop the workers started."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        raise NotImplementedError


class Local(Backend):
    """This process for one worker; else a pool of ``workers`` processes on this machine."""

    name = "local"

    def __init__(self, pool: "WorkerPool"):
        super().__init__(pool)
        self._processes: Optional[ProcessPoolExecutor] = None
        self._initialised = False

    @classmethod
    def in_process(cls, workers: int) -> bool:
        return workers == 1

    def start(self) -> None:
        pool = self.pool
        if not pool.sequential and self._processes is None:
            ctx = get_context(pool.start_method)
            self._processes = ProcessPoolExecutor(pool.workers, mp_context=ctx, initializer=pool.initializer,
                                                  initargs=pool.initargs)
            for future in [self._processes.submit(os.getpid) for _ in range(pool.workers)]:
                future.result()

    def close(self) -> None:
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=True)
            self._processes = None

    def map(self, fn, items) -> Iterator[tuple[int, Any]]:
        pool = self.pool
        if pool.sequential:
            if pool.initializer is not None and not self._initialised:
                pool.initializer(*pool.initargs)
                self._initialised = True
            for index, item in enumerate(items):
                yield index, fn(item)
            return
        self.start()
        pending = {self._processes.submit(fn, item): index for index, item in enumerate(items)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as exc:  # killed, out of memory, crashed in native code
                    result = WorkerDied(f"worker died: {exc}")
                yield index, result


class Ray(Backend):
    """One Ray task per item (optional dependency), each asking for :class:`Resources`; the
    initializer runs before every item (so it must be idempotent)."""

    name = "ray"
    schedules_devices = True
    submits_all = True

    def map(self, fn, items) -> Iterator[tuple[int, Any]]:
        try:
            import ray
        except ImportError:
            from wsolctl.errors import InputError

            raise InputError("executor 'ray' needs Ray: pip install 'wsolctl[ray]'") from None
        pool, res = self.pool, self.pool.resources
        if not ray.is_initialized():
            ray.init(address=res.address, include_dashboard=False, log_to_driver=False,
                     **({} if res.address else {"num_cpus": res.local_cpus or pool.workers}))
        initializer, initargs = pool.initializer, pool.initargs

        def call(item):
            if initializer is not None:
                initializer(*initargs)
            return fn(item)

        remote = ray.remote(num_cpus=res.cpus, num_gpus=res.gpus, max_retries=res.retries)(call)
        refs = {remote.remote(item): index for index, item in enumerate(items)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(ready[0])
            except ray.exceptions.RayTaskError as exc:  # re-raise what the function raised
                raise exc.as_instanceof_cause() from None
            except ray.exceptions.RayError as exc:  # the worker crashed, ran out of memory, lost its node
                result = WorkerDied(f"worker died: {exc}")
            yield refs[ready[0]], result


EXECUTORS: dict[str, type[Backend]] = {cls.name: cls for cls in (Local, Ray)}
ExecutorName = Literal[tuple(EXECUTORS)]  # type: ignore[valid-type]  (the recipe's and CLI's choices)


def backend(name: str) -> type[Backend]:
    """The executor declared under ``name``."""
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ValueError(f"executor {name!r}: choose from {', '.join(EXECUTORS)}") from None


class WorkerPool:
    """``workers`` items at a time with the executor named ``executor``. ``initializer(*initargs)``
    runs once per worker process (Ray: before every item, so it must be idempotent; once here when
    the items run in this process).

    ``start_method``: ``spawn`` (default) is always safe; ``fork`` starts workers in milliseconds and
    is what :func:`fork_is_safe` allows: torch (its thread pools, CUDA) not imported, and workers
    started with :meth:`start` before this process runs other threads (e.g. a progress display)."""

    def __init__(self, workers: int = 1, executor: str = "local", initializer: Optional[Callable[..., None]] = None,
                 initargs: tuple = (), start_method: str = "spawn", resources: Resources = Resources()):
        self.kind = backend(executor)
        self.workers, self.start_method, self.resources = max(1, workers), start_method, resources
        self.initializer, self.initargs = initializer, initargs
        self._backend = self.kind(self)

    @property
    def sequential(self) -> bool:
        """Items run in this process, one after another (they may share its progress display)."""
        return self.kind.in_process(self.workers)

    def running_at_once(self, items: int) -> int:
        """How many of ``items`` are under way as soon as they are submitted."""
        return items if self.kind.submits_all else min(1 if self.sequential else self.workers, items)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self._backend.close()

    def start(self) -> "WorkerPool":
        """Start the worker processes now (e.g. before any other thread exists, for ``fork``)."""
        self._backend.start()
        return self

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if items:
            yield from self._backend.map(fn, items)

"""Per-slide jobs shared by the slide samplers (any cohort, CAMELYON16): a cache of each slide's
result under ``out/.cache`` and a runner that maps a per-slide function over a :class:`~wsolctl.executors.WorkerPool`,
results in input order. A rerun finds finished slides in the cache, so sampling resumes per slide."""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any, Optional

from wsolctl.executors import WorkerDied, WorkerPool


class SlideCache:
    """Per-slide JSON results under ``out/.cache``, valid only for the same key."""

    def __init__(self, out: Path):
        self.dir = out / ".cache"

    def get(self, kind: str, slide: str, key: str) -> Optional[dict]:
        path = self.dir / f"{kind}-{slide}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError:
                return None
            if data.get("key") == key:
                return data
        return None

    def put(self, kind: str, slide: str, key: str, data: dict) -> None:
        from wsolctl.io import write_json

        write_json(self.dir / f"{kind}-{slide}.json", {"key": key, **data})


class SlideRunner:
    """Calls a per-slide function ``fn(*job, params, cache, progress)`` over many slides, in this
    process (with nested progress bars) or in the pool's workers (one bar: slides done); results in
    order. A worker that dies (e.g. a crash in a slide reader's native code) stops the run, naming the
    slide (the job's first element's ``.name``), or with ``deaths_fail_alone`` gives that slide the
    result ``{"error": ...}`` and the others go on."""

    def __init__(self, out: Path, params: Any, progress, pool: WorkerPool, deaths_fail_alone: bool = False):
        self.out, self.p, self.progress, self.pool = out, params, progress, pool
        self.deaths_fail_alone = deaths_fail_alone

    def __call__(self, fn, jobs: list[tuple], bar=None) -> list:
        call = partial(_call, fn, self.p, self.out, self.progress if self.pool.sequential else None)
        results: list = [None] * len(jobs)
        for index, result in self.pool.map(call, jobs):
            if isinstance(result, WorkerDied):
                if not self.deaths_fail_alone:
                    raise RuntimeError(f"{jobs[index][0].name}: {result}")
                result = {"error": f"a worker process died (reading this slide or one beside it; a rerun retries "
                                   f"it): {result}"}
            results[index] = result
            if bar is not None:
                bar.advance()
        return results


def _call(fn, params: Any, out: Path, progress, job: tuple):
    from wsolctl.progress import Progress

    return fn(*job, params, SlideCache(out), progress or Progress(quiet=True))


def finished_stamp(stamp: Path, table: Path, identity: dict) -> Optional[dict]:
    """The stamp of a finished run with this identity (its keys and values), when it and its table
    exist, else None: a sampler that finds it has nothing to do."""
    if not (stamp.is_file() and table.is_file()):
        return None
    try:
        data = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return None
    return data if {k: data.get(k) for k in identity} == identity else None

"""Atomic file writes: write to a temporary sibling, then rename, so a crash never leaves a
half-written file behind and a rerun can trust whatever exists.

Modes follow the user's umask like any ``open`` / ``mkdir`` (0644 files, 0755 folders under umask
022): ``tempfile`` creates its files 0600 and its folders 0700 whatever the umask, so they are
chmod-ed before they take their final name."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask (read by setting and restoring it; the lock keeps threads consistent)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def follow_umask(path: Path, directory: bool = False) -> None:
    """Give ``path`` the mode ``open`` / ``mkdir`` would: 0o666 (files) or 0o777 (folders) less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


def temporary_directory(parent: Path, prefix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent``, with the umask's mode instead of 0700."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    follow_umask(tmp, directory=True)
    return tmp


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        follow_umask(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_parquet(path: Path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)


def torch_save(path: Path, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; if the block succeeds it replaces ``target`` (old
    content is moved aside, then deleted), otherwise it is removed. Readers never see half a folder."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_directory(target.parent, f".{target.name}.")
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing left after a successful rename

"""Cheap identities for resumable per-slide work: a file's name, size and modification time, and a
short stable hash of JSON-able parts (settings, fingerprints). A cached result is reused only when
its key matches, so changed inputs or settings are redone."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional


def fingerprint(path: Optional[Path]) -> Optional[list]:
    if path is None:
        return None
    stat = Path(path).stat()
    return [Path(path).name, stat.st_size, stat.st_mtime_ns]


def stable_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]

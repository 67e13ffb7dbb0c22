"""One measurement at a time per machine: timing and energy windows of two processes must never overlap.

Two greencompress processes on one machine (two search workers, a run beside a search) would each
time the other's load. Whoever measures holds an exclusive `flock` on one file in the machine's
temporary folder (`$GREENCOMPRESS_LOCK_DIR` to place it elsewhere); training and exporting need
no lock and may overlap. The kernel drops the lock when its holder dies, so a crash never leaves
the machine locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = "greencompress-measure.lock"


def lock_path() -> Path:
    return Path(os.environ.get("GREENCOMPRESS_LOCK_DIR") or tempfile.gettempdir()) / LOCK_NAME


@dataclass
class HeldLock:
    """When the lock was asked for, taken and let go (seconds since the epoch), for the report."""

    path: str
    asked: float
    taken: float = 0.0
    released: float = 0.0

    @property
    def waited_s(self) -> float:
        return self.taken - self.asked

    def to_dict(self) -> dict:
        def utc(seconds: float) -> str:
            return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        return {
            "path": self.path,
            "waited_s": round(self.waited_s, 3),
            "held_from_utc": utc(self.taken),
            "held_until_utc": utc(self.released),
        }


@contextlib.contextmanager
def measurement_lock(what: str = "measurement"):
    """Hold the machine's measurement lock for the block; yields a HeldLock filled in as it goes."""
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    held = HeldLock(str(path), time.time())
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: waiting for another greencompress process to finish measuring (%s)", what, path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        held.taken = time.time()
        try:
            yield held
        finally:
            held.released = time.time()
            fcntl.flock(handle, fcntl.LOCK_UN)

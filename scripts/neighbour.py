"""A busy neighbour for benchmarks: a separate process that keeps CPU cores busy until stopped.

with busy_neighbour(cores=1):
    ...  # measure on a machine that is no longer quiet
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from typing import Iterator

_SPIN = "while True: pass"


@contextlib.contextmanager
def busy_neighbour(cores: int = 1) -> Iterator[list[subprocess.Popen]]:
    """Start `cores` processes that each spin on one core; stop them on exit, even on Ctrl-C."""
    processes = [subprocess.Popen([sys.executable, "-c", _SPIN], stdin=subprocess.DEVNULL) for _ in range(cores)]
    try:
        yield processes
    finally:
        for process in processes:
            process.kill()
            process.wait()

"""How busy the rest of the machine was during a measurement window, from /proc/stat.

A benchmark on a shared machine is only as good as the machine was quiet. Other processes take
cores from the model's thread pool (a descheduled worker stalls its siblings, and spin-waiting
pools burn CPU time meanwhile, which the estimate meter counts), and RAPL counts their energy too.
Each window therefore records the share of the machine's CPU time that went to other processes:
all CPUs' busy time from /proc/stat, less this process's own CPU time, over the window's capacity
(wall time x logical CPUs). Time the hypervisor gave to other guests (`steal`) counts as busy too:
this VM's CPUs were not running it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")

# Other processes using more than this share of the machine's CPU capacity make a window "busy".
# A quiet VM shows 0-3% (kernel threads, the shell); one process spinning on one of 2 cores shows 50%.
BUSY_SHARE = 0.10


@dataclass(frozen=True)
class CpuTimes:
    """Cumulative CPU seconds of the whole machine (busy and stolen) and of this process, at one instant."""

    machine_busy_s: float
    machine_steal_s: float
    own_s: float
    wall_s: float


def read_cpu_times(proc_stat: Path = PROC_STAT, ticks_per_s: int | None = None) -> CpuTimes | None:
    """The machine's busy and stolen CPU seconds (all CPUs) and this process's; None where /proc/stat is unreadable."""
    try:
        first_line = proc_stat.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = first_line.split()
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    ticks = [int(value) for value in fields[1:]]
    ticks += [0] * (8 - len(ticks))  # old kernels stop after idle/iowait
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    per_s = ticks_per_s or os.sysconf("SC_CLK_TCK")
    return CpuTimes(
        (user + nice + system + irq + softirq) / per_s, steal / per_s, time.process_time(), time.perf_counter()
    )


def other_cpu_share(start: CpuTimes | None, end: CpuTimes | None, logical_cpus: int) -> float | None:
    """The share (0..1) of the machine's CPU capacity over [start, end] used by other processes or stolen."""
    if start is None or end is None or end.wall_s <= start.wall_s:
        return None
    capacity = (end.wall_s - start.wall_s) * logical_cpus
    busy = (end.machine_busy_s - start.machine_busy_s) - (end.own_s - start.own_s)
    stolen = end.machine_steal_s - start.machine_steal_s
    return min(1.0, max(0.0, (busy + stolen) / capacity))  # tick rounding can make it a hair below 0


class LoadMonitor:
    """Begin/end around a window, like a meter: the other processes' share of the machine over it."""

    def __init__(self, proc_stat: Path = PROC_STAT, logical_cpus: int | None = None, ticks_per_s: int | None = None):
        self.proc_stat = proc_stat
        self.logical_cpus = logical_cpus or os.cpu_count() or 1
        self.ticks_per_s = ticks_per_s
        self._start: CpuTimes | None = None

    def begin(self) -> None:
        self._start = read_cpu_times(self.proc_stat, self.ticks_per_s)

    def end(self) -> float | None:
        """The other processes' share since `begin`, or None where the machine's CPU time cannot be read."""
        return other_cpu_share(self._start, read_cpu_times(self.proc_stat, self.ticks_per_s), self.logical_cpus)

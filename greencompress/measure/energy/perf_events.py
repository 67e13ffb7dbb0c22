"""The CPU's energy counters through perf events (the `power` PMU), where the powercap tree cannot be read.

Linux publishes the same RAPL counters twice: in /sys/class/powercap (rapl.py) and as perf events under
/sys/bus/event_source/devices/power/ (`events/energy-pkg`, `energy-ram`, `energy-psys`, each with a `.scale` in
joules per count). A perf event is opened system-wide on one CPU with perf_event_open(2) (allowed where
/proc/sys/kernel/perf_event_paranoid is at most 0, or with CAP_PERFMON) and read as a 64-bit count that does
not wrap in practice. `energy-pkg` (and `energy-ram`) are used where they exist; `energy-psys` (the whole
platform, which overlaps the package) only where the package counter is missing, and it says so.

Some virtual machines expose these events and never count (this project's VMs show `energy-psys` reading
0.00 J): every counter is read across a short busy probe when the meter starts, and one that does not move is
named as not working, never taken as 0 J.

`PerfEvents` is the boundary to the kernel (the syscall and the read); tests give a fake one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from greencompress.measure.energy.meter import (
    EnergyMeter,
    EnergyReading,
    MeterDescription,
    MeterUnavailable,
    Uncertainty,
)

POWER_PMU = Path("/sys/bus/event_source/devices/power")
PARANOID = Path("/proc/sys/kernel/perf_event_paranoid")
PROBE_S = 0.2  # the busy window a counter must move in to be trusted
DOMAINS = {"energy-pkg": "cpu", "energy-ram": "dram", "energy-psys": "cpu"}

PERF_UNCERTAINTY = Uncertainty(
    low_fraction=0.05,
    high_fraction=0.05,
    basis="RAPL counters read as perf events (package, and DRAM where exposed); +-5% assumed systematic error, "
    "vendors publish none; the counter covers every process on the package, so the idle share is reported "
    "separately",
)


class PerfEvents:
    """perf_event_open(2) and read(2), through ctypes (Linux on x86-64 and aarch64)."""

    SYSCALL = {"x86_64": 298, "aarch64": 241}

    def open(self, pmu_type: int, config: int, cpu: int) -> int:
        import ctypes
        import platform

        number = self.SYSCALL.get(platform.machine())
        if number is None:
            raise OSError(f"perf_event_open: unknown syscall number on {platform.machine()}")
        # struct perf_event_attr: type, size, config; the rest zero (counting, not sampling; enabled).
        attr = (ctypes.c_uint8 * 128)()
        ctypes.memmove(attr, ctypes.byref(ctypes.c_uint32(pmu_type)), 4)
        ctypes.memmove(ctypes.byref(attr, 4), ctypes.byref(ctypes.c_uint32(128)), 4)
        ctypes.memmove(ctypes.byref(attr, 8), ctypes.byref(ctypes.c_uint64(config)), 8)
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.syscall(number, attr, -1, cpu, -1, 0)
        if fd < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        return fd

    def read(self, fd: int) -> int:
        return int.from_bytes(os.read(fd, 8), "little")

    def close(self, fd: int) -> None:
        os.close(fd)


@dataclass(frozen=True)
class PerfCounter:
    name: str  # the event's name: energy-pkg, energy-ram, energy-psys
    domain: str
    fd: int
    joules_per_count: float


def discover_counters(root: Path = POWER_PMU, events: PerfEvents | None = None) -> list[PerfCounter]:
    """Open the power PMU's energy events on CPU 0; MeterUnavailable says why none can be used."""
    events = events or PerfEvents()
    if not (root / "type").is_file():
        raise MeterUnavailable(f"no perf power PMU at {root} (the kernel or the VM exposes no energy events)")
    pmu_type = int((root / "type").read_text().strip())
    found = {path.name: path for path in sorted((root / "events").glob("energy-*")) if "." not in path.name}
    wanted = [name for name in ("energy-pkg", "energy-ram") if name in found] or (
        ["energy-psys"] if "energy-psys" in found else []
    )
    if not wanted:
        raise MeterUnavailable(f"{root / 'events'} lists no energy-pkg, energy-ram or energy-psys event")
    counters = []
    for name in wanted:
        config = int(found[name].read_text().strip().split("event=")[-1].split(",")[0], 16)
        scale_file, unit_file = root / "events" / f"{name}.scale", root / "events" / f"{name}.unit"
        scale = float(scale_file.read_text()) if scale_file.is_file() else 1.0
        unit = unit_file.read_text().strip() if unit_file.is_file() else "Joules"
        if unit != "Joules":
            raise MeterUnavailable(f"{unit_file}: counts {unit!r}, expected Joules")
        try:
            fd = events.open(pmu_type, config, 0)
        except OSError as error:
            for opened in counters:
                events.close(opened.fd)
            paranoid = PARANOID.read_text().strip() if PARANOID.is_file() else "?"
            raise MeterUnavailable(
                f"perf event power/{name}/ cannot be opened ({error.strerror or error}); system-wide events need "
                f"perf_event_paranoid <= 0 (it is {paranoid}: sudo sysctl kernel.perf_event_paranoid=0) or "
                "CAP_PERFMON"
            ) from None
        counters.append(PerfCounter(name, DOMAINS[name], fd, scale))
    return counters


def check_counting(counters: list[PerfCounter], events: PerfEvents, probe_s: float = PROBE_S) -> None:
    """Raise MeterUnavailable for a counter that does not move across `probe_s` seconds of busy work."""
    before = [events.read(counter.fd) for counter in counters]
    ends = time.perf_counter() + probe_s
    spin = 0
    while time.perf_counter() < ends:
        spin += 1
    for counter, start in zip(counters, before):
        moved = (events.read(counter.fd) - start) * counter.joules_per_count
        if moved <= 0:
            raise MeterUnavailable(
                f"perf event power/{counter.name}/ reads {moved:.2f} J over a {probe_s:g} s busy window: the "
                "counter does not work here (a VM may expose it without counting); not taken as 0 J"
            )


class PerfEnergyMeter(EnergyMeter):
    """Package (and DRAM) energy from perf events, in joules; psys where no package counter exists."""

    method = "perf-energy"
    min_window_s = 1.0  # as RAPL through powercap: the same counters

    def __init__(self, root: Path = POWER_PMU, events: PerfEvents | None = None, probe_s: float = PROBE_S):
        self.events = events or PerfEvents()
        self.counters = discover_counters(root, self.events)
        try:
            check_counting(self.counters, self.events, probe_s)
        except MeterUnavailable:
            for counter in self.counters:  # a meter that is not used keeps no file descriptors open
                self.events.close(counter.fd)
            raise
        self._started: tuple[list[int], float] | None = None

    def begin_window(self) -> None:
        self._started = ([self.events.read(c.fd) for c in self.counters], time.perf_counter())

    def end_window(self) -> EnergyReading:
        if self._started is None:
            raise RuntimeError("end_window() without begin_window()")
        ends, ended = [self.events.read(c.fd) for c in self.counters], time.perf_counter()
        starts, started = self._started
        self._started = None
        energy: dict[str, float] = {}
        for counter, start, end in zip(self.counters, starts, ends):
            energy[counter.domain] = energy.get(counter.domain, 0.0) + (end - start) * counter.joules_per_count
        return EnergyReading(energy, ended - started, self.method, PERF_UNCERTAINTY, measured=True)

    def describe(self) -> MeterDescription:
        names = [c.name for c in self.counters]
        notes = [f"perf events: {', '.join(f'power/{n}/' for n in names)} on CPU 0", PERF_UNCERTAINTY.basis]
        if names == ["energy-psys"]:
            notes.insert(1, "energy-psys is the whole platform (more than the CPU package): no package counter here")
        return MeterDescription(
            method=self.method,
            measured=True,
            domains=tuple(sorted({c.domain for c in self.counters})),
            assumptions=notes,
        )

"""RAPL through the Linux powercap tree: CPU package and DRAM energy counters, in microjoules.

Layout read (all entries are links at the top of /sys/class/powercap):
  intel-rapl:N/        name = package-N, energy_uj, max_energy_range_uj   -> domain "cpu"
  intel-rapl:N:M/      name = core | uncore | dram                         -> "dram" kept, core/uncore
                                                                              are inside the package
  intel-rapl:N (psys)  platform energy, which overlaps the packages: not summed
AMD CPUs expose the same `intel-rapl` tree on recent kernels. `intel-rapl-mmio:*` repeats the
package counters through another interface and is skipped so nothing counts twice.
"""

from __future__ import annotations

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

POWERCAP_ROOT = Path("/sys/class/powercap")

# Vendors publish no accuracy for RAPL. Package counters agree closely with external meters on
# recent server CPUs, but they are partly modelled and cover the package, not the wall socket.
RAPL_UNCERTAINTY = Uncertainty(
    low_fraction=0.05,
    high_fraction=0.05,
    basis="RAPL counter (package, and DRAM where exposed); +-5% assumed systematic error, vendors publish none; "
    "the counter covers every process on the package, so the idle share is reported separately",
)

PERMISSION_HINT = (
    "energy_uj is readable by root only since Linux 5.10 (CVE-2020-8694, the PLATYPUS power side channel). "
    "To let this user read it: sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj (until reboot), "
    "or a udev rule / systemd-tmpfiles entry that does the same at boot; or run greencompress as root"
)


@dataclass(frozen=True)
class RaplZone:
    """One counter: its folder, the domain it adds to, and where it wraps around."""

    path: Path
    name: str
    domain: str  # "cpu" or "dram"
    max_energy_range_uj: int

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


def discover_zones(root: Path = POWERCAP_ROOT) -> list[RaplZone]:
    """The package and DRAM zones under `root`; raises MeterUnavailable saying why there are none or none readable."""
    folders = sorted(root.glob("intel-rapl:*"))
    if not folders:
        raise MeterUnavailable(
            f"no RAPL zones under {root} (not an x86 Linux host with powercap, or a VM that does not pass RAPL through)"
        )
    zones = []
    for folder in folders:
        name = _read(folder / "name")
        domain = "cpu" if name.startswith("package") else "dram" if name == "dram" else None
        if domain is None:
            continue  # core/uncore are inside their package; psys overlaps everything
        zone = RaplZone(folder, name, domain, int(_read(folder / "max_energy_range_uj")))
        try:
            zone.read_uj()
        except PermissionError:
            raise MeterUnavailable(f"{folder / 'energy_uj'} is not readable: {PERMISSION_HINT}") from None
        zones.append(zone)
    if not any(zone.domain == "cpu" for zone in zones):
        raise MeterUnavailable(f"RAPL zones under {root} include no CPU package counter")
    return zones


def counter_delta_uj(start_uj: int, end_uj: int, max_energy_range_uj: int) -> int:
    """Energy between two readings of a counter that wraps to 0 after `max_energy_range_uj`.

    One wrap at most is assumed: windows are seconds long, a wrap takes minutes even at hundreds of watts.
    """
    if end_uj >= start_uj:
        return end_uj - start_uj
    return end_uj + (max_energy_range_uj + 1 - start_uj)


class RaplMeter(EnergyMeter):
    """Sums package counters into 'cpu' and DRAM counters into 'dram', in joules."""

    method = "rapl"
    min_window_s = 1.0  # counters update about every millisecond; a second averages the jitter away

    def __init__(self, root: Path = POWERCAP_ROOT):
        self.zones = discover_zones(root)
        self._started: tuple[list[int], float] | None = None

    def begin_window(self) -> None:
        self._started = ([zone.read_uj() for zone in self.zones], time.perf_counter())

    def end_window(self) -> EnergyReading:
        if self._started is None:
            raise RuntimeError("end_window() without begin_window()")
        ends, ended = [zone.read_uj() for zone in self.zones], time.perf_counter()
        starts, started = self._started
        self._started = None
        energy_j: dict[str, float] = {}
        for zone, start, end in zip(self.zones, starts, ends):
            energy_j[zone.domain] = (
                energy_j.get(zone.domain, 0.0) + counter_delta_uj(start, end, zone.max_energy_range_uj) / 1e6
            )
        return EnergyReading(energy_j, ended - started, "rapl", RAPL_UNCERTAINTY, measured=True)

    def describe(self) -> MeterDescription:
        return MeterDescription(
            method="rapl",
            measured=True,
            domains=tuple(sorted({zone.domain for zone in self.zones})),
            assumptions=[
                f"zones: {', '.join(f'{z.path.name} ({z.name})' for z in self.zones)}",
                "package counters include every process on the CPU: idle power is measured before "
                "benchmarking and subtracted for the active figure",
                RAPL_UNCERTAINTY.basis,
            ],
        )


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError:
        raise MeterUnavailable(f"{path} is not readable: {PERMISSION_HINT}") from None
    except OSError as error:
        raise MeterUnavailable(f"{path}: cannot read RAPL zone: {error.strerror}") from None

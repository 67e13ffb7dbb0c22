"""The estimate meter: this process's CPU time multiplied by an assumed active power per core.

Used where no energy counter can be read (virtual machines, containers without RAPL). It is an
estimate, labelled so everywhere, with a wide band: a TDP share ignores clock, load and idle power.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from greencompress.core.hardware import cpu_info, cpu_topology
from greencompress.measure.energy.meter import (
    EnergyMeter,
    EnergyReading,
    MeterDescription,
    Uncertainty,
)


@dataclass(frozen=True)
class CpuPowerFigure:
    """Thermal design power of a CPU model and its core count, from the vendor's specification page."""

    model_substring: str
    tdp_w: float
    cores: int
    source: str

    @property
    def watts_per_core(self) -> float:
        return self.tdp_w / self.cores


# A few CPUs common in clouds. TDP is the vendor's sustained-power design figure, not a measurement.
KNOWN_CPUS = (
    CpuPowerFigure("EPYC 7763", 280, 64, "AMD EPYC 7763 product specifications (amd.com)"),
    CpuPowerFigure("EPYC 9654", 360, 96, "AMD EPYC 9654 product specifications (amd.com)"),
    CpuPowerFigure("Platinum 8375C", 300, 32, "Intel Xeon Platinum 8375C (AWS m6i/c6i), Intel ARK"),
    CpuPowerFigure("Platinum 8480", 350, 56, "Intel Xeon Platinum 8480+ specifications, Intel ARK"),
)

# For an unknown CPU: a round per-core figure in the range of the server parts above (4-10 W/core).
DEFAULT_WATTS_PER_CORE = 7.0

# How far a TDP-share estimate can be from a counter: it cannot see clock, turbo, memory-bound
# stalls or the package's idle floor. The band is deliberately wide; it is not a confidence interval.
ESTIMATE_UNCERTAINTY = Uncertainty(
    low_fraction=0.6,
    high_fraction=2.0,
    basis="TDP-share estimate, not a measurement: the true figure may be 60% lower to 200% higher",
)


def watts_per_core(override: float | None) -> tuple[float, str]:
    """The active power per busy core to assume, and where the figure comes from."""
    if override is not None:
        return override, "energy.cpu_watts_per_core in the recipe"
    model = cpu_info().model
    for figure in KNOWN_CPUS:
        if figure.model_substring in model:
            return figure.watts_per_core, f"{figure.tdp_w:g} W TDP / {figure.cores} cores ({figure.source})"
    return (
        DEFAULT_WATTS_PER_CORE,
        f"default for an unrecognised CPU ('{model}'): {DEFAULT_WATTS_PER_CORE:g} W per busy core",
    )


class EstimateMeter(EnergyMeter):
    """CPU seconds used by this process (all its threads) over the window x watts per core."""

    method = "estimate"
    min_window_s = 0.2  # process CPU time is kept in nanoseconds; the interval over windows shows the rest

    def __init__(self, cpu_watts_per_core: float | None = None, threads_per_core: int | None = None):
        self.watts_per_core, self.figure_source = watts_per_core(cpu_watts_per_core)
        self.threads_per_core = threads_per_core if threads_per_core is not None else cpu_topology().threads_per_core
        self._started: tuple[float, float] | None = None

    def begin_window(self) -> None:
        self._started = (time.process_time(), time.perf_counter())

    def end_window(self) -> EnergyReading:
        if self._started is None:
            raise RuntimeError("end_window() without begin_window()")
        cpu_start, wall_start = self._started
        self._started = None
        cpu_seconds = time.process_time() - cpu_start
        return EnergyReading(
            energy_j={"cpu": cpu_seconds * self.watts_per_core},
            duration_s=time.perf_counter() - wall_start,
            method="estimate",
            uncertainty=ESTIMATE_UNCERTAINTY,
            measured=False,
        )

    def describe(self) -> MeterDescription:
        return MeterDescription(
            method="estimate",
            measured=False,
            domains=("cpu",),
            assumptions=[
                f"{self.watts_per_core:.2f} W per busy core: {self.figure_source}",
                smt_basis(self.threads_per_core),
                "counts only this process's CPU time (all threads), so idle, other processes, DRAM and "
                "the rest of the machine are excluded",
                "no energy counter (RAPL, NVML) was read: this is an estimate, not a measurement",
                ESTIMATE_UNCERTAINTY.basis,
            ],
            estimated_from="CPU time",
        )


def smt_basis(threads_per_core: int | None) -> str:
    """How the per-core watts are applied to CPU seconds, given this machine's SMT, in words."""
    if threads_per_core == 1:
        return (
            "charged per CPU-second of this process; SMT is off here (1 thread per core), so a CPU-second is a "
            "core-second"
        )
    if threads_per_core:
        return (
            f"charged per CPU-second of this process; SMT is on ({threads_per_core} threads per core), so a busy "
            f"logical CPU is charged a whole core's watts: up to {threads_per_core}x too much when sibling "
            f"threads of one core are busy together"
        )
    return "charged per CPU-second of this process; whether SMT is on is not exposed here"

"""The energy-meter interface: begin a window, end it, get joules per domain and how they were obtained.

Every meter, measured (RAPL, NVML) or estimated, sits behind `EnergyMeter`, so the benchmark code
never branches on hardware. A reading cannot exist without its method and its uncertainty.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

from greencompress.core.config import Section
from greencompress.core.registry import Registry


@dataclass(frozen=True)
class Uncertainty:
    """A relative band around a figure: the true value is believed to lie in [x*(1-low), x*(1+high)]."""

    low_fraction: float
    high_fraction: float
    basis: str  # what the band rests on, in words


@dataclass(frozen=True)
class EnergyReading:
    """Energy over one measurement window, per domain (e.g. 'cpu', 'dram', 'gpu0'), in joules."""

    energy_j: dict[str, float]
    duration_s: float
    method: str
    uncertainty: Uncertainty
    measured: bool  # False for an estimate: never to be presented as a measurement
    telemetry: dict = field(default_factory=dict)  # per domain at the window's end (GPU clock, temperature...)

    def __post_init__(self):
        if self.method not in METERS:  # only registered methods appear in reports
            raise ValueError(f"unknown energy method {self.method!r}; expected one of {tuple(METERS.names())}")

    @property
    def total_j(self) -> float:
        return sum(self.energy_j.values())


@dataclass(frozen=True)
class MeterDescription:
    """What a meter is and what it assumes, for the report."""

    method: str
    measured: bool
    domains: tuple[str, ...]
    assumptions: list[str] = field(default_factory=list)
    # What an estimate's figures are a multiple of (the built-in estimate scales CPU time), so a ratio of them is
    # worded as what it is; a plugin's estimate names its own. Meters leave it None: their figures are energy.
    estimated_from: str | None = None

    @property
    def proportional_to(self) -> str:
        return "energy" if self.measured else (self.estimated_from or "CPU time")


class MeterUnavailable(Exception):
    """A meter cannot run here; the message says why, in words a user can act on."""


class EnergyMeter(ABC):
    """Measures energy over windows; windows do not nest.

    `min_window_s` is the shortest window whose reading the method supports (counter update
    period, power-averaging time); benchmarks never measure a shorter one.
    """

    method: str
    min_window_s: float = 0.0

    @abstractmethod
    def begin_window(self) -> None:
        """Start a window: record the counters (cheap, no work in the measured loop)."""

    @abstractmethod
    def end_window(self) -> EnergyReading:
        """End the window started last and return its energy."""

    @abstractmethod
    def describe(self) -> MeterDescription:
        """The method, domains and assumptions of this meter."""


@dataclass(frozen=True)
class Probe:
    """What a meter may need to start: the recipe's energy section, and the hardware seams tests replace."""

    spec: Section  # the recipe's energy section (EnergySpec)
    nvml: ModuleType | None = None  # a fake pynvml in tests
    powercap_root: Path | None = None  # a temporary powercap tree in tests
    gpu_uuids: tuple[str, ...] | None = None  # the GPUs to measure (None: every GPU NVML sees)


@dataclass(frozen=True)
class MeterSpec:
    """A registered meter: the method it labels figures with, its domain, and how to start it here.

    `start` raises MeterUnavailable with a reason a user can act on. `fallback` meters (the
    estimate) are used by `auto` only when no measured meter of the domain starts.
    """

    method: str
    domain: str  # "cpu" or "gpu"
    start: Callable[[Probe], EnergyMeter]
    fallback: bool = False


METERS: Registry[MeterSpec] = Registry("energy meter", "greencompress.meters", lambda spec: spec.method)

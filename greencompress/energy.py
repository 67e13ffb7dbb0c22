"""Measure the energy of any block of code, with the same meters and labels as the pipeline.

    import greencompress
    with greencompress.energy.measure() as m:
        model(inputs)
    print(m.joules, m.by_domain, m.method, m.measured)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from greencompress.measure.energy import EnergySpec, Uncertainty, select_meter


@dataclass
class Measurement:
    """Filled in when the `with` block ends. `measured` is False for an estimate."""

    method: str
    reason: str  # why this meter, and why better ones were not used
    joules: float | None = None
    by_domain: dict[str, float] = field(default_factory=dict)
    duration_s: float | None = None
    measured: bool | None = None
    uncertainty: Uncertainty | None = None


@contextmanager
def measure(meter: str = "auto", cpu_watts_per_core: float | None = None) -> Iterator[Measurement]:
    """Measure the CPU-side energy of the `with` block with the best meter available (or the one named)."""
    chosen, reason = select_meter(EnergySpec(meter=meter, cpu_watts_per_core=cpu_watts_per_core))
    measurement = Measurement(method=chosen.method, reason=reason)
    chosen.begin_window()
    try:
        yield measurement
    finally:
        reading = chosen.end_window()
        measurement.joules = reading.total_j
        measurement.by_domain = dict(reading.energy_j)
        measurement.duration_s = reading.duration_s
        measurement.measured = reading.measured
        measurement.uncertainty = reading.uncertainty

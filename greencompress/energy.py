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
def measure(meter: str = "auto", cpu_watts_per_core: float | None = None, device: str = "cpu") -> Iterator[Measurement]:
    """Measure the energy of the `with` block with the best meter available (or the one named).

    `device` "cuda", "cuda:N" or "auto" measures that GPU through NVML (its counter, else sampled
    power), plus the host CPU where RAPL can read it; GPU energy is never estimated. Work queued on
    the GPU is waited for before the window closes.
    """
    from greencompress.runtimes.device import resolve_device

    gpu = resolve_device(device)
    chosen, reason = select_meter(
        EnergySpec(meter=meter, cpu_watts_per_core=cpu_watts_per_core),
        gpu_uuid=gpu.uuid if gpu.kind == "cuda" else None,
    )
    measurement = Measurement(method=chosen.method, reason=reason)
    chosen.begin_window()
    try:
        yield measurement
    finally:
        if gpu.kind == "cuda":
            import torch

            torch.cuda.synchronize(gpu.index)  # the window must hold the GPU work the block launched
        reading = chosen.end_window()
        measurement.joules = reading.total_j
        measurement.by_domain = dict(reading.energy_j)
        measurement.duration_s = reading.duration_s
        measurement.measured = reading.measured
        measurement.uncertainty = reading.uncertainty

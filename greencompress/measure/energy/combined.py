"""A GPU meter and the host CPU's meter read over the same windows: the total is the sum of measured domains.

Used where a model runs on a GPU and RAPL can read the host: the GPU's NVML domains (`gpu0`...) and
RAPL's (`cpu`, `dram`) in one reading, each labelled in the description. The reading's method is
the GPU meter's, since the GPU dominates and decides the window length; RAPL's own band is stated
beside it.
"""

from __future__ import annotations

from greencompress.measure.energy.meter import (
    EnergyMeter,
    EnergyReading,
    MeterDescription,
)


class CombinedMeter(EnergyMeter):
    """Two meters over one window: a GPU meter (`primary`) and the host CPU's (`host`); both must be measured."""

    def __init__(self, primary: EnergyMeter, host: EnergyMeter):
        self.primary, self.host = primary, host
        self.method = primary.method
        self.min_window_s = max(primary.min_window_s, host.min_window_s)

    def begin_window(self) -> None:
        self.host.begin_window()
        self.primary.begin_window()

    def end_window(self) -> EnergyReading:
        gpu = self.primary.end_window()
        host = self.host.end_window()
        return EnergyReading(
            {**gpu.energy_j, **host.energy_j},
            gpu.duration_s,
            gpu.method,
            gpu.uncertainty,
            gpu.measured and host.measured,
            {**gpu.telemetry, **host.telemetry},
        )

    def describe(self) -> MeterDescription:
        gpu, host = self.primary.describe(), self.host.describe()
        assumptions = [
            *gpu.assumptions,
            f"host {', '.join(host.domains)} by {host.method}, added to the GPU's: " + "; ".join(host.assumptions),
        ]
        return MeterDescription(gpu.method, gpu.measured and host.measured, (*gpu.domains, *host.domains), assumptions)

    def identity(self) -> dict:
        return self.primary.identity() if hasattr(self.primary, "identity") else {}

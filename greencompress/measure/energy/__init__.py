"""Energy meters behind one interface; `select_meter` picks the best one available."""

from __future__ import annotations

from greencompress.measure.energy.estimate import EstimateMeter
from greencompress.measure.energy.meter import EnergyMeter, EnergyReading, MeterDescription, Uncertainty
from greencompress.recipe import EnergySpec

__all__ = ["EnergyMeter", "EnergyReading", "MeterDescription", "Uncertainty", "select_meter"]


def select_meter(spec: EnergySpec) -> tuple[EnergyMeter, str]:
    """The meter to use and why. Measured meters (RAPL, NVML) are not built yet, so `auto` estimates."""
    meter = EstimateMeter(spec.cpu_watts_per_core)
    if spec.meter == "estimate":
        return meter, "the recipe asks for the estimate meter"
    return meter, "auto: no measured meter is implemented in this version, so CPU energy is estimated"

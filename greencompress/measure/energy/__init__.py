"""Energy meters behind one interface, and the choice of the best one available for each domain.

Order of trust: NVML counter > NVML power sampling > RAPL > estimate. GPU energy is never estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from greencompress.errors import GreencompressError
from greencompress.measure.energy.estimate import EstimateMeter
from greencompress.measure.energy.meter import (
    EnergyMeter,
    EnergyReading,
    MeterDescription,
    MeterUnavailable,
    Uncertainty,
)
from greencompress.recipe import EnergySpec

__all__ = ["EnergyMeter", "EnergyReading", "MeterChoice", "MeterDescription", "MeterUnavailable", "Uncertainty",
           "probe_meters", "select_meter"]


@dataclass(frozen=True)
class MeterChoice:
    """For one domain: the meter chosen (None if nothing can measure it) and every method considered, with why."""

    domain: str  # "cpu" (CPU package, and DRAM where RAPL has it) or "gpu"
    meter: EnergyMeter | None
    considered: list[tuple[str, str]] = field(default_factory=list)  # (method, "active" | "available" | reason)

    @property
    def reason(self) -> str:
        return "; ".join(f"{method}: {status}" for method, status in self.considered)


def probe_meters(spec: EnergySpec, nvml=None, powercap_root=None) -> dict[str, MeterChoice]:
    """Try every meter on this machine and pick the best per domain; nothing is measured yet."""
    from greencompress.measure.energy import nvml as nvml_module
    from greencompress.measure.energy import rapl

    considered: list[tuple[str, str]] = []
    cpu_meter: EnergyMeter | None = None
    if spec.meter in ("auto", "rapl"):
        try:
            cpu_meter = rapl.RaplMeter(powercap_root or rapl.POWERCAP_ROOT)
            considered.append(("rapl", "active"))
        except MeterUnavailable as why:
            considered.append(("rapl", f"unavailable: {why}"))
    else:
        considered.append(("rapl", "not tried: the recipe asks for energy.meter: estimate"))
    if cpu_meter is None and spec.meter in ("auto", "estimate"):
        cpu_meter = EstimateMeter(spec.cpu_watts_per_core)
        considered.append(("estimate", "active (no measured CPU meter)" if spec.meter == "auto" else "active"))

    gpu_considered: list[tuple[str, str]] = []
    gpu_meter: EnergyMeter | None = None
    try:
        gpu_meter = nvml_module.NvmlMeter(nvml=nvml)
        other = "nvml-counter" if gpu_meter.method == "nvml-power" else "nvml-power"
        gpu_considered.append((gpu_meter.method, "available"))
        gpu_considered.append((other, "counter unsupported on " + ", ".join(gpu_meter.counter_unsupported)
                               if gpu_meter.method == "nvml-power" else "not needed: the counter is better"))
    except MeterUnavailable as why:
        gpu_considered += [("nvml-counter", f"unavailable: {why}"), ("nvml-power", f"unavailable: {why}")]
    gpu_considered.append(("estimate", "never used for GPUs: GPU energy is measured or not reported"))
    return {"cpu": MeterChoice("cpu", cpu_meter, considered), "gpu": MeterChoice("gpu", gpu_meter, gpu_considered)}


def select_meter(spec: EnergySpec, nvml=None, powercap_root=None) -> tuple[EnergyMeter, str]:
    """The meter for CPU inference (every runtime greencompress runs today) and why it was chosen.

    A meter the recipe names explicitly must work: asking for `rapl` never falls back to an estimate.
    """
    choice = probe_meters(spec, nvml, powercap_root)["cpu"]
    if choice.meter is None:
        raise GreencompressError(f"energy.meter: {spec.meter} is not available here: {choice.reason}")
    return choice.meter, choice.reason

"""Energy meters behind one interface, registered in order of trust, and the choice of the best one per domain.

Built-in order of trust, per domain: RAPL through powercap > the same counters as perf events (perf_events.py) >
estimate (CPU); NVML counter > NVML power sampling (GPU). GPU energy is never estimated. A plugin adds a meter with
a `MeterSpec` in the `greencompress.meters` entry-point group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field, field_validator

from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError
from greencompress.core.registry import unknown_choice
from greencompress.measure.energy.meter import (
    METERS,
    EnergyMeter,
    EnergyReading,
    MeterDescription,
    MeterSpec,
    MeterUnavailable,
    Probe,
    Uncertainty,
)

__all__ = [
    "EnergyMeter",
    "EnergyReading",
    "EnergySpec",
    "METERS",
    "MeterChoice",
    "MeterDescription",
    "MeterSpec",
    "MeterUnavailable",
    "Probe",
    "Uncertainty",
    "probe_meters",
    "select_meter",
]


class EnergySpec(Section):
    """How energy is obtained: `auto` takes the best meter available (RAPL, else the estimate)."""

    meter: str = "auto"  # "auto" or a registered meter's method (`greencompress meters` lists them)
    cpu_watts_per_core: float | None = Field(default=None, gt=0)
    idle_s: float = Field(default=3.0, ge=0)  # idle-power measurement before benchmarking
    region: str = "world"  # a key of greencompress/resources/carbon_intensity.csv
    carbon_intensity: float | None = Field(default=None, ge=0)  # gCO2e/kWh; overrides region
    pue: float = Field(default=1.0, ge=1.0)
    electricity_price_per_kwh: float | None = Field(default=None, ge=0)
    currency: str = "USD"

    @field_validator("meter")
    @classmethod
    def _known_meter(cls, value: str) -> str:
        if value != "auto" and value not in METERS:
            raise ValueError(unknown_choice("energy meter", value, ["auto", *METERS.names()]))
        return value

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        from greencompress.measure.energy.carbon import lookup_region

        return lookup_region(value).key


@dataclass(frozen=True)
class MeterChoice:
    """For one domain: the meter chosen (None if nothing can measure it) and every method considered, with why."""

    domain: str  # "cpu" (CPU package, and DRAM where RAPL has it) or "gpu"
    meter: EnergyMeter | None
    considered: list[tuple[str, str]] = field(default_factory=list)  # (method, "active" | "available" | reason)

    @property
    def reason(self) -> str:
        return "; ".join(f"{method}: {status}" for method, status in self.considered)


def probe_meters(
    spec: EnergySpec, nvml=None, powercap_root=None, gpu_uuids=None, domains: tuple[str, ...] | None = None
) -> dict[str, MeterChoice]:
    """Try every registered meter in order of trust; pick the first that starts in each domain (or in `domains`)."""
    probe = Probe(spec, nvml, powercap_root, gpu_uuids)
    choices = {}
    for domain in domains or dict.fromkeys(entry.domain for entry in METERS):
        chosen, considered = None, []
        for entry in (entry for entry in METERS if entry.domain == domain):
            if spec.meter not in ("auto", entry.method):
                considered.append((entry.method, f"not tried: the recipe asks for energy.meter: {spec.meter}"))
            elif chosen is not None:
                if not entry.fallback:  # a fallback that was not needed is not worth a line
                    considered.append((entry.method, "not needed: a better meter is active"))
            else:
                try:
                    chosen = entry.start(probe)
                    fallback_note = " (no measured CPU meter)" if entry.fallback and spec.meter == "auto" else ""
                    considered.append((entry.method, f"active{fallback_note}"))
                except MeterUnavailable as why:
                    considered.append((entry.method, f"unavailable: {why}"))
        if domain == "gpu":
            considered.append(("estimate", "never used for GPUs: GPU energy is measured or not reported"))
        choices[domain] = MeterChoice(domain, chosen, considered)
    return choices


def select_meter(
    spec: EnergySpec, nvml=None, powercap_root=None, gpu_uuid: str | None = None
) -> tuple[EnergyMeter, str]:
    """The meter for inference on the CPU, or on the GPU `gpu_uuid`, and why it was chosen.

    A meter the recipe names explicitly must work: asking for `rapl` never falls back to an estimate.
    On a GPU the GPU's meter (NVML) is required, since GPU energy is never estimated; the host CPU
    is added as a second domain where RAPL can read it, and the total is the sum of measured domains.
    """
    if gpu_uuid is None:
        # Only the domain measured: a GPU meter is not started (NVML, its counter probe) for work on the CPU.
        named = METERS.get(spec.meter).domain if spec.meter != "auto" else "cpu"
        choice = probe_meters(spec, nvml, powercap_root, domains=(named,))[named]
        if choice.meter is None:
            raise GreencompressError(f"energy.meter: {spec.meter} is not available here: {choice.reason}")
        return choice.meter, choice.reason
    choices = probe_meters(spec, nvml, powercap_root, (gpu_uuid,), domains=("gpu", "cpu"))
    gpu, host = choices["gpu"], choices["cpu"]
    if gpu.meter is None:
        raise GreencompressError(
            f"benchmark.device is a GPU, but its energy cannot be measured here ({gpu.reason}); "
            f"GPU energy is never estimated"
        )
    reason = f"gpu: {gpu.reason}; host cpu: {host.reason}"
    if host.meter is not None and host.meter.describe().measured:
        from greencompress.measure.energy.combined import CombinedMeter

        return CombinedMeter(gpu.meter, host.meter), reason
    return (
        gpu.meter,
        reason + " (the host CPU is not measured: no counter, and an estimate is not added to a measurement)",
    )


def _nvml_counter(probe: Probe) -> EnergyMeter:
    from greencompress.measure.energy.nvml import NvmlMeter

    meter = NvmlMeter(nvml=probe.nvml, device_uuids=list(probe.gpu_uuids) if probe.gpu_uuids else None)
    if meter.method != "nvml-counter":
        raise MeterUnavailable("counter unsupported on " + ", ".join(meter.counter_unsupported))
    return meter


def _nvml_power(probe: Probe) -> EnergyMeter:
    from greencompress.measure.energy.nvml import NvmlMeter

    return NvmlMeter(
        nvml=probe.nvml, method="nvml-power", device_uuids=list(probe.gpu_uuids) if probe.gpu_uuids else None
    )


def _rapl(probe: Probe) -> EnergyMeter:
    from greencompress.measure.energy import rapl

    return rapl.RaplMeter(probe.powercap_root or rapl.POWERCAP_ROOT)


def _perf_energy(probe: Probe) -> EnergyMeter:
    from greencompress.measure.energy.perf_events import PerfEnergyMeter

    return PerfEnergyMeter()


def _estimate(probe: Probe) -> EnergyMeter:
    from greencompress.measure.energy.estimate import EstimateMeter

    return EstimateMeter(probe.spec.cpu_watts_per_core)


for _spec in (
    MeterSpec("rapl", "cpu", _rapl),
    MeterSpec("perf-energy", "cpu", _perf_energy),
    MeterSpec("estimate", "cpu", _estimate, fallback=True),
    MeterSpec("nvml-counter", "gpu", _nvml_counter),
    MeterSpec("nvml-power", "gpu", _nvml_power),
):
    METERS.register(_spec)

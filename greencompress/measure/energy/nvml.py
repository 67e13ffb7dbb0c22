"""NVIDIA GPU energy through NVML (package `nvidia-ml-py`, module `pynvml`).

Two methods, best first:
- `nvml-counter`: nvmlDeviceGetTotalEnergyConsumption, millijoules since the driver loaded (Volta
  and newer). The counter itself refreshes only every ~20-100 ms, so windows are kept long.
- `nvml-power`: where the counter is not supported, nvmlDeviceGetPowerUsage (milliwatts) sampled by
  a background thread and integrated. On Ampere and newer that value is a ~1 s moving average, and
  on A100/H100 the sensor sees only part of the runtime (Yang et al., SC'24), so windows are longer
  and the band wider.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType

from greencompress.measure.energy.meter import (
    EnergyMeter,
    EnergyReading,
    MeterDescription,
    MeterUnavailable,
    Uncertainty,
)

COUNTER_UNCERTAINTY = Uncertainty(
    0.05,
    0.05,
    "NVML total-energy counter; +-5% assumed (nvidia-smi documents board power draw as accurate "
    "to within +-5 W; NVIDIA publishes no figure for the energy counter)",
)
POWER_UNCERTAINTY = Uncertainty(
    0.25,
    0.25,
    "NVML power readings sampled and integrated; the driver averages power over ~1 s and, on "
    "A100/H100, samples only part of the time (Yang et al., SC'24): +-25% assumed",
)


def import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError:
        raise MeterUnavailable("pynvml is not installed (pip install nvidia-ml-py)") from None
    return pynvml


# Throttle-reason bits (nvml.h, nvmlClocksEventReasons): why the SM clock is below its maximum in a window.
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean a measurement ran slower than the GPU can: worth a word in the report.
LIMITING_REASONS = (
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
)
COUNTER_SAMPLES_PER_WINDOW = 100  # a window spans this many counter updates: edge error under 2%
MIN_COUNTER_WINDOW_S = 1.0  # however fast the counter, a window holds a second of work (clock and power settle)
FALLBACK_COUNTER_WINDOW_S = 5.0  # where the update period cannot be measured (ML.ENERGY found 5 s stable on A100)


class NvmlMeter(EnergyMeter):
    """Energy of the given GPUs (default: all visible), one domain per GPU: 'gpu0', 'gpu1', ... (NVML's index).

    Choose GPUs by UUID (`device_uuids`, as torch.cuda reports them): CUDA_VISIBLE_DEVICES renumbers
    devices for CUDA, not for NVML, so an index could name another GPU.
    """

    def __init__(
        self,
        device_indices: list[int] | None = None,
        nvml: ModuleType | None = None,
        sample_hz: float = 20.0,
        method: str | None = None,
        device_uuids: list[str] | None = None,
        measure_period: bool = True,
    ):
        """`method`: None takes the counter where every GPU has one; "nvml-power" samples power regardless."""
        self.nvml = nvml or import_pynvml()
        try:
            self.nvml.nvmlInit()
            count = self.nvml.nvmlDeviceGetCount()
        except self.nvml.NVMLError as error:
            raise MeterUnavailable(f"NVML cannot start (no NVIDIA driver or GPU here?): {error}") from None
        if count == 0:
            raise MeterUnavailable("NVML found no NVIDIA GPU")
        self.handles = self._handles(count, device_indices, device_uuids)
        self.counter_unsupported = [domain for domain, handle in self.handles.items() if not self._has_counter(handle)]
        self.method = "nvml-power" if self.counter_unsupported or method == "nvml-power" else "nvml-counter"
        self.counter_period_s = None
        if self.method == "nvml-counter" and measure_period:
            self.counter_period_s = counter_update_period_s(self.nvml, next(iter(self.handles.values())))
        # Longer windows where the source is coarse: see the module docstring.
        if self.method == "nvml-power":
            self.min_window_s = 10.0
        elif self.counter_period_s:
            self.min_window_s = max(MIN_COUNTER_WINDOW_S, COUNTER_SAMPLES_PER_WINDOW * self.counter_period_s)
        else:
            self.min_window_s = FALLBACK_COUNTER_WINDOW_S
        self.sample_interval_s = 1.0 / sample_hz
        self._started: tuple[dict[str, int], float] | None = None
        self._sampler: _PowerSampler | None = None

    def _handles(self, count: int, indices: list[int] | None, uuids: list[str] | None) -> dict:
        if uuids:
            handles = {}
            for uuid in uuids:
                try:
                    handle = self.nvml.nvmlDeviceGetHandleByUUID(uuid.encode() if isinstance(uuid, str) else uuid)
                except self.nvml.NVMLError as error:
                    raise MeterUnavailable(f"NVML has no GPU with UUID {uuid}: {error}") from None
                handles[f"gpu{self.nvml.nvmlDeviceGetIndex(handle)}"] = handle
            return handles
        indices = list(range(count)) if indices is None else indices
        return {f"gpu{index}": self.nvml.nvmlDeviceGetHandleByIndex(index) for index in indices}

    def _has_counter(self, handle) -> bool:
        try:
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except self.nvml.NVMLError as error:
            if getattr(error, "value", None) == self.nvml.NVML_ERROR_NOT_SUPPORTED:
                return False
            raise MeterUnavailable(f"NVML energy counter failed: {error}") from None

    def begin_window(self) -> None:
        if self.method == "nvml-counter":
            counters = {domain: self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for domain, h in self.handles.items()}
            self._started = (counters, time.perf_counter())
        else:
            self._sampler = _PowerSampler(self.nvml, self.handles, self.sample_interval_s)
            self._started = ({}, time.perf_counter())
            self._sampler.start()

    def end_window(self) -> EnergyReading:
        if self._started is None:
            raise RuntimeError("end_window() without begin_window()")
        starts, started = self._started
        self._started = None
        if self.method == "nvml-counter":
            energy_j = {}
            for domain, handle in self.handles.items():
                end = self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                if end < starts[domain]:  # a 64-bit millijoule count does not wrap: the driver was reloaded
                    raise CounterReset(
                        f"the NVML energy counter of {domain} went backwards ({starts[domain]} -> {end} "
                        f"mJ): the driver restarted during the window, whose energy is unknown"
                    )
                energy_j[domain] = (end - starts[domain]) / 1e3
            return EnergyReading(
                energy_j, time.perf_counter() - started, self.method, COUNTER_UNCERTAINTY, True, self.telemetry()
            )
        energy_j = self._sampler.stop()
        self._sampler = None
        return EnergyReading(
            energy_j, time.perf_counter() - started, self.method, POWER_UNCERTAINTY, True, self.telemetry()
        )

    def telemetry(self) -> dict[str, dict]:
        """Per GPU at the end of a window: temperature (C), SM clock (MHz), power draw (W), throttle reasons."""
        readings = {}
        for domain, handle in self.handles.items():
            reasons = _optional(self.nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", handle)
            readings[domain] = {
                "temperature_c": _optional(
                    self.nvml, "nvmlDeviceGetTemperature", handle, getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0)
                ),
                "sm_clock_mhz": _optional(
                    self.nvml, "nvmlDeviceGetClockInfo", handle, getattr(self.nvml, "NVML_CLOCK_SM", 1)
                ),
                "power_w": (power / 1e3)
                if (power := _optional(self.nvml, "nvmlDeviceGetPowerUsage", handle)) is not None
                else None,
                "throttle_reasons": [name for bit, name in THROTTLE_REASONS.items() if reasons and reasons & bit],
            }
        return readings

    def identity(self) -> dict[str, dict]:
        """Per GPU: name, UUID, driver, memory, power limit and clocks, for the report's environment."""
        driver = _text(_optional(self.nvml, "nvmlSystemGetDriverVersion") or "unknown")
        identities = {}
        for domain, handle in self.handles.items():
            memory = _optional(self.nvml, "nvmlDeviceGetMemoryInfo", handle)
            limit = _optional(self.nvml, "nvmlDeviceGetEnforcedPowerLimit", handle)
            sm = getattr(self.nvml, "NVML_CLOCK_SM", 1)
            identities[domain] = {
                "name": _text(self.nvml.nvmlDeviceGetName(handle)),
                "uuid": _text(_optional(self.nvml, "nvmlDeviceGetUUID", handle) or "unknown"),
                "driver": driver,
                "memory_bytes": getattr(memory, "total", None),
                "power_limit_w": limit / 1e3 if limit is not None else None,
                "max_sm_clock_mhz": _optional(self.nvml, "nvmlDeviceGetMaxClockInfo", handle, sm),
                "sm_clock_mhz": _optional(self.nvml, "nvmlDeviceGetClockInfo", handle, sm),
                "counter_update_period_s": self.counter_period_s,
            }
        return identities

    def describe(self) -> MeterDescription:
        names = {domain: _text(self.nvml.nvmlDeviceGetName(h)) for domain, h in self.handles.items()}
        assumptions = [f"{domain}: {name}" for domain, name in names.items()]
        if self.method == "nvml-counter":
            assumptions.append(
                f"energy counter updates every {1e3 * self.counter_period_s:.0f} ms (measured here), so "
                f"windows are at least {self.min_window_s:.1f} s"
                if self.counter_period_s
                else f"energy counter update period could not be measured: windows are at least {self.min_window_s:g} s"
            )
        if self.method == "nvml-power":
            why = (
                f"no energy counter on {', '.join(self.counter_unsupported)}"
                if self.counter_unsupported
                else "sampled power asked for (energy.meter: nvml-power)"
            )
            assumptions.append(
                f"{why}: power sampled at "
                f"{1 / self.sample_interval_s:.0f} Hz and integrated; readings are driver-averaged "
                f"power, so windows are at least {self.min_window_s:g} s"
            )
        assumptions.append((POWER_UNCERTAINTY if self.method == "nvml-power" else COUNTER_UNCERTAINTY).basis)
        return MeterDescription(self.method, True, tuple(self.handles), assumptions)


class _PowerSampler:
    """A background thread that integrates power readings (trapezoids) until stopped; joules per domain."""

    def __init__(self, nvml: ModuleType, handles: dict, interval_s: float):
        self.nvml, self.handles, self.interval_s = nvml, handles, interval_s
        self.energy_j = {domain: 0.0 for domain in handles}
        self.samples = 0
        self._previous: tuple[float, dict] | None = None  # (time, watts by domain) of the last sample, from start()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-power-sampler", daemon=True)

    def start(self) -> None:
        self._previous = (time.perf_counter(), self._read_w())
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()  # close the last interval at the window's end
        return dict(self.energy_j)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        now, watts = time.perf_counter(), self._read_w()
        then, previous = self._previous
        for domain in self.energy_j:
            self.energy_j[domain] += 0.5 * (watts[domain] + previous[domain]) * (now - then)
        self._previous = (now, watts)
        self.samples += 1

    def _read_w(self) -> dict[str, float]:
        return {domain: self.nvml.nvmlDeviceGetPowerUsage(h) / 1e3 for domain, h in self.handles.items()}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class CounterReset(RuntimeError):
    """An NVML energy counter went backwards within a window (the driver restarted): the window is invalid."""


def counter_update_period_s(
    nvml: ModuleType, handle, duration_s: float = 0.5, clock=time.perf_counter, pause=time.sleep
) -> float | None:
    """How often the energy counter changes, measured by polling it for `duration_s`; None under 3 changes."""
    changes, last = [], nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    started = clock()
    while clock() - started < duration_s:
        pause(0.0005)
        value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        if value != last:
            changes.append(clock())
            last = value
    if len(changes) < 3:
        return None
    gaps = sorted(later - earlier for earlier, later in zip(changes, changes[1:]))
    return gaps[len(gaps) // 2]


def _optional(nvml: ModuleType, function: str, *args):
    """An NVML query that some GPUs or drivers do not answer (NOT_SUPPORTED, or absent from pynvml): None then."""
    query = getattr(nvml, function, None)
    if query is None:
        return None
    try:
        return query(*args)
    except nvml.NVMLError:
        return None

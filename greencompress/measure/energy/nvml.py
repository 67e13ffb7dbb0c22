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
    0.05, 0.05, "NVML total-energy counter; +-5% assumed (nvidia-smi documents board power draw as accurate "
                "to within +-5 W; NVIDIA publishes no figure for the energy counter)")
POWER_UNCERTAINTY = Uncertainty(
    0.25, 0.25, "NVML power readings sampled and integrated; the driver averages power over ~1 s and, on "
                "A100/H100, samples only part of the time (Yang et al., SC'24): +-25% assumed")


def import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError:
        raise MeterUnavailable("pynvml is not installed (pip install nvidia-ml-py)") from None
    return pynvml


class NvmlMeter(EnergyMeter):
    """Energy of the given GPUs (default: all visible), one domain per GPU: 'gpu0', 'gpu1', ..."""

    def __init__(self, device_indices: list[int] | None = None, nvml: ModuleType | None = None,
                 sample_hz: float = 20.0, method: str | None = None):
        """`method`: None takes the counter where every GPU has one; "nvml-power" samples power regardless."""
        self.nvml = nvml or import_pynvml()
        try:
            self.nvml.nvmlInit()
            count = self.nvml.nvmlDeviceGetCount()
        except self.nvml.NVMLError as error:
            raise MeterUnavailable(f"NVML cannot start (no NVIDIA driver or GPU here?): {error}") from None
        if count == 0:
            raise MeterUnavailable("NVML found no NVIDIA GPU")
        indices = list(range(count)) if device_indices is None else device_indices
        self.handles = {f"gpu{index}": self.nvml.nvmlDeviceGetHandleByIndex(index) for index in indices}
        self.counter_unsupported = [domain for domain, handle in self.handles.items() if not self._has_counter(handle)]
        self.method = "nvml-power" if self.counter_unsupported or method == "nvml-power" else "nvml-counter"
        # Longer windows where the source is coarse: see the module docstring.
        self.min_window_s = 10.0 if self.method == "nvml-power" else 5.0
        self.sample_interval_s = 1.0 / sample_hz
        self._started: tuple[dict[str, int], float] | None = None
        self._sampler: _PowerSampler | None = None

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
            energy_j = {domain: (self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) - starts[domain]) / 1e3
                        for domain, h in self.handles.items()}
            return EnergyReading(energy_j, time.perf_counter() - started, self.method, COUNTER_UNCERTAINTY, True)
        energy_j = self._sampler.stop()
        self._sampler = None
        return EnergyReading(energy_j, time.perf_counter() - started, self.method, POWER_UNCERTAINTY, True)

    def describe(self) -> MeterDescription:
        names = {domain: _text(self.nvml.nvmlDeviceGetName(h)) for domain, h in self.handles.items()}
        assumptions = [f"{domain}: {name}" for domain, name in names.items()]
        if self.method == "nvml-power":
            why = (f"no energy counter on {', '.join(self.counter_unsupported)}" if self.counter_unsupported
                   else "sampled power asked for (energy.meter: nvml-power)")
            assumptions.append(f"{why}: power sampled at "
                               f"{1 / self.sample_interval_s:.0f} Hz and integrated; readings are driver-averaged "
                               f"power, so windows are at least {self.min_window_s:g} s")
        assumptions.append((POWER_UNCERTAINTY if self.method == "nvml-power" else COUNTER_UNCERTAINTY).basis)
        return MeterDescription(self.method, True, tuple(self.handles), assumptions)


class _PowerSampler:
    """A background thread that integrates power readings (trapezoids) until stopped; joules per domain."""

    def __init__(self, nvml: ModuleType, handles: dict, interval_s: float):
        self.nvml, self.handles, self.interval_s = nvml, handles, interval_s
        self.energy_j = {domain: 0.0 for domain in handles}
        self.samples = 0
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

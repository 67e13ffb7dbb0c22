"""NVML with a fake pynvml module: counter, power sampling when the counter is unsupported, several GPUs."""

from __future__ import annotations

import time
import types

import pytest

from greencompress.measure.energy import EnergySpec, probe_meters
from greencompress.measure.energy.meter import MeterUnavailable
from greencompress.measure.energy.nvml import NvmlMeter

NOT_SUPPORTED = 3


class FakeGpu:
    def __init__(self, name: str, power_mw: float, has_counter: bool):
        self.name, self.power_mw, self.has_counter = name, power_mw, has_counter
        self.created = time.perf_counter()

    def energy_mj(self) -> int:  # a counter that integrates the constant power exactly
        return int(self.power_mw * (time.perf_counter() - self.created))


def fake_pynvml(gpus: list[FakeGpu], init_error: str | None = None) -> types.ModuleType:
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        def __init__(self, value):
            self.value = value
            super().__init__({NOT_SUPPORTED: "Not Supported"}.get(value, f"error {value}"))

    def init():
        if init_error:
            raise NVMLError(init_error)

    def total_energy(gpu):
        if not gpu.has_counter:
            raise NVMLError(NOT_SUPPORTED)
        return gpu.energy_mj()

    module.NVMLError = NVMLError
    module.NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    module.nvmlInit = init
    module.nvmlDeviceGetCount = lambda: len(gpus)
    module.nvmlDeviceGetHandleByIndex = lambda index: gpus[index]
    module.nvmlDeviceGetTotalEnergyConsumption = total_energy
    module.nvmlDeviceGetPowerUsage = lambda gpu: int(gpu.power_mw)
    module.nvmlDeviceGetName = lambda gpu: gpu.name.encode()
    return module


def test_counter_in_millijoules_becomes_joules_per_gpu():
    gpus = [FakeGpu("H100", 300_000, True), FakeGpu("H100", 100_000, True)]
    meter = NvmlMeter(nvml=fake_pynvml(gpus))
    assert meter.method == "nvml-counter" and meter.min_window_s >= 5
    meter.begin_window()
    time.sleep(0.2)
    reading = meter.end_window()
    assert set(reading.energy_j) == {"gpu0", "gpu1"}
    assert reading.energy_j["gpu0"] == pytest.approx(300 * reading.duration_s, rel=0.1)
    assert reading.energy_j["gpu1"] == pytest.approx(100 * reading.duration_s, rel=0.1)
    assert reading.method == "nvml-counter" and reading.measured


def test_unsupported_counter_falls_back_to_sampled_power():
    meter = NvmlMeter(nvml=fake_pynvml([FakeGpu("T4", 70_000, False)]), sample_hz=50)
    assert meter.method == "nvml-power" and meter.min_window_s > 5
    meter.begin_window()
    time.sleep(0.3)
    reading = meter.end_window()
    assert reading.energy_j["gpu0"] == pytest.approx(70 * reading.duration_s, rel=0.05)
    assert reading.method == "nvml-power"
    assert "driver-averaged" in " ".join(meter.describe().assumptions)
    assert reading.uncertainty.low_fraction > 0.05


def test_only_the_device_the_model_runs_on_is_measured():
    gpus = [FakeGpu("A100", 250_000, True), FakeGpu("A100", 50_000, True)]
    meter = NvmlMeter(device_indices=[1], nvml=fake_pynvml(gpus))
    meter.begin_window()
    assert list(meter.end_window().energy_j) == ["gpu1"]


def test_no_driver_and_no_gpu_are_unavailable_with_the_reason():
    with pytest.raises(MeterUnavailable, match="NVML cannot start"):
        NvmlMeter(nvml=fake_pynvml([], init_error="Driver Not Loaded"))
    with pytest.raises(MeterUnavailable, match="found no NVIDIA GPU"):
        NvmlMeter(nvml=fake_pynvml([]))


def test_auto_prefers_the_counter_and_never_estimates_gpus(tmp_path):
    choices = probe_meters(EnergySpec(), nvml=fake_pynvml([FakeGpu("H100", 1, True)]), powercap_root=tmp_path)
    assert choices["gpu"].meter.method == "nvml-counter"
    assert "estimate: never used for GPUs" in choices["gpu"].reason
    choices = probe_meters(EnergySpec(), nvml=fake_pynvml([FakeGpu("T4", 1, False)]), powercap_root=tmp_path)
    assert choices["gpu"].meter.method == "nvml-power"
    assert "counter unsupported on gpu0" in choices["gpu"].reason
    choices = probe_meters(EnergySpec(), nvml=fake_pynvml([], init_error="x"), powercap_root=tmp_path)
    assert choices["gpu"].meter is None

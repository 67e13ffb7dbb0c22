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
    """A GPU at constant power whose energy counter, like a real one, only moves every `update_period_s`."""

    def __init__(self, name: str, power_mw: float, has_counter: bool, update_period_s: float = 0.06,
                 uuid: str | None = None):
        self.name, self.power_mw, self.has_counter = name, power_mw, has_counter
        self.update_period_s, self.uuid = update_period_s, uuid or f"GPU-{name}-{id(self):x}"
        self.created = time.perf_counter()

    def energy_mj(self) -> int:  # integrates the constant power exactly, up to the last update
        elapsed = time.perf_counter() - self.created
        return int(self.power_mw * (elapsed - elapsed % self.update_period_s))


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
    module.nvmlDeviceGetIndex = lambda gpu: gpus.index(gpu)
    module.nvmlDeviceGetUUID = lambda gpu: gpu.uuid.encode()

    def by_uuid(uuid):
        for gpu in gpus:
            if gpu.uuid.encode() == uuid:
                return gpu
        raise NVMLError(13)  # NVML_ERROR_NOT_FOUND

    module.nvmlDeviceGetHandleByUUID = by_uuid
    return module


def test_counter_in_millijoules_becomes_joules_per_gpu():
    gpus = [FakeGpu("H100", 300_000, True), FakeGpu("H100", 100_000, True)]
    meter = NvmlMeter(nvml=fake_pynvml(gpus))
    assert meter.method == "nvml-counter" and meter.min_window_s >= 5
    meter.begin_window()
    time.sleep(1.2)  # twenty counter updates: the window's edges cost under 10%
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


def test_gpus_chosen_by_uuid_get_nvml_s_own_index():
    # CUDA_VISIBLE_DEVICES=1 makes this GPU cuda:0 for torch, but NVML still calls it index 1: the UUID says which.
    gpus = [FakeGpu("A100", 250_000, True, uuid="GPU-aaa"), FakeGpu("A100", 50_000, True, uuid="GPU-bbb")]
    meter = NvmlMeter(nvml=fake_pynvml(gpus), device_uuids=["GPU-bbb"])
    meter.begin_window()
    time.sleep(0.3)
    reading = meter.end_window()
    assert list(reading.energy_j) == ["gpu1"] and reading.energy_j["gpu1"] == pytest.approx(50 * reading.duration_s,
                                                                                           rel=0.5)
    with pytest.raises(MeterUnavailable, match="no GPU with UUID GPU-ccc"):
        NvmlMeter(nvml=fake_pynvml(gpus), device_uuids=["GPU-ccc"])


def test_the_counter_update_period_is_measured_and_sets_the_shortest_window():
    from greencompress.measure.energy.nvml import counter_update_period_s

    for period in (0.02, 0.1):
        gpu = FakeGpu("H100", 300_000, True, update_period_s=period)
        measured = counter_update_period_s(fake_pynvml([gpu]), gpu, duration_s=12 * period)
        assert measured == pytest.approx(period, rel=0.2)
        meter = NvmlMeter(nvml=fake_pynvml([FakeGpu("H100", 300_000, True, update_period_s=period)]))
        assert meter.min_window_s == pytest.approx(max(1.0, 100 * meter.counter_period_s))
        assert f"updates every {1e3 * meter.counter_period_s:.0f} ms (measured here)" in " ".join(
            meter.describe().assumptions)
    frozen = FakeGpu("H100", 0, True)  # a counter that never moves in the probe: no period, the cautious window
    assert NvmlMeter(nvml=fake_pynvml([frozen])).min_window_s == 5.0


def test_a_counter_that_goes_backwards_invalidates_the_window():
    from greencompress.measure.energy.nvml import CounterReset

    gpu = FakeGpu("H100", 300_000, True)
    meter = NvmlMeter(nvml=fake_pynvml([gpu]), measure_period=False)
    meter.begin_window()
    gpu.created = time.perf_counter() + 10  # the driver restarted: the count starts again below the last value
    with pytest.raises(CounterReset, match="went backwards"):
        meter.end_window()


def test_each_window_carries_clock_temperature_power_and_throttle_reasons():
    gpu = FakeGpu("H100", 300_000, True)
    nvml = fake_pynvml([gpu])
    nvml.NVML_TEMPERATURE_GPU, nvml.NVML_CLOCK_SM = 0, 1
    nvml.nvmlDeviceGetTemperature = lambda handle, sensor: 71
    nvml.nvmlDeviceGetClockInfo = lambda handle, clock: 1755
    nvml.nvmlDeviceGetMaxClockInfo = lambda handle, clock: 1980
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda handle: 0x4 | 0x20  # power cap and thermal slowdown
    nvml.nvmlSystemGetDriverVersion = lambda: b"560.35.03"
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda handle: 700_000
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(total=80 * 2**30)
    meter = NvmlMeter(nvml=nvml, measure_period=False)
    meter.begin_window()
    reading = meter.end_window()
    assert reading.telemetry["gpu0"] == {"temperature_c": 71, "sm_clock_mhz": 1755, "power_w": 300.0,
                                         "throttle_reasons": ["sw_power_cap", "sw_thermal_slowdown"]}
    identity = meter.identity()["gpu0"]
    assert identity["name"] == "H100" and identity["driver"] == "560.35.03" and identity["power_limit_w"] == 700.0
    assert identity["memory_bytes"] == 80 * 2**30 and identity["max_sm_clock_mhz"] == 1980
    assert identity["uuid"] == gpu.uuid


def test_queries_a_gpu_does_not_answer_are_left_empty():
    nvml = fake_pynvml([FakeGpu("T4", 70_000, True)])

    def not_supported(*args):
        raise nvml.NVMLError(NOT_SUPPORTED)

    nvml.nvmlDeviceGetTemperature = not_supported
    meter = NvmlMeter(nvml=nvml, measure_period=False)
    meter.begin_window()
    telemetry = meter.end_window().telemetry["gpu0"]
    assert telemetry["temperature_c"] is None and telemetry["sm_clock_mhz"] is None  # absent from this fake
    assert telemetry["throttle_reasons"] == [] and telemetry["power_w"] == 70.0

"""NVML with a fake pynvml module: counter, power sampling when the counter is unsupported, several GPUs."""

from __future__ import annotations

import time

import pytest

from greencompress.measure.energy import EnergySpec, probe_meters
from greencompress.measure.energy.meter import MeterUnavailable
from greencompress.measure.energy.nvml import NvmlMeter
from tests.fake_gpu import NOT_SUPPORTED, FakeGpu, fake_pynvml, with_telemetry


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
    assert list(reading.energy_j) == ["gpu1"] and reading.energy_j["gpu1"] == pytest.approx(
        50 * reading.duration_s, rel=0.5
    )
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
            meter.describe().assumptions
        )
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
    nvml = with_telemetry(fake_pynvml([gpu]))
    meter = NvmlMeter(nvml=nvml, measure_period=False)
    meter.begin_window()
    reading = meter.end_window()
    assert reading.telemetry["gpu0"] == {
        "temperature_c": 71,
        "sm_clock_mhz": 1755,
        "power_w": 300.0,
        "throttle_reasons": ["sw_power_cap", "sw_thermal_slowdown"],
    }
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


def test_every_pynvml_name_the_code_and_the_fakes_use_exists_in_the_real_pynvml():
    """A misspelt optional query would read as 'not supported' forever: names are checked against nvidia-ml-py."""
    import re

    import pynvml

    from tests.conftest import REPO
    from tests.fake_gpu import with_power_limits

    used = set()
    for source in [*(REPO / "greencompress").rglob("*.py"), REPO / "scripts" / "gpu_check.py"]:
        text = source.read_text()
        used |= set(re.findall(r"\bp?nvml\.((?:nvml|NVML)\w+)", text))  # attributes: nvml.nvmlInit()
        used |= set(re.findall(r"\"((?:nvml[A-Z]|NVML_)\w+)\"", text))  # names of optional queries: "nvml..."
    faked = {
        name for name in vars(with_power_limits(with_telemetry(fake_pynvml([])))) if name.startswith(("nvml", "NVML_"))
    }
    assert {"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetCurrentClocksThrottleReasons", "NVML_CLOCK_SM"} <= used
    assert sorted(name for name in used | faked if not hasattr(pynvml, name)) == []

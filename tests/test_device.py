"""The device choice, without a GPU: errors that say what is missing, and GPU energy from NVML only (fake pynvml)."""

from __future__ import annotations

import time

import pytest

from greencompress.core.errors import GreencompressError
from greencompress.measure.energy import EnergySpec, select_meter
from greencompress.measure.energy.combined import CombinedMeter
from greencompress.runtimes.device import resolve_device
from tests.fake_gpu import FakeGpu, fake_pynvml, fake_torch
from tests.measure.test_rapl import make_zone


def test_cpu_and_auto_without_a_gpu_measure_on_the_cpu():
    assert resolve_device("cpu").kind == "cpu"
    assert resolve_device("auto", fake_torch([])).kind == "cpu"


def test_a_gpu_asked_for_where_there_is_none_says_what_is_missing(monkeypatch):
    with pytest.raises(GreencompressError, match="CPU-only build; install a CUDA build of torch"):
        resolve_device("cuda", fake_torch([], cuda_version=None))
    with pytest.raises(GreencompressError, match="built for CUDA 13.0, but no NVIDIA driver or GPU answers"):
        resolve_device("cuda:0", fake_torch([]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(GreencompressError, match="CUDA_VISIBLE_DEVICES is set to an empty list"):
        resolve_device("cuda", fake_torch([]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(GreencompressError, match=r"sees 1 GPU\(s\) \(CUDA_VISIBLE_DEVICES=3\)"):
        resolve_device("cuda:1", fake_torch(["H100"]))


def test_a_visible_gpu_is_named_by_its_uuid_for_nvml():
    device = resolve_device("cuda:1", fake_torch(["H100", "H200"]))
    assert (device.kind, device.index, device.name, device.torch_name) == ("cuda", 1, "H200", "cuda:1")
    assert device.uuid == "GPU-00000001-0000-0000-0000-000000000000"
    assert resolve_device("auto", fake_torch(["H100"])).torch_name == "cuda:0"


@pytest.mark.slow
def test_a_recipe_on_cuda_fails_cleanly_on_a_machine_without_one(tiny_recipe, tmp_path):
    from tests.test_cli import greencompress

    tiny_recipe.write_text(tiny_recipe.read_text().replace("runtimes: [onnxruntime]", "runtimes: auto, device: cuda"))
    result = greencompress("run", str(tiny_recipe), "--output", str(tmp_path / "runs"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "benchmark.runtimes: benchmark.device asks for a GPU, and there is no GPU here" in message
    assert "no runtime can run on cuda here" in message
    assert "torch-cuda: no CUDA GPU visible to PyTorch here" in message and "onnxruntime-gpu" in message
    assert not (tmp_path / "runs").exists()


def test_gpu_energy_is_measured_by_nvml_or_not_at_all(tmp_path):
    gpu = FakeGpu("H100", 400_000, True, uuid="GPU-abc")
    with pytest.raises(GreencompressError, match="GPU energy is never estimated"):
        select_meter(
            EnergySpec(),
            nvml=fake_pynvml([], init_error="Driver Not Loaded"),
            powercap_root=tmp_path,
            gpu_uuid="GPU-abc",
        )
    alone, reason = select_meter(EnergySpec(), nvml=fake_pynvml([gpu]), powercap_root=tmp_path, gpu_uuid="GPU-abc")
    assert alone.method == "nvml-counter" and "the host CPU is not measured" in reason  # no RAPL: no estimate added


def test_with_rapl_the_host_cpu_is_a_second_measured_domain(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    gpu = FakeGpu("H100", 400_000, True, uuid="GPU-abc")
    meter, _ = select_meter(EnergySpec(), nvml=fake_pynvml([gpu]), powercap_root=tmp_path, gpu_uuid="GPU-abc")
    assert isinstance(meter, CombinedMeter) and meter.min_window_s >= 1.0
    meter.begin_window()
    time.sleep(0.5)
    reading = meter.end_window()
    assert set(reading.energy_j) == {"gpu0", "cpu"} and reading.measured and reading.method == "nvml-counter"
    assert reading.total_j == pytest.approx(reading.energy_j["gpu0"] + reading.energy_j["cpu"])
    description = meter.describe()
    assert description.domains == ("gpu0", "cpu") and any(
        "host cpu by rapl" in line for line in description.assumptions
    )


def test_measure_on_a_gpu_that_is_not_there_fails_before_the_block():
    import greencompress

    ran = []
    with pytest.raises(GreencompressError, match="PyTorch sees no CUDA GPU"):
        with greencompress.energy.measure(device="cuda"):
            ran.append(1)
    assert ran == []


@pytest.mark.slow
def test_power_limit_sweeps_need_a_gpu():
    from tests.test_energy_api import greencompress_cli

    result = greencompress_cli("bench", "resnet18", "--gpu-power-limits", "200,300")
    assert result.returncode == 2 and "--gpu-power-limits needs --device cuda" in result.stderr
    bad = greencompress_cli("bench", "resnet18", "--device", "cuda", "--gpu-power-limits", "200,x")
    assert bad.returncode == 2 and "expected watts separated by commas" in bad.stderr

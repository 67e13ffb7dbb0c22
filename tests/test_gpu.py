"""On a machine with an NVIDIA GPU (skipped cleanly elsewhere): GPU runners, NVML by UUID, and the check's helpers."""

from __future__ import annotations

import importlib.util
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import REPO

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here: the GPU paths run on a GPU machine")


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


def test_the_check_s_arithmetic_on_known_series():
    check = gpu_check_module()
    assert check.counter_vs_sampled(100.0, 75.0) == 0.75
    times = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    watts = [180.0, 120.0, 90.0, 72.0, 70.5, 69.8]  # cooling down towards 70 W
    assert check.settle_time_s(times, watts, rest_w=70.0) == 3.0  # from 72 W on: within 5% for good
    assert check.settle_time_s(times, [100.0] * 6, rest_w=70.0) is None
    report = {
        "gpu": "H100",
        "meter": "nvml-counter",
        "counter_vs_sampled": {"steady": {"counter_j": 100.0, "sampled_j": 99.0, "sampled_over_counter": 0.99}},
        "window_lengths": {
            "counter_update_period_s": 0.025,
            "0.5s": {"mean_w": 600.0, "ci95_half_width_pct": 4.1},
            "1s": {"mean_w": 600.0, "ci95_half_width_pct": 1.2},
        },
        "idle": {"failed": "RuntimeError('driver went away')"},
        "models": [
            {
                "model": "resnet50",
                "input": 224,
                "batch": 32,
                "variant": "fp16",
                "p50_ms": 4.0,
                "j_per_inference": 0.02,
                "method": "nvml-counter",
                "j_ratio": [0.5, 0.48, 0.52],
                "latency_ratio": [0.4, 0.38, 0.42],
            },
            {"model": "resnet50", "batch": 256, "skipped": "out of the time budget"},
        ],
        "power_limits": {
            "limits": [{"limit_w": 200.0, "j_per_matmul": 0.5, "ms_per_matmul": 3.0}],
            "restored_limit_w": 700.0,
        },
        "onnxruntime_gpu": {"skipped": "no CUDAExecutionProvider"},
        "seconds": 400.0,
    }
    table = check.markdown(report)
    row = "| resnet50 | 224 | 32 | fp16 | 4.000 | 0.02 | nvml-counter | 0.50x [0.48, 0.52] | 0.40x [0.38, 0.42] |"
    assert row in table
    assert "sampled/counter 0.990" in table and "steady load: sampled power within 5% of the counter" in table
    assert "shortest window with a half-width <= 3%: 1s" in table
    assert "- idle: failed: RuntimeError('driver went away')" in table  # a failed part says so; the rest still shows
    assert "| 200 | 0.5 | 3.000 |" in table and "limit restored to 700 W" in table
    assert "- onnxruntime_gpu: skipped: no CUDAExecutionProvider" in table


@GPU
def test_pytorch_on_the_gpu_in_each_precision_agrees_with_the_cpu():
    from greencompress.runtimes.base import RunnerSettings
    from greencompress.runtimes.pytorch import TorchRunner
    from greencompress.runtimes.pytorch_cuda import TorchCudaRunner

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    inputs = np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32)
    reference = TorchRunner(model)(inputs)
    for precision, tolerance in (("fp32", 1e-4), ("fp16", 2e-2), ("bf16", 6e-2)):
        runner = TorchCudaRunner(model, RunnerSettings(1, precision=precision))
        assert np.abs(runner(inputs) - reference).max() < tolerance, precision
        runner.prepare(inputs)()  # the timed call runs on the device copy


@GPU
def test_nvml_measures_the_gpu_torch_runs_on():
    from greencompress.measure.energy.nvml import NvmlMeter
    from greencompress.runtimes.device import resolve_device

    device = resolve_device("cuda")
    meter = NvmlMeter(device_uuids=[device.uuid])
    assert meter.identity()[next(iter(meter.handles))]["uuid"] == device.uuid
    meter.begin_window()
    a = torch.randn(4096, 4096, device="cuda")
    for _ in range(200):
        a @ a
    torch.cuda.synchronize()
    reading = meter.end_window()
    assert reading.total_j > 0 and reading.measured and reading.telemetry


@GPU
def test_a_block_measured_on_the_gpu_holds_the_work_it_queued():
    import greencompress

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    with greencompress.energy.measure(device="cuda") as idle:
        time.sleep(0.5)  # the GPU idle: the baseline
    with greencompress.energy.measure(device="cuda") as busy:
        for _ in range(300):
            a @ a  # queued, not waited for inside the block: measure() waits before closing the window
    assert busy.method == "nvml-counter" and busy.measured and set(busy.by_domain) >= {"gpu0"}
    assert busy.joules > 0 and busy.duration_s > 0
    assert busy.joules / busy.duration_s > idle.joules / idle.duration_s  # more power under load


@GPU
def test_fine_tuning_trains_on_the_gpu_where_there_is_one():
    from greencompress.compress.finetune import training_device

    assert training_device("auto").type == "cuda" and training_device("cpu").type == "cpu"

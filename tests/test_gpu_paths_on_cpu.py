"""The GPU path's pieces that need no GPU: FP16 export, where nodes ran, device-timed calls, the power-limit sweep."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from greencompress.measure.benchmark import BenchmarkSpec
from greencompress.measure.latency import run_window
from greencompress.models.inputs import ModelInputs
from greencompress.models.sources import resolve_callable
from greencompress.runtimes.export import convert_to_fp16, export_onnx, is_quantized
from greencompress.runtimes.onnxruntime_gpu import node_placement
from tests.conftest import RECIPES
from tests.measure.test_power_limits import nvml_with_limits


def test_fp16_export_halves_the_weights_keeps_fp32_io_and_predicts_like_fp32(tmp_path):
    import onnxruntime

    torch.manual_seed(0)
    model = resolve_callable(f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20")().eval()
    fp32 = export_onnx(model, ModelInputs.image((3, 32, 32)), tmp_path / "model.onnx", opset=18)
    fp16 = convert_to_fp16(fp32, tmp_path / "model.fp16.onnx")
    graph = onnx.load(str(fp16)).graph
    weights = [init for init in graph.initializer if len(init.dims) == 4]
    assert weights and all(init.data_type == onnx.TensorProto.FLOAT16 for init in weights)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # callers still pass float32
    assert fp16.stat().st_size < 0.6 * fp32.stat().st_size
    inputs = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)
    expected = model(torch.from_numpy(inputs)).detach().numpy()
    # ONNX Runtime's CPU provider runs the FP16 graph too (slowly): enough to check what the GPU would compute.
    session = onnxruntime.InferenceSession(str(fp16), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {graph.input[0].name: inputs})
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=0.05 * np.abs(expected).max())
    assert (logits.argmax(1) == expected.argmax(1)).all()
    assert not is_quantized(fp16)


def test_node_placement_counts_what_each_provider_ran():
    profile = [
        {"cat": "Session", "name": "model_run", "args": {}},
        {
            "cat": "Node",
            "name": "TensorrtExecutionProvider_TRTKernel_graph_0_kernel_time",
            "args": {"provider": "TensorrtExecutionProvider"},
        },
        {"cat": "Node", "name": "/q/QuantizeLinear_kernel_time", "args": {"provider": "CPUExecutionProvider"}},
        {"cat": "Node", "name": "/q/QuantizeLinear_fence_before", "args": {"provider": "CPUExecutionProvider"}},
    ]
    assert node_placement(json.dumps(profile)) == {"TensorrtExecutionProvider": 1, "CPUExecutionProvider": 1}


class DeviceTimed:
    """A runner whose prepared call reports its own duration, as CUDA events do."""

    def prepare(self, inputs):
        return lambda: 1_234_567


def test_a_window_records_the_device_s_own_time_when_the_call_returns_it():
    from greencompress.measure.energy.estimate import EstimateMeter

    window = run_window(DeviceTimed(), np.zeros((2, 3)), EstimateMeter(), 0.01, 5, 1.0)
    assert set(window.durations_ns) == {1_234_567} and len(window.durations_ns) >= 5


def test_power_limits_in_a_recipe_need_a_gpu_device():
    with pytest.raises(ValueError, match="gpu_power_limits needs device: cuda"):
        BenchmarkSpec(gpu_power_limits=[200, 300])


def test_the_sweep_measures_every_artifact_at_each_limit_and_restores_the_original(tmp_path):
    from greencompress.measure.energy.estimate import EstimateMeter
    from greencompress.models.data import DataSplits
    from greencompress.pipeline.measurement import sweep_power_limits
    from greencompress.pipeline.stages import StageStore

    nvml, gpu = nvml_with_limits()
    spec = BenchmarkSpec.model_construct(
        **{
            **BenchmarkSpec().model_dump(),
            "batch_sizes": [2],
            "windows": 2,
            "max_windows": 2,
            "window_s": 0.01,
            "min_iterations": 2,
            "warmup_iterations": 0,
            "gpu_power_limits": [300, 500],
        }
    )
    dataset = torch.utils.data.TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    data = DataSplits(dataset, dataset, None, 2, True, "zeros")
    runners = {"a": lambda x: x * 2, "b": lambda x: x + 1}
    rows = sweep_power_limits(
        runners, data, spec, EstimateMeter(), 0.0, StageStore(tmp_path, None), "key", gpu.uuid, nvml=nvml
    )
    assert [(r["limit_w"], r["artifact"], r["applied"]) for r in rows] == [
        (300, "a", True),
        (300, "b", True),
        (500, "a", True),
        (500, "b", True),
    ]
    assert gpu.history == [300_000, 700_000, 500_000, 700_000] and gpu.limit_mw == 700_000

"""int8 quantization with ONNX Runtime: real files, run by onnxruntime, smaller and close to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import TensorDataset

from greencompress.compress.quantize import (
    QuantizeConfig,
    quantize_onnx,
    resolve_reduce_range,
)
from greencompress.core.hardware import CpuInfo
from greencompress.models.inputs import ModelInputs
from greencompress.models.sources import resolve_callable
from greencompress.runtimes.export import export_onnx
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner
from tests.conftest import RECIPES


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory):
    torch.manual_seed(0)
    model = resolve_callable(f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20")().eval()
    return export_onnx(model, ModelInputs.image((3, 32, 32)), tmp_path_factory.mktemp("q") / "fp32.onnx", opset=18)


@pytest.fixture
def calibration():
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(40, 3, 32, 32, generator=generator), torch.zeros(40, dtype=torch.int64))


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_int8_model_is_smaller_runs_and_stays_close(method, fp32_model, calibration, tmp_path):
    config = QuantizeConfig(method=method, calibration_samples=24, reduce_range=False)
    result = quantize_onnx(fp32_model, tmp_path / "int8.onnx", config, calibration, batch_size=8)
    assert result.calibration_samples == (24 if method == "static" else 0)
    assert result.path.stat().st_size < 0.4 * fp32_model.stat().st_size
    operators = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert (
        ("QuantizeLinear" in operators)
        if method == "static"
        else ("ConvInteger" in operators or "DynamicQuantizeLinear" in operators)
    )
    inputs = calibration.tensors[0][:8].numpy()
    fp32, int8 = OnnxRuntimeRunner(fp32_model, 1)(inputs), OnnxRuntimeRunner(result.path, 1)(inputs)
    assert int8.shape == fp32.shape
    assert np.abs(int8 - fp32).max() < 0.25 * np.abs(fp32).max()


def test_calibration_samples_are_capped_by_the_split(fp32_model, calibration, tmp_path):
    result = quantize_onnx(
        fp32_model, tmp_path / "int8.onnx", QuantizeConfig(calibration_samples=1000), calibration, batch_size=16
    )
    assert result.calibration_samples == 40


def test_reduce_range_follows_vnni(monkeypatch):
    assert resolve_reduce_range(True) == (True, "set in the recipe")
    monkeypatch.setattr("greencompress.compress.quantize.cpu_info", lambda: CpuInfo("x", 2, ("avx512_vnni",)))
    assert resolve_reduce_range("auto")[0] is False
    monkeypatch.setattr("greencompress.compress.quantize.cpu_info", lambda: CpuInfo("x", 2, ("avx2",)))
    reduce, reason = resolve_reduce_range("auto")
    assert reduce is True and "lacks VNNI" in reason


def test_symmetric_int8_activations_for_tensorrt(tmp_path):
    """activation_type int8: signed activations with zero points of 0 (what TensorRT's int8 takes), still accurate."""
    import numpy as np
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn
    from torch.utils.data import TensorDataset

    from greencompress.compress.quantize import QuantizeConfig, quantize_onnx
    from greencompress.runtimes.export import export_onnx
    from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    images = torch.randn(64, 3, 16, 16)
    export_onnx(model, ModelInputs.image((3, 16, 16)), tmp_path / "fp32.onnx", 18)
    result = quantize_onnx(
        tmp_path / "fp32.onnx",
        tmp_path / "int8.onnx",
        QuantizeConfig(calibration_samples=64, activation_type="int8"),
        TensorDataset(images, torch.zeros(64, dtype=torch.int64)),
        32,
    )
    assert result.activation_type == "int8 (symmetric)"
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    zero_points = [
        numpy_helper.to_array(t)
        for t in graph.initializer
        if t.name.endswith("_zero_point") and "weight" not in t.name and "bias" not in t.name
    ]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)
    with torch.no_grad():
        expected = model(images).numpy()
    actual = OnnxRuntimeRunner(tmp_path / "int8.onnx", threads=1)(images.numpy())
    assert (actual.argmax(1) == expected.argmax(1)).mean() >= 0.9
    with pytest.raises(ValueError, match="needs activation_type: uint8"):
        QuantizeConfig(activation_type="int8", qat={"epochs": 1})

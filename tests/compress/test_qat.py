"""Quantization-aware fine-tuning: it simulates ONNX Runtime's own int8 rounding, and its int8 model keeps accuracy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn
from torch.utils.data import TensorDataset

from greencompress.compress.finetune import finetune
from greencompress.compress.qat import FakeQuantized, prepare, quantization_aware_finetune, strip
from greencompress.compress.quantize import quantize_onnx
from greencompress.data import digits_split_indices, digits_tensors
from greencompress.export import export_onnx
from greencompress.recipe import FinetuneConfig, QuantizeConfig
from greencompress.runtime import OnnxRuntimeRunner


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


@pytest.fixture(scope="module")
def digits():
    """Real handwritten digits at 8x8: (train set, test images, test labels)."""
    images, labels = digits_tensors(8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    train, test = digits_split_indices(labels, 0.2)
    return TensorDataset(images[train], labels[train]), images[test], labels[test]


def onnx_top1(path, images, labels) -> float:
    logits = OnnxRuntimeRunner(path, threads=1)(images.numpy())
    return float((logits.argmax(1) == labels.numpy()).mean())


@pytest.mark.parametrize("reduce_range", [False, True])
def test_weight_rounding_matches_onnx_runtime(tmp_path, digits, reduce_range):
    """The fake-quantized weight of a conv equals what ONNX Runtime stores in the int8 model, dequantized."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    torch.manual_seed(1)
    export_onnx(model.eval(), (3, 8, 8), tmp_path / "fp32.onnx", 18)
    config = QuantizeConfig(calibration_samples=64, reduce_range=reduce_range)
    quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", config, digits[0], 32)

    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    dequantize = next(node for node in graph.node if node.op_type == "DequantizeLinear"
                      and initializers.get(node.input[0]) is not None and initializers[node.input[0]].ndim == 4)
    stored, scale = initializers[dequantize.input[0]], initializers[dequantize.input[1]]
    from_onnx_runtime = stored.astype(np.float32) * scale.reshape(-1, 1, 1, 1)

    simulated = FakeQuantized(model[0], reduce_range)._fake_quantize_weight(model[0].weight).detach().numpy()
    np.testing.assert_allclose(simulated, from_onnx_runtime, rtol=0, atol=1e-6)
    assert np.abs(stored).max() <= (64 if reduce_range else 127)


def test_prepare_and_strip_wrap_every_layer_and_keep_the_weights():
    model = small_cnn()
    prepared = prepare(model, reduce_range=False)
    assert sum(isinstance(m, FakeQuantized) for m in prepared.modules()) == 3
    assert not any(isinstance(m, FakeQuantized) for m in model.modules())  # the input is not changed
    stripped = strip(prepared)
    assert not any(isinstance(m, FakeQuantized) for m in stripped.modules())
    for (name, value), (_, original) in zip(stripped.state_dict().items(), model.state_dict().items()):
        assert torch.equal(value, original), name


def test_qat_int8_model_keeps_the_accuracy_it_trained_for(tmp_path, digits):
    """On real digits, 7-bit weights: the int8 ONNX model after QAT is at least as accurate as post-training int8."""
    train_set, test_images, test_labels = digits
    fp32 = small_cnn()
    torch.manual_seed(0)
    float_model = finetune(fp32, train_set, FinetuneConfig(epochs=6, batch_size=32, learning_rate=0.05), seed=0,
                           checkpoint_dir=tmp_path / "float").model  # a float model first, from scratch
    export_onnx(float_model, (3, 8, 8), tmp_path / "float.onnx", 18)
    config = QuantizeConfig(calibration_samples=256, reduce_range=True)
    quantize_onnx(tmp_path / "float.onnx", tmp_path / "ptq.onnx", config, train_set, 64)

    qat = quantization_aware_finetune(float_model, train_set, FinetuneConfig(epochs=2, batch_size=32,
                                      learning_rate=0.001), reduce_range=True, seed=0, checkpoint_dir=tmp_path / "qat")
    assert not any(isinstance(m, FakeQuantized) for m in qat.model.modules()) and len(qat.history) == 2
    export_onnx(qat.model, (3, 8, 8), tmp_path / "qat_fp32.onnx", 18)
    quantize_onnx(tmp_path / "qat_fp32.onnx", tmp_path / "qat.onnx", config, train_set, 64)

    ptq_top1 = onnx_top1(tmp_path / "ptq.onnx", test_images, test_labels)
    qat_top1 = onnx_top1(tmp_path / "qat.onnx", test_images, test_labels)
    assert ptq_top1 > 0.8  # a real model, not a coin toss
    assert qat_top1 >= ptq_top1 - 0.01  # 0.01 is under 4 of the 360 test images

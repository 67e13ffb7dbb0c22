"""ONNX export and the parity check, on a real model run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from greencompress.core.errors import ParityError
from greencompress.models.inputs import ModelInputs
from greencompress.models.sources import resolve_callable
from greencompress.runtimes.export import check_parity, export_onnx
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner
from greencompress.runtimes.pytorch import TorchRunner
from tests.conftest import RECIPES


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = resolve_callable(f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20")().eval()
    path = export_onnx(
        model, ModelInputs.image((3, 32, 32)), tmp_path_factory.mktemp("export") / "model.onnx", opset=18
    )
    return model, path


def real_batches(count=2, size=8):
    rng = np.random.default_rng(0)
    return [(rng.normal(size=(size, 3, 32, 32)).astype(np.float32), None) for _ in range(count)]


def test_export_is_one_self_contained_file_with_a_dynamic_batch(exported):
    _, path = exported
    graph = onnx.load(str(path)).graph
    assert not list(path.parent.glob("*.data"))
    assert graph.input[0].name == "input" and graph.output[0].name == "logits"
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic, not a fixed size
    onnx.checker.check_model(str(path))


def test_parity_holds_and_is_reported(exported):
    model, path = exported
    parity = check_parity(TorchRunner(model), OnnxRuntimeRunner(path, threads=1), real_batches(), 1e-3, 0.99)
    assert parity.samples == 16 and parity.max_abs_diff < 1e-3 and parity.top1_agreement == 1.0
    single = OnnxRuntimeRunner(path, threads=1)(real_batches(1, 1)[0][0])
    assert single.shape == (1, 10)


def test_broken_parity_fails_loudly(exported):
    model, path = exported
    onnx_runner = OnnxRuntimeRunner(path, threads=1)

    def shuffled(inputs):
        return onnx_runner(inputs)[:, ::-1].copy()

    with pytest.raises(ParityError, match="does not match PyTorch on 16 real inputs"):
        check_parity(TorchRunner(model), shuffled, real_batches(), 1e-3, 0.99)

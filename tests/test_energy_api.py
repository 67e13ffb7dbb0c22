"""`greencompress.energy.measure()` around any code, and `greencompress bench` without a recipe."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import greencompress
from greencompress.bench import bench
from greencompress.measure.benchmark import BenchmarkSpec
from greencompress.measure.energy import EnergySpec
from greencompress.models.inputs import ModelInputs
from greencompress.models.sources import resolve_callable
from greencompress.runtimes.export import export_onnx
from tests.conftest import RECIPES
from tests.test_cli import greencompress as greencompress_cli


def test_measure_any_block_of_code():
    with greencompress.energy.measure(meter="estimate", cpu_watts_per_core=10.0) as m:
        end = time.process_time() + 0.1
        while time.process_time() < end:
            pass
    assert m.method == "estimate" and m.measured is False
    assert m.joules == m.by_domain["cpu"] and 0.8 <= m.joules <= 2.0  # ~0.1 CPU-s x 10 W
    assert m.duration_s >= 0.1 and m.uncertainty.high_fraction >= 1.0
    assert "estimate" in m.reason


@pytest.mark.slow
def test_bench_an_onnx_file_with_a_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    model = resolve_callable(f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20")().eval()
    path = export_onnx(model, ModelInputs.image((3, 32, 32)), tmp_path / "resnet20.onnx", opset=18)
    spec = BenchmarkSpec(batch_sizes=[1, 4], window_s=0.1, windows=2, max_windows=2, warmup_iterations=2, threads=1)
    result = bench(str(path), input_size=32, benchmark=spec, energy=EnergySpec(meter="estimate", idle_s=0))
    assert result.runtime == "onnxruntime" and result.input_shape == (3, 32, 32)
    assert [b.latency.batch_size for b in result.benchmarks] == [1, 4]
    for benchmark in result.benchmarks:
        assert benchmark.energy.windows == 2 and benchmark.energy.method == "estimate"
        assert benchmark.latency.p50_ms > 0 and benchmark.energy.joules_per_inference > 0


@pytest.mark.slow
def test_bench_runs_the_same_onnx_file_on_openvino(tmp_path):
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    model = resolve_callable(f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20")().eval()
    path = export_onnx(model, ModelInputs.image((3, 32, 32)), tmp_path / "resnet20.onnx", opset=18)
    spec = BenchmarkSpec(batch_sizes=[1, 4], window_s=0.1, windows=2, max_windows=2, warmup_iterations=2, threads=1)
    result = bench(
        str(path), input_size=32, benchmark=spec, energy=EnergySpec(meter="estimate", idle_s=0), runtime="openvino"
    )
    assert result.runtime == "openvino" and [b.latency.batch_size for b in result.benchmarks] == [1, 4]
    assert all(len(b.latency.window_p50_ms) == 2 for b in result.benchmarks)


@pytest.mark.slow
def test_bench_measures_every_installed_runtime_side_by_side_unless_one_is_named(tmp_path):
    from greencompress.runtimes import RUNTIMES

    torch.manual_seed(0)
    model = resolve_callable(f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20")().eval()
    path = export_onnx(model, ModelInputs.image((3, 32, 32)), tmp_path / "resnet20.onnx", opset=18)
    spec = BenchmarkSpec(batch_sizes=[2], window_s=0.05, windows=2, max_windows=2, warmup_iterations=1, threads=1)
    result = bench(str(path), input_size=32, benchmark=spec, energy=EnergySpec(meter="estimate", idle_s=0))
    installed = [s.name for s in RUNTIMES if s.runs == "onnx" and s.in_auto and s.unavailable() is None]
    assert list(result.by_runtime) == installed and {"onnxruntime", "openvino"} <= set(installed)
    assert all(len(benches) == 1 and benches[0].energy.windows == 2 for benches in result.by_runtime.values())
    named = bench(
        str(path), input_size=32, benchmark=spec, energy=EnergySpec(meter="estimate", idle_s=0), runtime="onnxruntime"
    )
    assert list(named.by_runtime) == ["onnxruntime"]


@pytest.mark.slow
def test_bench_rejects_an_unknown_model_with_a_message():
    result = greencompress_cli("bench", "resnt18")
    assert result.returncode == 2 and "neither an .onnx file nor a torchvision" in result.stderr
    assert "Traceback" not in result.stderr


def test_meters_command_reports_each_domain_with_reasons():
    result = greencompress_cli("meters")
    assert result.returncode == 0
    assert "cpu:" in result.stdout and "gpu:" in result.stdout
    assert "rapl:" in result.stdout and "nvml-counter:" in result.stdout


def token_model(path, vocabulary: int = 50, hidden: int = 8, classes: int = 3):
    """A real ONNX file shaped like a transformer classifier's: int64 input_ids, attention_mask and token_type_ids
    of [batch, sequence], word and token-type embeddings, masked mean pooling, a linear head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    tables = [
        numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
        for name, shape in (("words", (vocabulary, hidden)), ("types", (2, hidden)), ("head", (hidden, classes)))
    ]
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["words", "input_ids"], ["w"]),
        helper.make_node("Gather", ["types", "token_type_ids"], ["t"]),
        helper.make_node("Add", ["w", "t"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["masked"]),
        helper.make_node("ReduceMean", ["masked"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["logits"]),
    ]
    token = [
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        token,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [*tables, axes],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bench_feeds_every_input_a_transformer_file_declares(tmp_path):
    from greencompress.bench import bench
    from greencompress.measure.benchmark import BenchmarkSpec
    from greencompress.measure.energy import EnergySpec

    path = token_model(tmp_path / "tokens.onnx")
    spec = BenchmarkSpec(batch_sizes=[1, 4], window_s=0.01, windows=2, max_windows=2, min_iterations=3, threads=1)
    result = bench(str(path), 32, spec, EnergySpec(meter="estimate", idle_s=0.0), sequence_length=16)
    assert result.input_shape == {"input_ids": (16,), "attention_mask": (16,), "token_type_ids": (16,)}
    assert set(result.by_runtime) >= {"onnxruntime", "openvino"}  # OpenVINO runs the same file, every input fed
    for benchmarks in result.by_runtime.values():
        assert [b.latency.batch_size for b in benchmarks] == [1, 4]
        assert benchmarks[1].energy.inferences % 4 == 0  # whole batches of 4 counted as 4 inferences each


def test_bench_takes_a_hugging_face_folder_as_it_takes_an_onnx_file(tmp_path):
    from tests.models.test_huggingface import tiny_bert

    folder = tiny_bert(tmp_path / "tiny-bert")
    spec = BenchmarkSpec(batch_sizes=[2], window_s=0.01, windows=2, max_windows=2, min_iterations=3, threads=1)
    result = bench(str(folder), 32, spec, EnergySpec(meter="estimate", idle_s=0.0), sequence_length=12)
    # Exported as a run exports it: the tokenizer's inputs, every file runtime installed here.
    assert result.input_shape == {"input_ids": (12,), "attention_mask": (12,), "token_type_ids": (12,)}
    assert set(result.by_runtime) >= {"onnxruntime", "openvino"}
    assert all(b.latency.p50_ms > 0 for benchmarks in result.by_runtime.values() for b in benchmarks)
    # A folder that is neither a model folder nor a deploy folder is named as such.
    with pytest.raises(greencompress.core.errors.GreencompressError, match="no config.json.*no onnx/model.onnx"):
        bench(str(tmp_path), 32, spec, EnergySpec(meter="estimate", idle_s=0.0))

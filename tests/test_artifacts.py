"""Which artifacts a run measures: runtimes, bf16 where the CPU has it (flags faked where the CPU is read), threads."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from greencompress.compress.technique import TorchModel
from greencompress.core.hardware import CpuInfo, physical_cores_allowed
from greencompress.measure.benchmark import BenchmarkSpec
from greencompress.models.inputs import ModelInputs
from greencompress.pipeline.artifacts import Made, plan_artifacts
from greencompress.runtimes import RUNTIMES

AMX = CpuInfo("Xeon with AMX", 2, ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"))
AVX2 = CpuInfo("EPYC with AVX2", 2, ("avx2", "fma"))


def onnx_file(path: Path, weights: int) -> Path:
    """A real ONNX file: y = x + w, w an FP32 initializer of `weights` elements."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones(weights, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [weights])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [weights])],
        [w],
    )
    onnx.save(helper.make_model(graph), str(path))
    return path


def made(tmp_path: Path) -> list[Made]:
    model = TorchModel(nn.Linear(2, 2))
    files = {name: onnx_file(tmp_path / name, 1000) for name in ("model_fp32.onnx", "model_int8.onnx")}
    return [
        Made(model, None, "fp32", (), (), 6, 4, "k0"),
        Made(model, files["model_fp32.onnx"], "fp32", (), (), 6, 4, "k1"),
        Made(model, files["model_int8.onnx"], "int8", (), ("quantize",), 6, 4, "k2"),
    ]


@pytest.mark.parametrize("cpu, expected", [(AMX, True), (AVX2, False)], ids=["amx", "avx2-only"])
def test_bf16_artifacts_exist_only_where_the_cpu_has_a_bf16_unit(tmp_path, cpu, expected):
    bf16, reason = BenchmarkSpec(runtimes=["onnxruntime", "openvino"], threads=1).bf16_decision(cpu)
    assert bf16 is expected
    assert ("amx_bf16 and avx512_bf16" in reason) if expected else ("neither AMX-BF16 nor AVX512_BF16" in reason)
    names = list(plan_artifacts(made(tmp_path), ["onnxruntime", "openvino"], ("bf16",) if bf16 else (), None))
    base = ["torch-fp32", "onnxruntime-fp32", "onnxruntime-int8", "openvino-fp32", "openvino-int8"]
    if expected:  # PyTorch autocast and OpenVINO's bf16 hint, on the FP32 models only; ONNX Runtime has no bf16 path
        assert names == [
            "torch-fp32",
            "torch-bf16",
            "onnxruntime-fp32",
            "onnxruntime-int8",
            "openvino-fp32",
            "openvino-int8",
            "openvino-bf16",
        ]
    else:
        assert names == base


def test_a_bf16_artifact_runs_the_fp32_file_and_carries_its_own_precision(tmp_path):
    artifacts = plan_artifacts(made(tmp_path), ["onnxruntime", "openvino"], ("bf16",), None)
    artifact, source = artifacts["openvino-bf16"]
    assert source.name == "model_fp32.onnx" and artifact.precision == "bf16" and artifact.file_techniques == ()
    forced, reason = BenchmarkSpec(threads=1, bf16=True).bf16_decision(AVX2)
    assert forced and "benchmark.bf16: true in the recipe" in reason


def test_a_bf16_artifact_is_the_size_of_its_weights_at_two_bytes(tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(bytes(100))
    artifacts = plan_artifacts(made(tmp_path), ["openvino"], ("bf16",), checkpoint)
    fp32_bytes = (tmp_path / "model_fp32.onnx").stat().st_size
    assert artifacts["openvino-fp32"][0].size_bytes == fp32_bytes and artifacts["torch-fp32"][0].size_bytes == 100
    assert artifacts["openvino-bf16"][0].size_bytes == fp32_bytes - 2000  # 1,000 FP32 weights at 2 bytes, not 4
    assert artifacts["torch-bf16"][0].size_bytes == 100 - 2 * 6  # nn.Linear(2, 2): 6 FP32 parameters


def test_bf16_runs_and_stays_close_to_fp32_where_the_cpu_has_it(tmp_path):
    import numpy as np
    import torch

    from greencompress.core.hardware import cpu_info
    from greencompress.runtimes.base import RunnerSettings
    from greencompress.runtimes.export import export_onnx

    if not cpu_info().has_bf16:
        pytest.skip("this CPU has no bf16 unit: bf16 artifacts are not made here (the test above checks that)")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    export_onnx(model, ModelInputs.image((3, 16, 16)), tmp_path / "m.onnx", 18)
    inputs = np.random.default_rng(0).standard_normal((4, 3, 16, 16), dtype=np.float32)
    for runtime, source in (("openvino", tmp_path / "m.onnx"), ("torch", model)):
        spec = RUNTIMES.get(runtime)
        fp32 = spec.runner(source, RunnerSettings(1))(inputs)
        bf16 = spec.runner(source, RunnerSettings(1, precision="bf16"))(inputs)
        assert bf16.dtype == np.float32 and 0 < np.abs(bf16 - fp32).max() < 0.05, runtime  # rounded, not broken


def test_threads_auto_counts_physical_cores_in_the_affinity_mask(tmp_path):
    for cpu, (package, core) in {0: (0, 0), 1: (0, 0), 2: (0, 1), 3: (0, 1)}.items():  # two cores with SMT
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(f"{package}\n")
        (topology / "core_id").write_text(f"{core}\n")
    assert physical_cores_allowed(tmp_path, allowed=(0, 1, 2, 3)) == 2  # 4 logical CPUs, 2 cores
    assert physical_cores_allowed(tmp_path, allowed=(0, 1)) == 1  # pinned to one core's two siblings
    assert physical_cores_allowed(tmp_path / "hidden", allowed=(0, 1, 2)) == 3  # no topology: logical CPUs
    assert BenchmarkSpec().threads == physical_cores_allowed() and BenchmarkSpec(threads=3).threads == 3
    with pytest.raises(ValueError, match="threads must be >= 1 or auto"):
        BenchmarkSpec(threads=0)


def test_runtimes_auto_takes_every_installed_runtime():
    expected = [
        "onnxruntime",
        *[spec.name for spec in RUNTIMES if spec.in_auto and spec.name != "onnxruntime" and spec.unavailable() is None],
    ]
    assert BenchmarkSpec().runtimes == expected and "torch" not in expected
    assert "openvino" in expected  # in the main install now

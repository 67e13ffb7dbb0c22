"""`greencompress bench`: latency and energy of one ONNX file (ONNX Runtime or OpenVINO) or torchvision model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greencompress.errors import GreencompressError
from greencompress.measure.benchmark import (
    Benchmark,
    BenchmarkSpec,
    IdleBaseline,
    benchmark_interleaved,
    measure_idle,
)
from greencompress.measure.energy import EnergySpec, MeterDescription, select_meter
from greencompress.registry import UnknownName
from greencompress.runtime import RUNTIMES, RuntimeSpec, set_threads


@dataclass(frozen=True)
class BenchResult:
    """What `bench` measured: one Benchmark per batch size, on which runtime and with which meter."""

    model: str
    runtime: str
    input_shape: tuple[int, int, int]
    meter: MeterDescription
    meter_reason: str
    idle: IdleBaseline
    benchmarks: list[Benchmark]


def bench(model: str, input_size: int, benchmark: BenchmarkSpec, energy: EnergySpec, seed: int = 0,
          progress=None, runtime: str | None = None) -> BenchResult:
    """Benchmark `model`: an .onnx file on `runtime` (default onnxruntime), or a torchvision model name with random
    weights on a runtime that runs PyTorch models (default torch)."""
    set_threads(benchmark.threads)
    runner, runtime, input_shape = _runner(model, input_size, benchmark, runtime)
    meter, reason = select_meter(energy)
    idle = measure_idle(meter, energy.idle_s)
    rng = np.random.default_rng(seed)
    results = []
    for batch_size in benchmark.batch_sizes:
        inputs = rng.standard_normal((batch_size, *input_shape), dtype=np.float32)
        results.append(benchmark_interleaved({model: runner}, inputs, benchmark, meter, idle, progress)[model])
    return BenchResult(model, runtime, input_shape, meter.describe(), reason, idle, results)


def _runner(model: str, input_size: int, benchmark: BenchmarkSpec, runtime: str | None):
    if model.endswith(".onnx"):
        import onnx

        spec = _runtime(runtime or "onnxruntime", "onnx", f"{model} is an ONNX file")
        path = Path(model)
        if not path.is_file():
            raise GreencompressError(f"{path}: ONNX file not found")
        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1:]
        # Fixed dimensions come from the file; symbolic ones from --input-size (3 channels).
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else (3 if index == 0 else input_size)
                      for index, dim in enumerate(dims))
        return spec.runner(path, benchmark.runner_settings), spec.name, shape
    import torchvision

    if model not in torchvision.models.list_models(module=torchvision.models):
        raise GreencompressError(f"{model!r} is neither an .onnx file nor a torchvision classification model name")
    spec = _runtime(runtime or "torch", "torch", f"{model!r} is a torchvision name")
    network = torchvision.models.get_model(model, weights=None).eval()
    return spec.runner(network, benchmark.runner_settings), spec.name, (3, input_size, input_size)


def _runtime(name: str, runs: str, what: str) -> RuntimeSpec:
    try:
        spec = RUNTIMES.get(name)
    except UnknownName as error:
        raise GreencompressError(f"--runtime: {error}") from None
    if spec.runs != runs:
        kind = "an exported .onnx file" if spec.runs == "onnx" else "a PyTorch model"
        raise GreencompressError(f"--runtime {name} runs {kind}; {what}")
    return spec

"""`greencompress bench`: latency and energy of one ONNX file (ONNX Runtime or OpenVINO) or torchvision model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from greencompress.errors import GreencompressError
from greencompress.measure.benchmark import Benchmark, IdleBaseline, benchmark_interleaved, measure_idle
from greencompress.measure.energy import MeterDescription, select_meter
from greencompress.recipe import BenchmarkSpec, EnergySpec
from greencompress.runtime import OnnxRuntimeRunner, OpenVinoRunner, TorchRunner, set_threads


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
          progress=None, runtime: str = "onnxruntime") -> BenchResult:
    """Benchmark `model` (an .onnx file on `runtime`, or a torchvision model name with random weights)."""
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


def _runner(model: str, input_size: int, benchmark: BenchmarkSpec, runtime: str):
    if model.endswith(".onnx"):
        import onnx

        path = Path(model)
        if not path.is_file():
            raise GreencompressError(f"{path}: ONNX file not found")
        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1:]
        # Fixed dimensions come from the file; symbolic ones from --input-size (3 channels).
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else (3 if index == 0 else input_size)
                      for index, dim in enumerate(dims))
        runner = (OpenVinoRunner(path, benchmark.threads) if runtime == "openvino"
                  else OnnxRuntimeRunner(path, benchmark.threads, benchmark.allow_spinning))
        return runner, runtime, shape
    import torchvision

    if model not in torchvision.models.list_models(module=torchvision.models):
        raise GreencompressError(f"{model!r} is neither an .onnx file nor a torchvision classification model name")
    if runtime != "onnxruntime":
        raise GreencompressError(f"--runtime {runtime} runs an exported .onnx file; {model!r} is a torchvision name")
    return TorchRunner(torchvision.models.get_model(model, weights=None).eval()), "torch", (3, input_size, input_size)

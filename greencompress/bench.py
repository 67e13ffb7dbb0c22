"""`greencompress bench`: latency and energy of one ONNX file (on every installed runtime) or torchvision model."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from greencompress.core.errors import GreencompressError
from greencompress.core.registry import UnknownName
from greencompress.measure.benchmark import (
    Benchmark,
    BenchmarkSpec,
    IdleBaseline,
    benchmark_interleaved,
    measure_idle,
)
from greencompress.measure.energy import EnergySpec, MeterDescription, select_meter
from greencompress.measure.energy.power_limits import PowerLimit, gpu_power_limit
from greencompress.runtimes import RUNTIMES
from greencompress.runtimes.base import RuntimeSpec
from greencompress.runtimes.device import Device, resolve_device
from greencompress.runtimes.pytorch import set_threads


@dataclass(frozen=True)
class BenchResult:
    """What `bench` measured: per runtime, one Benchmark per batch size, all in the same interleaved rounds."""

    model: str
    input_shape: tuple[int, int, int]
    meter: MeterDescription
    meter_reason: str
    idle: IdleBaseline
    by_runtime: dict[str, list[Benchmark]]
    # With --gpu-power-limits: per limit asked for, what ran (applied or why not) and its measurements.
    by_power_limit: tuple[tuple[PowerLimit, dict[str, list[Benchmark]]], ...] = ()

    @property
    def runtime(self) -> str:
        """The first runtime measured (the only one with --runtime)."""
        return next(iter(self.by_runtime))

    @property
    def benchmarks(self) -> list[Benchmark]:
        return self.by_runtime[self.runtime]


def bench(model: str, input_size: int, benchmark: BenchmarkSpec, energy: EnergySpec, seed: int = 0,
          progress=None, runtime: str | None = None, power_limits_w: list[float] | None = None) -> BenchResult:
    """Benchmark `model`: an .onnx file on `runtime`, or on every installed runtime that runs files when None; or a
    torchvision model name with random weights on a runtime that runs PyTorch models (default torch).

    `power_limits_w` (on a GPU) measures everything again at each GPU power limit, restoring the original after.
    """
    set_threads(benchmark.threads)
    device = resolve_device(benchmark.device)
    if power_limits_w and device.kind != "cuda":
        raise GreencompressError("--gpu-power-limits needs --device cuda (a GPU whose limit NVML can set)")
    runners, input_shape = _runners(model, input_size, benchmark, runtime, device)
    meter, reason = select_meter(energy, gpu_uuid=device.uuid if device.kind == "cuda" else None)
    idle = measure_idle(meter, energy.idle_s)

    def measure_all() -> dict[str, list[Benchmark]]:
        rng = np.random.default_rng(seed)
        by_runtime: dict[str, list[Benchmark]] = {name: [] for name in runners}
        for batch_size in benchmark.batch_sizes:
            inputs = rng.standard_normal((batch_size, *input_shape), dtype=np.float32)
            for name, measured in benchmark_interleaved(runners, inputs, benchmark, meter, idle, progress).items():
                by_runtime[name].append(measured)
        return by_runtime

    by_limit = []
    if power_limits_w:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByUUID(device.uuid.encode())
        for watts in power_limits_w:
            with gpu_power_limit(pynvml, handle, watts) as limit:
                by_limit.append((limit, measure_all()))
    by_runtime = by_limit[-1][1] if by_limit else measure_all()
    return BenchResult(model, input_shape, meter.describe(), reason, idle, by_runtime, tuple(by_limit))


def _runners(model: str, input_size: int, benchmark: BenchmarkSpec, runtime: str | None, device: Device):
    """{runtime name: runner} and the input shape of one sample, on `device`."""
    settings = replace(benchmark.runner_settings, device_index=device.index or 0)
    if model.endswith(".onnx"):
        import onnx

        names = [runtime] if runtime else [spec.name for spec in RUNTIMES if spec.runs == "onnx" and spec.in_auto
                                           and spec.device == device.kind and spec.unavailable() is None]
        specs = [_runtime(name, "onnx", f"{model} is an ONNX file") for name in names]
        path = Path(model)
        if not path.is_file():
            raise GreencompressError(f"{path}: ONNX file not found")
        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1:]
        # Fixed dimensions come from the file; symbolic ones from --input-size (3 channels).
        shape = tuple(dim.dim_value if dim.HasField("dim_value") else (3 if index == 0 else input_size)
                      for index, dim in enumerate(dims))
        return {spec.name: spec.runner(path, settings) for spec in specs}, shape
    import torchvision

    if model not in torchvision.models.list_models(module=torchvision.models):
        raise GreencompressError(f"{model!r} is neither an .onnx file nor a torchvision classification model name")
    default = "torch" if device.kind == "cpu" else "torch-cuda"
    spec = _runtime(runtime or default, "torch", f"{model!r} is a torchvision name")
    network = torchvision.models.get_model(model, weights=None).eval()
    return {spec.name: spec.runner(network, settings)}, (3, input_size, input_size)


def _runtime(name: str, runs: str, what: str) -> RuntimeSpec:
    try:
        spec = RUNTIMES.get(name)
    except UnknownName as error:
        raise GreencompressError(f"--runtime: {error}") from None
    if spec.runs != runs:
        kind = "an exported .onnx file" if spec.runs == "onnx" else "a PyTorch model"
        raise GreencompressError(f"--runtime {name} runs {kind}; {what}")
    return spec

"""`greencompress bench`: latency and energy of one ONNX file (on every installed runtime) or torchvision model."""

from __future__ import annotations

import tempfile
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
    input_shape: tuple[int, ...] | dict[str, tuple[int, ...]]  # one sample's shape, or each named input's
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


def bench(
    model: str,
    input_size: int,
    benchmark: BenchmarkSpec,
    energy: EnergySpec,
    seed: int = 0,
    progress=None,
    runtime: str | None = None,
    power_limits_w: list[float] | None = None,
    sequence_length: int = 128,
) -> BenchResult:
    """Benchmark `model`: an .onnx file (or a run's deploy folder, or a Hugging Face model folder, exported as a run
    exports it) on `runtime`, or on every installed runtime that runs files when None; or a torchvision model name
    with random weights on a runtime that runs PyTorch models (default torch).

    A file's inputs are made from what it declares: float inputs as random images (`input_size` for symbolic
    height and width), integer inputs as tokens of `sequence_length` (ids below the vocabulary the file's embedding
    holds, an attention mask of ones, token types of zeros), every input the file declares fed.

    `power_limits_w` (on a GPU) measures everything again at each GPU power limit, restoring the original after.
    """
    set_threads(benchmark.threads)
    device = resolve_device(benchmark.device)
    if power_limits_w and device.kind != "cuda":
        raise GreencompressError("--gpu-power-limits needs --device cuda (a GPU whose limit NVML can set)")
    with tempfile.TemporaryDirectory(prefix="greencompress-bench-") as scratch:
        return _bench(
            model,
            input_size,
            benchmark,
            energy,
            seed,
            progress,
            runtime,
            power_limits_w,
            sequence_length,
            device,
            Path(scratch),
        )


def _bench(
    model, input_size, benchmark, energy, seed, progress, runtime, power_limits_w, sequence_length, device, scratch
) -> BenchResult:
    measured = _as_file_or_name(model, scratch)
    runners, input_shape, make_batch = _runners(measured, input_size, benchmark, runtime, device, sequence_length)
    meter, reason = select_meter(energy, gpu_uuid=device.uuid if device.kind == "cuda" else None)
    idle = measure_idle(meter, energy.idle_s)

    def measure_all() -> dict[str, list[Benchmark]]:
        rng = np.random.default_rng(seed)
        by_runtime: dict[str, list[Benchmark]] = {name: [] for name in runners}
        for batch_size in benchmark.batch_sizes:
            inputs = make_batch(batch_size, rng)
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


def _as_file_or_name(model: str, scratch: Path) -> str:
    """What `bench` measures for MODEL: a deploy folder's ONNX file; a Hugging Face folder exported to a portable
    ONNX file in `scratch` (as a run exports it, its task read from its config); else MODEL as given."""
    folder = Path(model)
    if not folder.is_dir():
        return model
    if (folder / "onnx" / "model.onnx").is_file():  # a run's deploy folder (pipeline/deploy.py)
        return str(folder / "onnx" / "model.onnx")
    if not (folder / "config.json").is_file():
        raise GreencompressError(
            f"{folder}: a folder, but neither a Hugging Face model folder (no config.json) nor a deploy folder "
            f"(no onnx/model.onnx)"
        )
    import json

    from greencompress.models.huggingface import task_of_config
    from greencompress.models.sources import ModelSpec
    from greencompress.models.tasks import task_named
    from greencompress.runtimes.export import export_onnx

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except ValueError as error:
        raise GreencompressError(f"{folder / 'config.json'}: not valid JSON: {error}") from None
    task = task_named(task_of_config(config))
    loaded = task.load(ModelSpec(source="huggingface", path=folder, task=task.name))
    return str(export_onnx(loaded.module, loaded.inputs, scratch / "model.onnx", opset=18))


def _runners(
    model: str,
    input_size: int,
    benchmark: BenchmarkSpec,
    runtime: str | None,
    device: Device,
    sequence_length: int = 128,
):
    """{runtime name: runner}, one sample's input shape (per input name for a file with several), and
    `make_batch(batch_size, rng)`, which makes a batch of inputs for them; on `device`."""
    settings = replace(benchmark.runner_settings, device_index=device.index or 0)
    if model.endswith(".onnx"):
        import onnx

        names = (
            [runtime]
            if runtime
            else [
                spec.name
                for spec in RUNTIMES
                if spec.runs == "onnx" and spec.in_auto and spec.device == device.kind and spec.unavailable() is None
            ]
        )
        specs = [_runtime(name, "onnx", f"{model} is an ONNX file") for name in names]
        path = Path(model)
        if not path.is_file():
            raise GreencompressError(f"{path}: ONNX file not found")
        graph = onnx.load(str(path), load_external_data=False).graph
        weights = {tensor.name for tensor in graph.initializer}
        inputs = [tensor for tensor in graph.input if tensor.name not in weights]
        if len(inputs) == 1 and inputs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            dims = inputs[0].type.tensor_type.shape.dim[1:]
            # Fixed dimensions come from the file; symbolic ones from --input-size (3 channels).
            shape = tuple(
                dim.dim_value if dim.HasField("dim_value") else (3 if index == 0 else input_size)
                for index, dim in enumerate(dims)
            )
            make_batch = _image_batches(shape)
        else:
            shape = {
                tensor.name: tuple(
                    dim.dim_value if dim.HasField("dim_value") else sequence_length
                    for dim in tensor.type.tensor_type.shape.dim[1:]
                )
                for tensor in inputs
            }
            make_batch = _token_batches(path, graph, inputs, shape)
        return {spec.name: spec.runner(path, settings) for spec in specs}, shape, make_batch
    import torchvision

    if model not in torchvision.models.list_models(module=torchvision.models):
        raise GreencompressError(f"{model!r} is neither an .onnx file nor a torchvision classification model name")
    default = "torch" if device.kind == "cpu" else "torch-cuda"
    spec = _runtime(runtime or default, "torch", f"{model!r} is a torchvision name")
    network = torchvision.models.get_model(model, weights=None).eval()
    shape = (3, input_size, input_size)
    return {spec.name: spec.runner(network, settings)}, shape, _image_batches(shape)


def _runtime(name: str, runs: str, what: str) -> RuntimeSpec:
    try:
        spec = RUNTIMES.get(name)
    except UnknownName as error:
        raise GreencompressError(f"--runtime: {error}") from None
    if spec.runs != runs:
        kind = "an exported .onnx file" if spec.runs == "onnx" else "a PyTorch model"
        raise GreencompressError(f"--runtime {name} runs {kind}; {what}")
    return spec


def _image_batches(shape: tuple[int, ...]):
    """Random float32 images of `shape`, a batch at a time."""
    return lambda batch_size, rng: rng.standard_normal((batch_size, *shape), dtype=np.float32)


def _token_batches(path: Path, graph, inputs, shapes: dict[str, tuple[int, ...]]):
    """Token inputs for a transformer file, a batch at a time: ids below its vocabulary, masks of ones, token types
    of zeros."""
    import onnx

    kinds = {}  # per input: its integer type, and how its values are made
    for tensor in inputs:
        elem_type = tensor.type.tensor_type.elem_type
        if elem_type not in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            raise GreencompressError(
                f"{path}: input {tensor.name!r} is neither the one float image input nor integer "
                f"tokens; bench cannot make data for it"
            )
        dtype = np.int32 if elem_type == onnx.TensorProto.INT32 else np.int64
        fill = 1 if "mask" in tensor.name else 0 if ("type" in tensor.name or "segment" in tensor.name) else None
        kinds[tensor.name] = (dtype, fill, _vocabulary(graph, tensor.name) if fill is None else 0)

    def make(batch_size: int, rng) -> dict[str, np.ndarray]:
        batch = {}
        for name, (dtype, fill, vocabulary) in kinds.items():
            size = (batch_size, *shapes[name])
            batch[name] = (
                np.full(size, fill, dtype=dtype)
                if fill is not None
                else rng.integers(0, vocabulary, size).astype(dtype)
            )
        return batch

    return make


def _vocabulary(graph, input_name: str) -> int:
    """How many ids `input_name` may hold: the rows of the word-embedding table it indexes, else 2.

    (A transformer's latency does not depend on which ids it reads, only on how many: any valid id will do.)
    """
    tables = {tensor.name: tensor.dims[0] for tensor in graph.initializer if len(tensor.dims) == 2}
    for node in graph.node:
        if node.op_type == "Gather" and node.input[1:2] == [input_name] and node.input[0] in tables:
            return tables[node.input[0]]
        if node.op_type == "EmbedLayerNormalization" and node.input[0] == input_name and node.input[2] in tables:
            return tables[node.input[2]]  # ONNX Runtime's fused embedding: (input_ids, segment_ids, word_embedding...)
    return 2

"""Runner: one interface over every artifact (PyTorch eager, ONNX Runtime, OpenVINO), and the registry of runtimes.

A runtime says what it runs (an ONNX file or the PyTorch model), how to tell it is installed
(and what to install otherwise), and how to make a runner. Recipe choices, the CLI, `bench` and
the pipeline all read RUNTIMES; a plugin adds one with a `RuntimeSpec` in the
`greencompress.runtimes` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from greencompress.errors import GreencompressError
from greencompress.registry import Registry


@dataclass(frozen=True)
class Artifact:
    """A model that a run produced or started from, measured on one runtime: what it is, where it lies, how it was made.

    Its lineage is in fields: the techniques applied to the PyTorch model before export
    (`model_techniques`, e.g. prune, finetune), those applied to the exported file
    (`file_techniques`, e.g. quantize), the resulting `precision`, the `runtime`, and what that
    runtime ran (`source`: "torch" for the model in memory, "onnx" for a file). Reports read these
    fields; the `name` is for people.
    """

    name: str
    runtime: str
    precision: str  # "fp32" | "int8" | ...
    path: Path | None
    size_bytes: int | None  # taken when the artifact is recorded: the file may move later
    params: int
    macs: int
    source: str = "onnx"  # "torch" | "onnx"
    model_techniques: tuple[str, ...] = ()
    file_techniques: tuple[str, ...] = ()

    @classmethod
    def of_file(cls, name: str, runtime: str, precision: str, path: Path | None, params: int, macs: int,
                **lineage) -> Artifact:
        """An artifact whose size is read from `path` now (None when there is no file)."""
        size = path.stat().st_size if path is not None else None
        return cls(name, runtime, precision, path, size, params, macs, **lineage)

    @property
    def techniques(self) -> tuple[str, ...]:
        """Every technique applied, in order."""
        return (*self.model_techniques, *self.file_techniques)

    @property
    def is_original_model(self) -> bool:
        """No technique changed the PyTorch model (the file may still be quantized)."""
        return not self.model_techniques


class Runner(ABC):
    """Runs a batch (float32 NCHW numpy array) and returns the logits as a numpy array."""

    @abstractmethod
    def __call__(self, inputs: np.ndarray) -> np.ndarray: ...


class TorchRunner(Runner):
    """PyTorch eager, in inference mode; the thread count is set process-wide by `set_threads`.

    `precision="bf16"` runs the FP32 weights under CPU autocast to bfloat16 (matrix products in bf16,
    accumulation and the logits in FP32); the default is true FP32.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        self.model = model.eval()
        self.bf16 = precision == "bf16"

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(torch.from_numpy(inputs)).float().numpy()


class OnnxRuntimeRunner(Runner):
    """An ONNX Runtime CPU session with a fixed intra-op thread count and no inter-op parallelism.

    `allow_spinning=False` makes idle workers sleep instead of spin-waiting for the next task: on a
    shared machine a spinning worker burns CPU time while a sibling thread is descheduled, which
    costs real energy and inflates a CPU-time estimate (scripts/bench_spinning.py measures both).
    """

    def __init__(self, path: Path, threads: int, allow_spinning: bool = False):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs})[0]


class OpenVinoRunner(Runner):
    """An OpenVINO CPU model compiled for latency (one stream, a fixed thread count, FP32 math where not int8).

    OpenVINO runs the same ONNX file, QDQ int8 included. Each new input shape gets its own compiled
    model (shapes made static), so batch sizes do not pay for dynamic-shape handling.
    """

    def __init__(self, path: Path, threads: int, precision: str = "fp32"):
        import openvino

        self.core = openvino.Core()
        self.model = self.core.read_model(str(path))
        # f32 unless bf16 is asked for: on CPUs with bf16 units OpenVINO would otherwise lower FP32 models to bf16
        # on its own, and an "fp32" figure would not be FP32.
        self.config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        self.requests: dict[tuple[int, ...], object] = {}

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        request = self.requests.get(inputs.shape)
        if request is None:
            import openvino

            model = self.model.clone()
            model.reshape({model.inputs[0]: openvino.PartialShape(list(inputs.shape))})
            request = self.requests[inputs.shape] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        request.infer({0: inputs})
        return request.get_output_tensor(0).data.copy()


def set_threads(threads: int) -> None:
    """Set PyTorch's intra-op thread count (ONNX Runtime sessions take theirs at creation); nothing is pinned to cores."""
    torch.set_num_threads(threads)


@dataclass(frozen=True)
class RunnerSettings:
    """How a runner is configured: from the benchmark section, and the precision to run an FP32 source at."""

    threads: int
    allow_spinning: bool = False
    precision: str = "fp32"  # "bf16", "fp16": a runtime that lists it in `reduced_precisions` runs FP32 weights so
    device_index: int = 0  # the CUDA device, for GPU runtimes
    compile: bool = False  # torch.compile the model, for PyTorch runtimes that support it


@dataclass(frozen=True)
class RuntimeSpec:
    """A registered runtime: what it runs, how to know it is installed, how to make a runner."""

    name: str
    runs: str  # "onnx": an exported file; "torch": the PyTorch model itself
    make_runner: Callable[[object, RunnerSettings], Runner]  # (Path or nn.Module, settings) -> Runner
    short_name: str = ""  # for narrow table columns
    module: str | None = None  # the package that must be importable
    install_hint: str = ""  # what to run when it is not
    reduced_precisions: tuple[str, ...] = ()  # what it can run an FP32 source at besides FP32 ("bf16", "fp16")
    in_auto: bool = True  # `benchmark.runtimes: auto` takes it when installed
    device: str = "cpu"  # "cpu" or "cuda": the device kind it runs on (benchmark.device)
    check: Callable[[], str | None] | None = None  # beyond the package: why it cannot run here (no GPU...), or None

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here (not installed, and how to install it), or None."""
        import importlib.util

        if self.module is not None and importlib.util.find_spec(self.module) is None:
            return f"{self.name} is not installed" + (f": {self.install_hint}" if self.install_hint else "")
        return self.check() if self.check is not None else None

    def runner(self, source, settings: RunnerSettings) -> Runner:
        reason = self.unavailable()
        if reason:
            raise GreencompressError(reason)
        return self.make_runner(source, settings)


RUNTIMES: Registry[RuntimeSpec] = Registry("runtime", "greencompress.runtimes", lambda spec: spec.name)
# PyTorch runs the original model as the as-trained reference in every run; `auto` does not add it again.
RUNTIMES.register(RuntimeSpec("torch", "torch", lambda model, settings: TorchRunner(model, settings.precision), "torch",
                              reduced_precisions=("bf16",), in_auto=False))
RUNTIMES.register(RuntimeSpec(
    "onnxruntime", "onnx", lambda path, settings: OnnxRuntimeRunner(path, settings.threads, settings.allow_spinning),
    "ORT", "onnxruntime", "pip install onnxruntime"))
RUNTIMES.register(RuntimeSpec(
    "openvino", "onnx", lambda path, settings: OpenVinoRunner(path, settings.threads, settings.precision), "OV",
    "openvino", "pip install openvino (about 180 MB)", reduced_precisions=("bf16",)))

# GPU runtimes: their runners live in gpu_runtime.py, imported only when one is made.
RUNTIMES.register(RuntimeSpec(
    "torch-cuda", "torch", lambda model, settings: _gpu().TorchCudaRunner(model, settings), "torch-cuda", "torch",
    reduced_precisions=("fp16", "bf16"), device="cuda", check=lambda: _gpu().cuda_unavailable()))
RUNTIMES.register(RuntimeSpec(
    "onnxruntime-cuda", "onnx", lambda path, settings: _gpu().OnnxRuntimeGpuRunner(path, settings, "CUDAExecutionProvider"),
    "ORT-CUDA", "onnxruntime", reduced_precisions=("fp16",), device="cuda",
    check=lambda: _gpu().provider_unavailable("CUDAExecutionProvider")))
RUNTIMES.register(RuntimeSpec(
    "onnxruntime-tensorrt", "onnx",
    lambda path, settings: _gpu().OnnxRuntimeGpuRunner(path, settings, "TensorrtExecutionProvider"), "ORT-TRT",
    "onnxruntime", reduced_precisions=("fp16",), device="cuda",
    check=lambda: _gpu().provider_unavailable("TensorrtExecutionProvider")))


def _gpu():
    from greencompress import gpu_runtime

    return gpu_runtime

"""Runner: one interface over every artifact (PyTorch eager, ONNX Runtime, OpenVINO), for evaluation and benchmarks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from greencompress.errors import GreencompressError


@dataclass(frozen=True)
class Artifact:
    """A model that a run produced or started from: what it is and where it lies."""

    name: str
    runtime: str  # "torch" | "onnxruntime" | "openvino"
    precision: str  # "fp32" | "int8"
    path: Path | None
    size_bytes: int | None  # taken when the artifact is recorded: the file may move later
    params: int
    macs: int

    @classmethod
    def of_file(cls, name: str, runtime: str, precision: str, path: Path | None, params: int, macs: int) -> Artifact:
        """An artifact whose size is read from `path` now (None when there is no file)."""
        size = path.stat().st_size if path is not None else None
        return cls(name, runtime, precision, path, size, params, macs)


class Runner(ABC):
    """Runs a batch (float32 NCHW numpy array) and returns the logits as a numpy array."""

    @abstractmethod
    def __call__(self, inputs: np.ndarray) -> np.ndarray: ...


class TorchRunner(Runner):
    """PyTorch eager, in inference mode; the thread count is set process-wide by `set_threads`."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(inputs)).numpy()


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

    def __init__(self, path: Path, threads: int):
        try:
            import openvino
        except ImportError:
            raise GreencompressError("the openvino runtime needs the openvino package: "
                                     "pip install 'greencompress[openvino]'") from None
        self.core = openvino.Core()
        self.model = self.core.read_model(str(path))
        # f32 inference precision: on CPUs with bf16 units OpenVINO would otherwise lower FP32 models to bf16.
        self.config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
                       "INFERENCE_PRECISION_HINT": "f32"}
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

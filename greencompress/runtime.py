"""Runner: one interface over every artifact (PyTorch eager, ONNX Runtime), shared by evaluation and benchmarks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Artifact:
    """A model that a run produced or started from: what it is and where it lies."""

    name: str
    runtime: str  # "torch" | "onnxruntime"
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
    """An ONNX Runtime CPU session with a fixed intra-op thread count and no inter-op parallelism."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs})[0]


def set_threads(threads: int) -> None:
    """Pin PyTorch's intra-op thread pool (ONNX Runtime sessions take theirs at creation)."""
    torch.set_num_threads(threads)

"""The runtime seam: Runner (one interface over every way of running a model), RuntimeSpec and the RUNTIMES registry.

A runtime says what it runs (an ONNX file or the PyTorch model), how to tell it is installed
(and what to install otherwise), and how to make a runner. Recipe choices, the CLI, `bench` and
the pipeline all read RUNTIMES; greencompress's own runtimes register in this package's modules
(pytorch.py, onnxruntime_cpu.py, openvino_cpu.py, pytorch_cuda.py, onnxruntime_gpu.py), and a plugin adds one
with a `RuntimeSpec` in the `greencompress.runtimes` entry-point group.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from greencompress.core.errors import GreencompressError
from greencompress.core.registry import Registry


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
    # Taken when the artifact is recorded (the file may move later): the file's bytes, or for an FP32 file run at
    # bf16/fp16, those bytes with its weights at 2 bytes each (what the model is at that precision).
    size_bytes: int | None
    params: int
    macs: int
    source: str = "onnx"  # "torch" | "onnx"
    model_techniques: tuple[str, ...] = ()
    file_techniques: tuple[str, ...] = ()

    @classmethod
    def of_file(
        cls, name: str, runtime: str, precision: str, path: Path | None, params: int, macs: int, **lineage
    ) -> Artifact:
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


Inputs = np.ndarray | dict[str, np.ndarray]  # one array (images, NCHW float32), or named arrays (token ids, masks)


class Runner(ABC):
    """Runs a batch and returns the first output (the logits) as a numpy array.

    A batch is one array for a model with one input, or a mapping from input name to array for a model
    with several (a transformer's input_ids, attention_mask, token_type_ids); runners that run files
    accept both.
    """

    @abstractmethod
    def __call__(self, inputs: Inputs) -> np.ndarray: ...

    def outputs(self, inputs: Inputs) -> tuple[np.ndarray, ...]:
        """Every output of the model (a sentence embedder's logits, then its embedding); the logits alone by default."""
        return (self(inputs),)


def batch_size_of(inputs: Inputs) -> int:
    """The number of samples in a batch: the first dimension of its (first) array."""
    return len(next(iter(inputs.values())) if isinstance(inputs, dict) else inputs)


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
    # Reads ONNX Runtime's own fused transformer operators (Attention, SkipLayerNormalization, ...: its com.microsoft
    # domain); a runtime of files that does not is given the portable graph.
    reads_fused_operators: bool = False
    # For a deploy folder's readers: Python that opens `file` on this runtime as it was measured at `precision`
    # (a session or compiled model named `session`); None where the task's onnxruntime snippet is the way.
    loading: Callable[[str, str], str] | None = None

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

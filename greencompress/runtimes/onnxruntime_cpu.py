"""ONNX Runtime's CPU execution provider: the runtime every exported file runs on by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greencompress.runtimes.base import RUNTIMES, Inputs, Runner, RuntimeSpec


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

    def __call__(self, inputs: Inputs) -> np.ndarray:
        return self.outputs(inputs)[0]

    def outputs(self, inputs: Inputs) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(None, inputs if isinstance(inputs, dict) else {self.input_name: inputs}))


RUNTIMES.register(
    RuntimeSpec(
        "onnxruntime",
        "onnx",
        lambda path, settings: OnnxRuntimeRunner(path, settings.threads, settings.allow_spinning),
        "ORT",
        "onnxruntime",
        "pip install onnxruntime",
        reads_fused_operators=True,
    )
)

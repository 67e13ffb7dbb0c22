"""OpenVINO on the CPU: runs the same ONNX files (QDQ int8 included), and FP32 files at bf16 where asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greencompress.runtimes.base import RUNTIMES, Inputs, Runner, RuntimeSpec


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
        self.config = {
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        self.requests: dict[tuple, object] = {}  # compiled per set of input shapes

    def __call__(self, inputs: Inputs) -> np.ndarray:
        return self._infer(inputs).get_output_tensor(0).data.copy()

    def outputs(self, inputs: Inputs) -> tuple[np.ndarray, ...]:
        request = self._infer(inputs)
        return tuple(request.get_output_tensor(index).data.copy() for index in range(len(self.model.outputs)))

    def _infer(self, inputs: Inputs):
        named = inputs if isinstance(inputs, dict) else {self.model.inputs[0].any_name: inputs}
        shapes = tuple((name, array.shape) for name, array in named.items())
        request = self.requests.get(shapes)
        if request is None:
            import openvino

            model = self.model.clone()
            model.reshape({name: openvino.PartialShape(list(shape)) for name, shape in shapes})
            request = self.requests[shapes] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        request.infer(named)
        return request


RUNTIMES.register(
    RuntimeSpec(
        "openvino",
        "onnx",
        lambda path, settings: OpenVinoRunner(path, settings.threads, settings.precision),
        "OV",
        "openvino",
        "pip install openvino (about 180 MB)",
        reduced_precisions=("bf16",),
        loading=lambda file, precision: (
            "import openvino\n"
            f'session = openvino.Core().compile_model("{file}", "CPU", '
            f'{{"INFERENCE_PRECISION_HINT": "{"bf16" if precision == "bf16" else "f32"}"}})\n'
            "outputs = session(inputs)  # a dict of the arrays fed to onnxruntime above, by input name"
        ),
    )
)

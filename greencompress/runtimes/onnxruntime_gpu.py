"""ONNX Runtime on an NVIDIA GPU through its CUDA and TensorRT providers, with I/O binding in timed calls.

A timed call runs on inputs already bound on the GPU and waits for the outputs there, so what is
timed is the model alone; the host times it around the synchronized run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from greencompress.runtimes.base import RUNTIMES, Runner, RunnerSettings, RuntimeSpec
from greencompress.runtimes.export import convert_to_fp16, is_quantized


def provider_unavailable(provider: str) -> str | None:
    """Why ONNX Runtime cannot use `provider` here (naming the package to install), or None."""
    import onnxruntime

    if provider not in onnxruntime.get_available_providers():
        return (
            f"ONNX Runtime here has no {provider} (it has {', '.join(onnxruntime.get_available_providers())}): "
            f"replace onnxruntime with the onnxruntime-gpu package (pip uninstall onnxruntime && pip install "
            f"onnxruntime-gpu), on a machine with an NVIDIA driver"
            + (" and TensorRT" if provider == "TensorrtExecutionProvider" else "")
        )
    return None


class OnnxRuntimeGpuRunner(Runner):
    """ONNX Runtime with a GPU provider; I/O binding keeps inputs and outputs on the GPU in timed calls."""

    def __init__(self, path: Path, settings: RunnerSettings, provider: str):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        provider_options = {"device_id": settings.device_index}
        self.int8 = is_quantized(path)
        if provider == "TensorrtExecutionProvider":
            # Each builder flag only where the artifact says so: an "fp32" artifact must not run FP16 kernels.
            # int8 comes from the file's QDQ nodes (symmetric activations: quantize.activation_type: int8).
            provider_options.update(trt_int8_enable=self.int8, trt_fp16_enable=settings.precision == "fp16")
        elif settings.precision == "fp16":
            # The CUDA provider runs what the file holds: an FP16 copy of the FP32 file, kept beside it to deploy.
            fp16_path = path.with_name(f"{path.stem}.fp16.onnx")
            if not fp16_path.exists():
                convert_to_fp16(path, fp16_path)
            path = fp16_path
        self.path = path
        self.session = onnxruntime.InferenceSession(str(path), options, providers=[(provider, provider_options)])
        self.providers = self.session.get_providers()
        if provider not in self.providers:  # ONNX Runtime falls back to the CPU without saying so: say so here
            raise RuntimeError(f"{path.name}: ONNX Runtime did not take {provider} (it runs on {self.providers})")
        self.input_name = self.session.get_inputs()[0].name
        self.device_index = settings.device_index
        self.provider = provider

    def placement(self, inputs: np.ndarray) -> dict[str, int]:
        """How many graph nodes each execution provider ran, read from one profiled call (a TensorRT int8 check)."""
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.enable_profiling = True
        session = onnxruntime.InferenceSession(str(self.path), options, providers=self.session.get_providers())
        session.run(None, {self.input_name: inputs})
        return node_placement(Path(session.end_profiling()).read_text())

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs})[0]

    def prepare(self, inputs: np.ndarray):
        import onnxruntime

        binding = self.session.io_binding()
        on_gpu = onnxruntime.OrtValue.ortvalue_from_numpy(inputs, "cuda", self.device_index)
        binding.bind_ortvalue_input(self.input_name, on_gpu)
        binding.bind_output(self.session.get_outputs()[0].name, "cuda", self.device_index)

        def run() -> None:
            self.session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return run


def node_placement(profile_json: str) -> dict[str, int]:
    """Nodes per execution provider in an ONNX Runtime profile (`enable_profiling`): where the graph really ran.

    TensorRT takes a QDQ graph as one fused engine node; Quantize/DequantizeLinear nodes left on the
    CPU provider mean TensorRT did not take the int8 graph whole.
    """
    import json

    counts: dict[str, int] = {}
    for event in json.loads(profile_json):
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider and event.get("name", "").endswith("_kernel_time"):
            counts[provider] = counts.get(provider, 0) + 1
    return counts


RUNTIMES.register(
    RuntimeSpec(
        "onnxruntime-cuda",
        "onnx",
        lambda path, settings: OnnxRuntimeGpuRunner(path, settings, "CUDAExecutionProvider"),
        "ORT-CUDA",
        "onnxruntime",
        reduced_precisions=("fp16",),
        device="cuda",
        check=lambda: provider_unavailable("CUDAExecutionProvider"),
        reads_fused_operators=True,
    )
)
RUNTIMES.register(
    RuntimeSpec(
        "onnxruntime-tensorrt",
        "onnx",
        lambda path, settings: OnnxRuntimeGpuRunner(path, settings, "TensorrtExecutionProvider"),
        "ORT-TRT",
        "onnxruntime",
        reduced_precisions=("fp16",),
        device="cuda",
        check=lambda: provider_unavailable("TensorrtExecutionProvider"),
        reads_fused_operators=True,
    )
)

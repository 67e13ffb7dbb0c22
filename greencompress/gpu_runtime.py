"""Runners on an NVIDIA GPU: PyTorch (FP32, FP16, BF16, optionally compiled) and ONNX Runtime's CUDA/TensorRT providers.

What is timed is the model on the GPU and nothing else: `prepare(inputs)` copies a batch to the
device once and returns a call that runs on it and waits for the GPU (so each timed call is
whole), without copying the logits back; `__call__` (for accuracy) copies in and out as usual.
PyTorch's call returns its own duration from CUDA events; ONNX Runtime's is timed on the host
around a synchronized I/O-bound run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from greencompress.runtime import Runner, RunnerSettings

TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def cuda_unavailable() -> str | None:
    """Why PyTorch cannot run on a GPU here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch here"
    return None


def provider_unavailable(provider: str) -> str | None:
    """Why ONNX Runtime cannot use `provider` here (naming the package to install), or None."""
    import onnxruntime

    if provider not in onnxruntime.get_available_providers():
        return (f"ONNX Runtime here has no {provider} (it has {', '.join(onnxruntime.get_available_providers())}): "
                f"replace onnxruntime with the onnxruntime-gpu package (pip uninstall onnxruntime && pip install "
                f"onnxruntime-gpu), on a machine with an NVIDIA driver"
                + (" and TensorRT" if provider == "TensorrtExecutionProvider" else ""))
    return None


class TorchCudaRunner(Runner):
    """PyTorch on a CUDA GPU. FP16 and BF16 cast the weights (and inputs) to that type; the logits come back as FP32."""

    def __init__(self, model, settings: RunnerSettings):
        import torch

        self.torch = torch
        self.device = torch.device("cuda", settings.device_index)
        self.dtype = getattr(torch, TORCH_DTYPES[settings.precision])
        self.model = copy.deepcopy(model).to(self.device, self.dtype).eval()
        if settings.compile:
            self.model = torch.compile(self.model)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            batch = self.torch.from_numpy(inputs).to(self.device, self.dtype)
            return self.model(batch).float().cpu().numpy()

    def prepare(self, inputs: np.ndarray):
        """A call that runs the model on `inputs` already on the GPU, waits for it, and returns the GPU's time in ns.

        The time is read from CUDA events recorded on the stream around the model, so host-side launch
        jitter between calls is not counted; the window's energy still covers the whole wall-clock span.
        """
        batch = self.torch.from_numpy(inputs).to(self.device, self.dtype)
        start, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))

        def run() -> int:
            with self.torch.inference_mode():
                start.record()
                self.model(batch)
                end.record()
            end.synchronize()
            return int(start.elapsed_time(end) * 1e6)  # elapsed_time is in milliseconds

        return run


class OnnxRuntimeGpuRunner(Runner):
    """ONNX Runtime with a GPU provider; I/O binding keeps inputs and outputs on the GPU in timed calls."""

    def __init__(self, path: Path, settings: RunnerSettings, provider: str):
        import onnxruntime

        from greencompress.export import convert_to_fp16, is_quantized

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

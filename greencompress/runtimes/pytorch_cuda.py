"""PyTorch on an NVIDIA GPU (FP32, FP16, BF16, optionally compiled), timed by CUDA events.

What is timed is the model on the GPU and nothing else: `prepare(inputs)` copies a batch to the
device once and returns a call that runs on it, waits for the GPU and returns the GPU's own
duration; `__call__` (for accuracy) copies in and out as usual.
"""

from __future__ import annotations

import copy

import numpy as np

from greencompress.models.serving import served
from greencompress.runtimes.base import RUNTIMES, Runner, RunnerSettings, RuntimeSpec

TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def cuda_unavailable() -> str | None:
    """Why PyTorch cannot run on a GPU here, or None."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch here"
    return None


class TorchCudaRunner(Runner):
    """PyTorch on a CUDA GPU. FP16 and BF16 cast the weights (and inputs) to that type; the logits come back as FP32."""

    def __init__(self, model, settings: RunnerSettings):
        import torch

        self.torch = torch
        self.device = torch.device("cuda", settings.device_index)
        self.dtype = getattr(torch, TORCH_DTYPES[settings.precision])
        self.model = copy.deepcopy(served(model)).to(self.device, self.dtype).eval()
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


RUNTIMES.register(
    RuntimeSpec(
        "torch-cuda",
        "torch",
        lambda model, settings: TorchCudaRunner(model, settings),
        "torch-cuda",
        "torch",
        reduced_precisions=("fp16", "bf16"),
        device="cuda",
        check=lambda: cuda_unavailable(),
    )
)

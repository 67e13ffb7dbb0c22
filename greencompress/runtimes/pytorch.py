"""PyTorch eager on the CPU: the as-trained reference every run measures, in FP32 or under bf16 autocast."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from greencompress.models.serving import served
from greencompress.runtimes.base import RUNTIMES, Inputs, Runner, RuntimeSpec


class TorchRunner(Runner):
    """PyTorch eager, in inference mode; the thread count is set process-wide by `set_threads`.

    `precision="bf16"` runs the FP32 weights under CPU autocast to bfloat16 (matrix products in bf16,
    accumulation and the logits in FP32); the default is true FP32.
    """

    def __init__(self, model: nn.Module, precision: str = "fp32"):
        self.model = served(model).eval()  # what a deployment runs (a sentence embedder's embeddings)
        self.bf16 = precision == "bf16"

    def __call__(self, inputs: Inputs) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return first_output(call_model(self.model, inputs)).float().numpy()

    def outputs(self, inputs: Inputs) -> tuple[np.ndarray, ...]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            output = call_model(self.model, inputs)
        return tuple(item.float().numpy() for item in (output if isinstance(output, (tuple, list)) else (output,)))


def call_model(model: nn.Module, inputs: Inputs):
    """`model` on one numpy array, or on named arrays passed as keyword arguments (token tensors)."""
    if isinstance(inputs, dict):
        return model(**{name: torch.from_numpy(array) for name, array in inputs.items()})
    return model(torch.from_numpy(inputs))


def first_output(output) -> torch.Tensor:
    """The first output of a model that returns several (a served sentence embedder's embedding, then token states)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def set_threads(threads: int) -> None:
    """Set PyTorch's intra-op thread count (ONNX Runtime sessions take theirs at creation); nothing is pinned."""
    torch.set_num_threads(threads)


# PyTorch runs the original model as the as-trained reference in every run; `auto` does not add it again.
RUNTIMES.register(
    RuntimeSpec(
        "torch",
        "torch",
        lambda model, settings: TorchRunner(model, settings.precision),
        "torch",
        reduced_precisions=("bf16",),
        in_auto=False,
    )
)

"""Quantization-aware fine-tuning: train under the rounding ONNX Runtime's static int8 will apply, then export.

Every Conv2d and Linear is wrapped so that, in the forward pass, its input is fake-quantized the way
ONNX Runtime quantizes activations (uint8, asymmetric, per tensor, range tracked as a moving
min/max) and its weight the way it quantizes weights (int8, symmetric, per output channel, 7-bit
when `reduce_range`). Gradients pass straight through the rounding. Afterwards the wrappers are
removed: what remains is an ordinary FP32 model whose weights sit well on the int8 grid, exported and
quantized by the same ONNX Runtime path as post-training quantization, so it runs exactly as fast.
The activation ranges the model was trained under go with it (`QatResult.input_ranges`): ONNX
Runtime quantizes each layer's input on that grid instead of calibrating a new one. Every layer
input and weight of the int8 graph is then the one training simulated, to one grid step at a float
midpoint (tests/compress/test_qat.py checks it value for value). Not simulated: the int32 rounding
of biases, and the rounding ONNX Runtime applies to a layer output that feeds an op it does not
quantize (a pooling) and to the logits.

Whether ONNX Runtime's integer kernels compute the graph exactly depends on the CPU: with VNNI or
AMX they do; with plain AVX2/AVX-512, u8 x s8 products saturate in int16 unless weights are 7-bit,
which is what `reduce_range: auto` chooses there (compress/quantize.py).

Per-channel weight rounding is unchanged when batch norm is later folded into the convolution (the
fold scales each output channel, and so its scale, by one factor), so batch norm is left as it is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from greencompress.compress.finetune import FinetuneConfig, FinetuneResult, finetune

# ONNX Runtime's ranges (onnxruntime.quantization.quant_utils): symmetric int8 weights, and 7-bit when reduced.
WEIGHT_RANGE = {False: (-127, 127), True: (-64, 64)}
ACTIVATION_RANGE = (0, 255)


class FakeQuantized(nn.Module):
    """A Conv2d or Linear whose input and weight pass through int8 fake quantization."""

    def __init__(self, layer: nn.Conv2d | nn.Linear, reduce_range: bool, momentum: float = 0.01):
        super().__init__()
        self.layer = layer
        self.weight_min, self.weight_max = WEIGHT_RANGE[reduce_range]
        self.momentum = momentum
        self.register_buffer("input_min", torch.tensor(0.0))
        self.register_buffer("input_max", torch.tensor(0.0))
        self.register_buffer("observed", torch.tensor(False))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(inputs.detach())
        inputs = self._fake_quantize_input(inputs)
        weight = self._fake_quantize_weight(self.layer.weight)
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(inputs, weight, self.layer.bias)
        return nn.functional.linear(inputs, weight, self.layer.bias)

    def _observe(self, inputs: torch.Tensor) -> None:
        low, high = inputs.min(), inputs.max()
        if not bool(self.observed):
            self.input_min.copy_(low), self.input_max.copy_(high), self.observed.fill_(True)
        else:  # a moving average: one outlier batch does not stretch the range for good
            self.input_min.lerp_(low, self.momentum), self.input_max.lerp_(high, self.momentum)

    @property
    def input_range(self) -> tuple[float, float]:
        """The activation range quantized over: the observed one, widened to hold zero (which must be exact)."""
        return min(float(self.input_min), 0.0), max(float(self.input_max), 0.0)

    def _fake_quantize_input(self, inputs: torch.Tensor) -> torch.Tensor:
        low, high = self.input_range
        if high - low <= 0:
            return inputs
        scale = (high - low) / (ACTIVATION_RANGE[1] - ACTIVATION_RANGE[0])
        zero_point = int(round(ACTIVATION_RANGE[0] - low / scale))
        return torch.fake_quantize_per_tensor_affine(inputs, scale, zero_point, *ACTIVATION_RANGE)

    def _fake_quantize_weight(self, weight: torch.Tensor) -> torch.Tensor:
        absmax = weight.detach().abs().flatten(1).amax(1).clamp_min(1e-12)
        scale = (2 * absmax / (self.weight_max - self.weight_min)).float()
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, self.weight_min, self.weight_max)


def prepare(model: nn.Module, reduce_range: bool) -> nn.Module:
    """A copy of `model` with every Conv2d and Linear wrapped in FakeQuantized."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            _replace(model, name, FakeQuantized(module, reduce_range))
    return model


def strip(model: nn.Module) -> nn.Module:
    """A copy of a prepared model with the wrappers removed: plain layers carrying the trained weights."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, FakeQuantized):
            _replace(model, name, module.layer)
    return model


def input_ranges(prepared: nn.Module) -> dict[str, tuple[float, float]]:
    """Per wrapped layer (by its name in the stripped model): the input range it was trained under."""
    return {
        name: module.input_range
        for name, module in prepared.named_modules()
        if isinstance(module, FakeQuantized) and bool(module.observed)
    }


def _replace(model: nn.Module, dotted_name: str, replacement: nn.Module) -> None:
    parent_name, _, child = dotted_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)


@dataclass(frozen=True)
class QatResult(FinetuneResult):
    """A fine-tuning result whose model is stripped of its wrappers, with the activation ranges it trained under."""

    input_ranges: dict[str, tuple[float, float]] | None = None  # layer name -> (min, max) of its input


def quantization_aware_finetune(
    model: nn.Module,
    train_set,
    config: FinetuneConfig,
    reduce_range: bool,
    seed: int,
    checkpoint_dir: Path,
    teacher: nn.Module | None = None,
    progress=None,
) -> QatResult:
    """Fine-tune `model` under fake int8 rounding (resumable like any fine-tuning); returns the stripped model."""
    result = finetune(
        prepare(model, reduce_range), train_set, config, seed, checkpoint_dir, teacher=teacher, progress=progress
    )
    return QatResult(
        strip(result.model).eval(),
        result.history,
        result.best_epoch,
        result.resumed_from_epoch,
        input_ranges(result.model),
    )

"""Weight-only quantization of a language model's linear layers, round to nearest: int8 per output channel, int4 in
groups along the input dimension, symmetric or asymmetric.

What this module gives is the grid: each weight replaced by the value its int8 or int4 code stands for
(`fake_quantize`), so that what the rounding costs in perplexity can be measured on any model, before a
runtime's int4 format (ONNX Runtime's MatMulNBits, OpenVINO's compressed weights) makes it fast. Such a
model runs at FP32 speed: its latency and energy say nothing about int4 and are never reported as if they
did. The embedding table and the output head stay as they are (runtimes keep them apart, and tied to the
input embedding the head would be quantized twice).

Symmetric: codes in [-(2^(b-1) - 1), 2^(b-1) - 1] times one scale per group (max |w| / that bound).
Asymmetric: codes in [0, 2^b - 1] with a scale and a zero point per group (min and max of the group).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class WeightGrid:
    """A weight-only format: `bits` (4 or 8), `group_size` inputs per scale (None: one per output channel)."""

    bits: int
    group_size: int | None
    symmetric: bool

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"bits: 4 or 8, got {self.bits}")
        if self.group_size is not None and self.group_size < 2:
            raise ValueError(f"group_size: at least 2, or None for one scale per output channel; got {self.group_size}")

    @property
    def name(self) -> str:
        groups = f"g{self.group_size}" if self.group_size else "per-channel"
        return f"int{self.bits}-{groups}-{'sym' if self.symmetric else 'asym'}"


def quantize_dequantize(weight: torch.Tensor, grid: WeightGrid) -> torch.Tensor:
    """`weight` [out, in] on `grid`: each value replaced by what its code stands for."""
    out_features, in_features = weight.shape
    group = grid.group_size or in_features
    if in_features % group:
        raise ValueError(f"group_size {group} does not divide the layer's {in_features} inputs")
    grouped = weight.detach().float().reshape(out_features, in_features // group, group)
    if grid.symmetric:
        bound = 2 ** (grid.bits - 1) - 1
        scale = grouped.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / bound
        codes = torch.clamp(torch.round(grouped / scale), -bound, bound)
        restored = codes * scale
    else:
        top = 2**grid.bits - 1
        low, high = grouped.amin(dim=-1, keepdim=True), grouped.amax(dim=-1, keepdim=True)
        scale = (high - low).clamp(min=1e-12) / top
        zero = torch.round(-low / scale)
        codes = torch.clamp(torch.round(grouped / scale) + zero, 0, top)
        restored = (codes - zero) * scale
    return restored.reshape(out_features, in_features).to(weight.dtype)


def fake_quantize(model: nn.Module, grid: WeightGrid, skip: tuple[str, ...] = ("lm_head",)) -> dict:
    """Put every linear layer of `model` (but those named in `skip`) on `grid`, in place; returns what was done: the
    layers quantized, those left as they were and why, and the weights' mean relative error."""
    done, left, error = [], {}, []
    with torch.no_grad():
        for name, module in model.named_modules():
            if not isinstance(module, nn.Linear):
                continue
            if name.split(".")[-1] in skip:
                left[name] = "kept: the output head"
                continue
            try:
                restored = quantize_dequantize(module.weight, grid)
            except ValueError as problem:
                left[name] = str(problem)
                continue
            error.append(float((restored - module.weight).norm() / module.weight.norm().clamp(min=1e-12)))
            module.weight.copy_(restored)
            done.append(name)
    return {
        "grid": grid.name,
        "layers": len(done),
        "left_as_they_were": left,
        "mean_relative_weight_error": sum(error) / len(error) if error else 0.0,
    }

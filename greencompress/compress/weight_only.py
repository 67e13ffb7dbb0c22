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
    blocks = weight.detach().float().reshape(out_features * (in_features // group), group)
    scale, zero = _grid_parameters(blocks, grid)
    restored = (_codes(blocks, scale[:, None], zero[:, None], grid) - zero[:, None]) * scale[:, None]
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


# Linear layers that read the same input, whose activation scales must be one to be folded into what feeds them
# (a Llama decoder layer: q, k, v after one norm; gate and up after another). o and down are folded alone (into
# v's and up's output rows, which a per-group grid along the inputs does not notice).
SHARED_INPUTS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"), ("o_proj",), ("down_proj",))
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def activation_aware(model: nn.Module, grid: WeightGrid, calibration: list[torch.Tensor], rows: int = 1024) -> dict:
    """Activation-aware scaling before rounding (after AWQ, Lin et al. 2024): per input channel, weights are multiplied
    by s = mean|x|^alpha before they are put on `grid` and divided by it after (s folds into what feeds the layer,
    so the model computes the same function with better-rounded weights), alpha chosen per group of layers sharing
    an input from ALPHAS by the error of their outputs on `calibration` token ids. Quantizes in place; returns
    the alphas chosen and the layers done. Llama-family decoder layers only (`SHARED_INPUTS`)."""
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = []
    linears = {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    for name, module in linears.items():
        if name.split(".")[-1] in {part for group in SHARED_INPUTS for part in group}:
            hooks.append(module.register_forward_hook(_keep_input(inputs, name, rows)))
    with torch.no_grad():
        for ids in calibration:
            model(input_ids=ids)
    for hook in hooks:
        hook.remove()
    chosen, done = {}, 0
    with torch.no_grad():
        for layer in sorted({name.rsplit(".", 1)[0] for name in inputs}):
            for group in SHARED_INPUTS:
                names = [f"{layer}.{part}" for part in group if f"{layer}.{part}" in inputs]
                if not names:
                    continue
                x = torch.cat(inputs[names[0]])[:rows]
                magnitude = x.abs().mean(dim=0).clamp(min=1e-8)
                best = None
                for alpha in ALPHAS:
                    scale = magnitude**alpha
                    scale = scale / (scale.max() * scale.min()).sqrt()
                    trial = [quantize_dequantize(linears[n].weight * scale, grid) / scale for n in names]
                    error = sum(float((x @ (w - linears[n].weight).T).pow(2).sum()) for n, w in zip(names, trial))
                    if best is None or error < best[0]:
                        best = (error, alpha, trial)
                for name, weight in zip(names, best[2]):
                    linears[name].weight.copy_(weight)
                chosen[f"{layer}.{'+'.join(group)}"] = best[1]
                done += len(names)
    return {"grid": grid.name, "method": "activation-aware scaling", "layers": done, "alphas": chosen}


def _keep_input(store: dict, name: str, rows: int):
    def hook(module, args, output):
        flat = args[0].detach().reshape(-1, args[0].shape[-1])
        kept = sum(len(part) for part in store.get(name, []))
        if kept < rows:
            store.setdefault(name, []).append(flat[: rows - kept].float())

    return hook


def error_feedback(model: nn.Module, grid: WeightGrid, calibration: list[torch.Tensor], rows: int = 2048) -> dict:
    """Rounding with error feedback (after GPTQ, Frantar et al. 2023): each layer's input columns are rounded one at a
    time, and what rounding a column lost is passed on to the columns not yet rounded, weighted by the inverse of
    the inputs' second moment X^T X on `calibration` token ids (1% of its mean diagonal added for stability).
    Group scales are set from the weights as they stand when a group is reached. Inputs are the original model's.
    Quantizes every linear layer but the head in place; returns what was done."""
    inputs: dict[str, list[torch.Tensor]] = {}
    linears = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.split(".")[-1] != "lm_head"
    }
    hooks = [module.register_forward_hook(_keep_input(inputs, name, rows)) for name, module in linears.items()]
    with torch.no_grad():
        for ids in calibration:
            model(input_ids=ids)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        for name, module in linears.items():
            x = torch.cat(inputs.pop(name))[:rows].double()
            module.weight.copy_(_round_with_feedback(module.weight.double(), x, grid).to(module.weight.dtype))
    return {"grid": grid.name, "method": "error feedback", "layers": len(linears), "rows": rows}


def _round_with_feedback(weight: torch.Tensor, x: torch.Tensor, grid: WeightGrid) -> torch.Tensor:
    out_features, in_features = weight.shape
    group = grid.group_size or in_features
    if in_features % group:
        raise ValueError(f"group_size {group} does not divide the layer's {in_features} inputs")
    hessian = x.T @ x / len(x)
    hessian += 0.01 * hessian.diagonal().mean() * torch.eye(in_features, dtype=hessian.dtype)
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    remaining, rounded = weight.clone(), torch.zeros_like(weight)
    scale = zero = None
    for column in range(in_features):
        if column % group == 0:
            scale, zero = _grid_parameters(remaining[:, column : column + group], grid)
        values = remaining[:, column]
        codes = _codes(values, scale, zero, grid)
        rounded[:, column] = (codes - zero) * scale
        lost = (values - rounded[:, column]) / inverse[column, column]
        remaining[:, column + 1 :] -= lost[:, None] * inverse[column, column + 1 :][None, :]
    return rounded


def _grid_parameters(block: torch.Tensor, grid: WeightGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) per row of a block of columns [out, group]: what quantize_dequantize uses."""
    if grid.symmetric:
        bound = 2 ** (grid.bits - 1) - 1
        return block.abs().amax(dim=1).clamp(min=1e-12) / bound, torch.zeros(len(block), dtype=block.dtype)
    top = 2**grid.bits - 1
    low, high = block.amin(dim=1), block.amax(dim=1)
    scale = (high - low).clamp(min=1e-12) / top
    return scale, torch.round(-low / scale)


def _codes(values: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: WeightGrid) -> torch.Tensor:
    if grid.symmetric:
        bound = 2 ** (grid.bits - 1) - 1
        return torch.clamp(torch.round(values / scale), -bound, bound)
    return torch.clamp(torch.round(values / scale) + zero, 0, 2**grid.bits - 1)

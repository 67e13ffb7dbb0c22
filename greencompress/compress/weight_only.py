"""Weight-only quantization of a causal LM's linear layers: int8 or int4 codes, per output channel or in groups
along the input dimension, symmetric or with a zero point (an integer code, or a real number), chosen by rounding to
nearest, with activation-aware scales, or with error feedback (`WeightOnlyConfig.method`).

What this module gives is the grid: each weight replaced by the value its code stands for (`fake_quantize` and
the methods below), and where it lies on that grid (`LayerGrid`, from which a runtime's format takes the codes:
runtimes/genai.py). A model so rounded runs at FP32 speed in PyTorch: its latency and energy say nothing about
int4 and are never reported as if they did. The embedding table stays as it is; the output head too unless
`head: int8` rounds it (untied from the embedding first: tied, it would be rounded twice).

Symmetric: codes in [-(2^(b-1) - 1), 2^(b-1) - 1] times one scale per group (max |w| / that bound).
Asymmetric: codes in [0, 2^b - 1] with a scale and a zero point per group (min and max of the group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from greencompress.compress.technique import StageContext, StageOutput, Technique, TorchModel
from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError


@dataclass(frozen=True)
class WeightGrid:
    """A weight-only format: `bits` (4 or 8), `group_size` inputs per scale (None: one per output channel)."""

    bits: int
    group_size: int | None
    symmetric: bool
    # An asymmetric grid's zero point: an integer code (the common formats), or any real number, which puts the
    # group's minimum exactly on code 0 (llama.cpp's Q4_1 grid: a scale and a minimum per block; MatMulNBits reads
    # float zero points too).
    float_zero: bool = False

    def __post_init__(self):
        if self.bits not in (4, 8):
            raise ValueError(f"bits: 4 or 8, got {self.bits}")
        if self.float_zero and self.symmetric:
            raise ValueError("zero_point: float is for an asymmetric grid; a symmetric one has none")
        if self.group_size is not None and self.group_size < 2:
            raise ValueError(f"group_size: at least 2, or None for one scale per output channel; got {self.group_size}")

    @property
    def name(self) -> str:
        groups = f"g{self.group_size}" if self.group_size else "per-channel"
        return f"int{self.bits}-{groups}-{'sym' if self.symmetric else 'asym'}{'-floatzp' if self.float_zero else ''}"


def plan_matches(layer: str, pattern: str) -> bool:
    """Whether `pattern` names the layer: its full name, or a tail of it that starts at a dot."""
    return layer == pattern or layer.endswith(f".{pattern}")


@dataclass(frozen=True)
class GridPlan:
    """Which grid each linear layer goes on: `default`, or the grid of the first of `exceptions` that names it (by
    its last name, `down_proj`, a longer tail, `mlp.down_proj`, or its full name). Giving a few sensitive layers
    more bits is what llama.cpp's Q4_K_M does (more bits for attn_v and ffn_down)."""

    default: WeightGrid
    exceptions: tuple[tuple[str, WeightGrid], ...] = ()

    @classmethod
    def of(cls, grids: WeightGrid | GridPlan) -> GridPlan:
        return grids if isinstance(grids, GridPlan) else cls(grids)

    def grid_of(self, layer: str) -> WeightGrid:
        for pattern, grid in self.exceptions:
            if plan_matches(layer, pattern):
                return grid
        return self.default

    @property
    def name(self) -> str:
        exceptions = {}
        for pattern, grid in self.exceptions:
            exceptions.setdefault(grid.name, []).append(pattern)
        return self.default.name + "".join(f", {grid} for {'+'.join(names)}" for grid, names in exceptions.items())


@dataclass(frozen=True)
class LayerGrid:
    """Where one layer's weights lie on its `grid`: a scale and a zero point per output row and input group
    ([out, groups] each; zero points are 0 on a symmetric grid, integers unless the grid's are real-valued). With
    the weights it gives their integer codes, which a runtime's int4/int8 format stores (runtimes/genai.py)."""

    scale: torch.Tensor
    zero: torch.Tensor
    grid: WeightGrid

    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer codes of `weight` [out, in] (on this grid): signed for a symmetric grid, else unsigned."""
        grid = self.grid
        out_features, in_features = weight.shape
        groups = self.scale.shape[1]
        blocks = weight.detach().double().reshape(out_features, groups, in_features // groups)
        codes = torch.round(blocks / self.scale.double()[..., None] + self.zero.double()[..., None])
        bound = 2 ** (grid.bits - 1) - 1
        low, high = (-bound, bound) if grid.symmetric else (0, 2**grid.bits - 1)
        return codes.clamp(low, high).reshape(out_features, in_features).to(torch.int32)


def quantize_dequantize(weight: torch.Tensor, grid: WeightGrid) -> torch.Tensor:
    """`weight` [out, in] on `grid`: each value replaced by what its code stands for."""
    return quantize_layer(weight, grid)[0]


def quantize_layer(weight: torch.Tensor, grid: WeightGrid) -> tuple[torch.Tensor, LayerGrid]:
    """`weight` [out, in] rounded to nearest on `grid`, and the grid it lies on."""
    out_features, in_features = weight.shape
    group = grid.group_size or in_features
    if in_features % group:
        raise ValueError(f"group_size {group} does not divide the layer's {in_features} inputs")
    blocks = weight.detach().float().reshape(out_features * (in_features // group), group)
    scale, zero = _grid_parameters(blocks, grid)
    restored = (_codes(blocks, scale[:, None], zero[:, None], grid) - zero[:, None]) * scale[:, None]
    shape = (out_features, in_features // group)
    return restored.reshape(out_features, in_features).to(weight.dtype), LayerGrid(
        scale.reshape(shape), zero.reshape(shape), grid
    )


def is_matrix_layer(module: nn.Module) -> bool:
    """A linear layer: torch's Linear (weight [out, in]), or transformers' Conv1D of GPT-2 (weight [in, out])."""
    return isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and module.weight.dim() == 2)


def weight_of(module: nn.Module) -> torch.Tensor:
    """The layer's weight as [out, in], whichever way the layer stores it (a view: writes go through)."""
    return module.weight if isinstance(module, nn.Linear) else module.weight.T


def quantizable_layers(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> dict[str, nn.Module]:
    """The linear layers weight-only rounding acts on: all but the output head (kept: tied to the input embedding,
    it would be rounded twice, and runtimes keep it apart)."""
    return {
        name: module
        for name, module in model.named_modules()
        if is_matrix_layer(module) and name.split(".")[-1] not in skip
    }


def fake_quantize(model: nn.Module, grid: WeightGrid | GridPlan, skip: tuple[str, ...] = ("lm_head",)) -> dict:
    """Put every linear layer of `model` (but those named in `skip`) on `grid` (or its grid in a plan), in place;
    returns what was done: the layers quantized (`grids`: each one's LayerGrid), those left as they were and why,
    and the weights' mean relative error."""
    plan = GridPlan.of(grid)
    grids, error = {}, []
    left = {name: "kept: the output head" for name in quantizable_layers(model, ()) if name.split(".")[-1] in skip}
    with torch.no_grad():
        for name, module in quantizable_layers(model, skip).items():
            try:
                restored, grids[name] = quantize_layer(weight_of(module), plan.grid_of(name))
            except ValueError as problem:
                left[name] = str(problem)
                continue
            weight = weight_of(module)
            error.append(float((restored - weight).norm() / weight.norm().clamp(min=1e-12)))
            weight.copy_(restored)
    return {
        "grid": plan.name,
        "method": "round to nearest",
        "layers": len(grids),
        "grids": grids,
        "left_as_they_were": left,
        "mean_relative_weight_error": sum(error) / len(error) if error else 0.0,
    }


# Linear layers of a Llama-family decoder layer that read the output of one RMSNorm, and that norm: a per-input-channel
# scale s multiplies their weights and divides the norm's weight, so the layer computes the same function. (o_proj
# and down_proj read no norm: their inputs' scales cannot fold into anything a runtime keeps, so they are rounded
# as they are.)
FOLDABLE = ((("q_proj", "k_proj", "v_proj"), "input_layernorm"), (("gate_proj", "up_proj"), "post_attention_layernorm"))
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)


def activation_aware(
    model: nn.Module,
    grid: WeightGrid | GridPlan,
    calibration: list[torch.Tensor],
    rows: int = 1024,
    round_weights: bool = True,
) -> dict:
    """Activation-aware scaling before rounding (after AWQ, Lin et al. 2024): the weights of layers that read one
    norm's output are multiplied per input channel by s = mean|x|^alpha and the norm's weight divided by s, alpha
    chosen from ALPHAS per group by the error of the rounded layers' outputs on `calibration` token ids. The
    model computes the same function; its scaled weights round better. With `round_weights`, every linear layer but
    the head is then rounded to nearest (the others as they are); without, the scaled weights stay in float (for
    error feedback to round). In place; returns the alphas chosen and, when rounded, each layer's grid."""
    plan = GridPlan.of(grid)
    inputs = _inputs_of(model, {name for names, _ in FOLDABLE for name in names}, calibration, rows)
    chosen, names_of = {}, {module: name for name, module in model.named_modules()}
    with torch.no_grad():
        for layer_name, layer in model.named_modules():
            for names, norm_name in FOLDABLE:
                norm = getattr(layer, norm_name, None)
                parents = [_child(layer, name) for name in names]
                if norm is None or any(parent is None for parent in parents):
                    continue
                x = torch.cat(inputs[names_of[parents[0]]])[:rows]
                magnitude = x.abs().mean(dim=0).clamp(min=1e-8)
                best = None
                for alpha in ALPHAS:
                    scale = magnitude**alpha
                    scale = scale / (scale.max() * scale.min()).sqrt()
                    error = 0.0
                    for linear in parents:
                        trial = quantize_dequantize(linear.weight * scale, plan.grid_of(names_of[linear])) / scale
                        error += float((x @ (trial - linear.weight).T).pow(2).sum())
                    if best is None or error < best[0]:
                        best = (error, alpha, scale)
                _, alpha, scale = best
                for linear in parents:
                    linear.weight.mul_(scale)
                norm.weight.div_(scale)
                chosen[f"{layer_name}.{'+'.join(names)}"] = alpha
    if not chosen:
        raise ValueError("activation-aware scaling folds into a Llama-family decoder's norms; this model has none")
    done = {"grid": plan.name, "method": "activation-aware scaling", "alphas": chosen}
    if round_weights:
        rounded = fake_quantize(model, plan)
        done.update(layers=rounded["layers"], grids=rounded["grids"], left_as_they_were=rounded["left_as_they_were"])
    return done


def _child(layer: nn.Module, name: str) -> nn.Linear | None:
    for path in (name, f"self_attn.{name}", f"mlp.{name}"):
        try:
            found = layer.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(found, nn.Linear):
            return found
    return None


def _inputs_of(model: nn.Module, last_names: set[str], calibration: list[torch.Tensor], rows: int) -> dict:
    """Up to `rows` input rows of every linear layer whose last name is in `last_names`, on `calibration` ids."""
    inputs: dict[str, list[torch.Tensor]] = {}
    hooks = [
        module.register_forward_hook(_keep_input(inputs, name, rows))
        for name, module in model.named_modules()
        if is_matrix_layer(module) and name.split(".")[-1] in last_names
    ]
    try:
        with torch.no_grad():
            for ids in calibration:
                model(input_ids=ids)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


def _keep_input(store: dict, name: str, rows: int):
    def hook(module, args, output):
        flat = args[0].detach().reshape(-1, args[0].shape[-1])
        kept = sum(len(part) for part in store.get(name, []))
        if kept < rows:
            store.setdefault(name, []).append(flat[: rows - kept].float())

    return hook


def error_feedback(
    model: nn.Module, grid: WeightGrid | GridPlan, calibration: list[torch.Tensor], rows: int = 2048
) -> dict:
    """Rounding with error feedback (after GPTQ, Frantar et al. 2023): each layer's input columns are rounded one at a
    time, and what rounding a column lost is passed on to the columns not yet rounded, weighted by the inverse of
    the inputs' second moment X^T X on `calibration` token ids (1% of its mean diagonal added for stability).
    Group scales are set from the weights as they stand when a group is reached. Inputs are the model's as it is
    when called (after activation-aware scaling, where that came first). Quantizes every linear layer but the head
    in place; returns what was done and each layer's grid."""
    plan = GridPlan.of(grid)
    linears = quantizable_layers(model)
    inputs = _inputs_of(model, {name.split(".")[-1] for name in linears}, calibration, rows)
    grids = {}
    with torch.no_grad():
        for name, module in linears.items():
            x = torch.cat(inputs.pop(name))[:rows].double()
            rounded, grids[name] = _round_with_feedback(weight_of(module).double(), x, plan.grid_of(name))
            weight_of(module).copy_(rounded.to(module.weight.dtype))
    return {"grid": plan.name, "method": "error feedback", "layers": len(linears), "rows": rows, "grids": grids}


def _round_with_feedback(
    weight: torch.Tensor, x: torch.Tensor, grid: WeightGrid, block: int = 128
) -> tuple[torch.Tensor, LayerGrid]:
    out_features, in_features = weight.shape
    group = grid.group_size or in_features
    if in_features % group:
        raise ValueError(f"group_size {group} does not divide the layer's {in_features} inputs")
    hessian = x.T @ x / len(x)
    hessian += 0.01 * hessian.diagonal().mean() * torch.eye(in_features, dtype=hessian.dtype)
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    remaining, rounded = weight.clone(), torch.zeros_like(weight)
    scales, zeros = [], []
    scale = zero = None
    # Columns in blocks (a multiple of the group): the errors of a block reach the columns after it in one product,
    # which is the same arithmetic as column by column, in fewer, larger operations (GPTQ's lazy batch updates).
    block = max(group, block // group * group) if grid.group_size else in_features
    for first in range(0, in_features, block):
        last = min(first + block, in_features)
        lost = torch.zeros(out_features, last - first, dtype=weight.dtype)
        for column in range(first, last):
            if column % group == 0:
                scale, zero = _grid_parameters(remaining[:, column : column + group], grid)
                scales.append(scale)
                zeros.append(zero)
            values = remaining[:, column]
            rounded[:, column] = (_codes(values, scale, zero, grid) - zero) * scale
            error = (values - rounded[:, column]) / inverse[column, column]
            remaining[:, column + 1 : last] -= error[:, None] * inverse[column, column + 1 : last][None, :]
            lost[:, column - first] = error
        remaining[:, last:] -= lost @ inverse[first:last, last:]
    return rounded, LayerGrid(torch.stack(scales, dim=1).float(), torch.stack(zeros, dim=1).float(), grid)


def _grid_parameters(block: torch.Tensor, grid: WeightGrid) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) per row of a block of columns [out, group]: what quantize_dequantize uses."""
    if grid.symmetric:
        bound = 2 ** (grid.bits - 1) - 1
        return block.abs().amax(dim=1).clamp(min=1e-12) / bound, torch.zeros(len(block), dtype=block.dtype)
    top = 2**grid.bits - 1
    low, high = block.amin(dim=1), block.amax(dim=1)
    scale = (high - low).clamp(min=1e-12) / top
    return scale, -low / scale if grid.float_zero else torch.round(-low / scale)


def _codes(values: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, grid: WeightGrid) -> torch.Tensor:
    if grid.symmetric:
        bound = 2 ** (grid.bits - 1) - 1
        return torch.clamp(torch.round(values / scale), -bound, bound)
    return torch.clamp(torch.round(values / scale + zero), 0, 2**grid.bits - 1)


class WeightOnlyConfig(Section):
    """`weight_only`: a causal LM's linear layers (all but the head) stored as int8 or int4 codes, in groups of
    `group_size` inputs (None: one scale per output row), symmetric or with a zero point; `method` says how the
    codes are chosen: `rtn` (round to nearest), `aware` (activation-aware scales folded into the norms first),
    `feedback` (rounding with error feedback), or `aware+feedback`, each on `calibration_windows` windows of
    `calibration_tokens` tokens of calibration text (never the evaluation text)."""

    bits: Literal[4, 8] = 4
    group_size: int | None = Field(default=32, ge=16)
    symmetric: bool = False
    zero_point: Literal["integer", "float"] = "integer"  # an asymmetric grid's (WeightGrid.float_zero)
    method: Literal["rtn", "aware", "feedback", "aware+feedback"] = "aware+feedback"
    calibration_windows: int = Field(default=16, ge=1)
    calibration_tokens: int = Field(default=256, ge=8)
    # The output head: kept as it is, or rounded to int8 (symmetric, in groups of group_size, 32 when unset), untied
    # from the input embedding, which stays as it is. In a small LM the head is a large share of the bytes a
    # decoded token reads (SmolLM2: 113 MB of FP32 against 60 MB of int4 layers).
    head: Literal["keep", "int8"] = "keep"
    # Layers stored as int8 (symmetric, the same groups) in an int4 model, by last name (`down_proj`), a longer tail
    # (`layers.0.mlp.down_proj`) or full name: mixed precision for the layers rounding hurts most. The report names
    # them with the grid.
    int8_layers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> WeightOnlyConfig:
        if self.zero_point == "float" and self.symmetric:
            raise ValueError("zero_point: float is for an asymmetric grid (symmetric: false); a symmetric one has none")
        if self.int8_layers and self.bits == 8:
            raise ValueError("int8_layers: every layer is int8 already (bits: 8); it is for an int4 model")
        attention = {name for name in self.int8_layers if name.split(".")[-1] in FUSED_ATTENTION}
        tails = {name.rpartition(".")[0] for name in attention}
        for tail in tails:
            named = {name.split(".")[-1] for name in attention if name.rpartition(".")[0] == tail}
            if named != set(FUSED_ATTENTION):
                missing = ", ".join(sorted(set(FUSED_ATTENTION) - named))
                raise ValueError(
                    f"int8_layers: {', '.join(sorted(attention))} without {missing}: q_proj, k_proj and v_proj run as "
                    "one fused matrix product in ONNX Runtime GenAI, which holds one bit width; name all three"
                )
        return self

    @property
    def grid(self) -> WeightGrid:
        return WeightGrid(self.bits, self.group_size, self.symmetric, self.zero_point == "float")

    @property
    def plan(self) -> GridPlan:
        int8 = WeightGrid(8, self.group_size, True)
        return GridPlan(self.grid, tuple((name, int8) for name in self.int8_layers))


# Projections ONNX Runtime GenAI's builder fuses into one MatMulNBits: one bit width and group size for the three.
FUSED_ATTENTION = ("q_proj", "k_proj", "v_proj")


def quantize_weights(model: nn.Module, config: WeightOnlyConfig, calibration: list[torch.Tensor]) -> dict:
    """`model` (in place) on `config`'s grids by its method; returns what was done, with each layer's grid."""
    plan = config.plan
    layers = quantizable_layers(model)
    unmatched = [name for name in config.int8_layers if not any(plan_matches(layer, name) for layer in layers)]
    if unmatched:
        raise ValueError(f"int8_layers: {', '.join(unmatched)} names no linear layer of this model")
    if config.method == "rtn":
        done = fake_quantize(model, plan)
    elif config.method == "aware":
        done = activation_aware(model, plan, calibration)
    else:
        done = activation_aware(model, plan, calibration, round_weights=False) if config.method != "feedback" else {}
        done = {**done, **error_feedback(model, plan, calibration), "method": config.method}
    if config.head == "int8":
        done["head"] = round_head(model, WeightGrid(8, config.group_size or 32, True))
    return done


def round_head(model: nn.Module, grid: WeightGrid) -> LayerGrid:
    """The output head (`lm_head`) untied from the input embedding and rounded to nearest on `grid`, in place."""
    head = model.get_output_embeddings()
    with torch.no_grad():
        head.weight = nn.Parameter(head.weight.detach().clone())  # the embedding keeps its own weights
        rounded, layer = quantize_layer(head.weight, grid)
        head.weight.copy_(rounded)
    model.config.tie_word_embeddings = False
    return layer


class WeightOnly(Technique):
    """Weight-only int8/int4 of a causal LM. The text-generation run applies it (pipeline/generate.py calls
    `quantize_weights` on calibration windows of its text); the stage pipeline of the other tasks never does, since
    their structures are not `decoder`."""

    name, config, works_on, tag = "weight_only", WeightOnlyConfig, "torch", "weight-only"
    structures = ("decoder",)

    def variant(self, config: WeightOnlyConfig) -> str:
        mixed = f"-int8:{'+'.join(config.int8_layers)}" if config.int8_layers else ""
        return f"{config.grid.name}-{config.method}{mixed}" + ("-head8" if config.head == "int8" else "")

    def apply(self, config: WeightOnlyConfig, source: TorchModel, context: StageContext) -> StageOutput:
        raise GreencompressError(
            "weight_only is applied by a text-generation run (pipeline/generate.py), not by the stage pipeline"
        )

"""Dynamic int8 (W8A8) of a causal LM's linear layers in PyTorch: int8 weights (one scale per output channel, or
one per layer), each input quantized to 8 bits at run time from its own range, int8 matrix products (fbgemm or
oneDNN, whichever PyTorch's quantized engine is), the result scaled back to FP32.

This is the mode people reach for first (`torch.ao.quantization.quantize_dynamic`), and the one that suits a
prefill's large matrix products better than decode's single rows: quantizing the activations and requantizing
the outputs costs time at every step whatever the batch, and the weights read per token are int8 either way.
A text-generation run measures it beside weight-only grids so the report shows where it is slower. PyTorch
2.14 marks this API deprecated (pytorch/ao#2259); it still runs, and the run measures it as users run it.
"""

from __future__ import annotations

import copy
import warnings
from typing import Literal

from torch import nn

from greencompress.compress.technique import StageContext, StageOutput, Technique, TorchModel
from greencompress.compress.weight_only import quantizable_layers
from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError


class DynamicInt8Config(Section):
    """`dynamic_int8`: every linear layer but the output head (or with it, `head: int8`) as PyTorch's dynamically
    quantized int8 Linear; `per_channel` weights (one scale per output row) or one scale per layer."""

    per_channel: bool = True
    head: Literal["keep", "int8"] = "keep"


def quantize_dynamic_int8(model: nn.Module, config: DynamicInt8Config) -> tuple[nn.Module, dict]:
    """A copy of `model` with its linear layers (nn.Linear; GPT-2's Conv1D has no dynamic int8 form and stays)
    dynamically quantized; returns it and what was done."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    qconfig = per_channel_dynamic_qconfig if config.per_channel else default_dynamic_qconfig
    skip = () if config.head == "int8" else ("lm_head",)
    chosen = {name for name, module in quantizable_layers(model, skip).items() if isinstance(module, nn.Linear)}
    if not chosen:
        raise ValueError("dynamic_int8 quantizes nn.Linear layers; this model has none (GPT-2's are Conv1D)")
    quantized = copy.deepcopy(model)
    if config.head == "int8":
        head = quantized.get_output_embeddings()
        head.weight = nn.Parameter(head.weight.detach().clone())  # untied: the embedding keeps its FP32 rows
        quantized.config.tie_word_embeddings = False
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecat.*", category=UserWarning)  # told once, in the docstring
        warnings.filterwarnings("ignore", message=".*deprecat.*", category=DeprecationWarning)
        quantize_dynamic(quantized, {name: qconfig for name in chosen}, inplace=True)
    left = sorted(name for name, module in quantizable_layers(model, ()).items() if name not in chosen)
    return quantized.eval(), {
        "method": "dynamic int8 (W8A8), PyTorch int8 kernels",
        "weights": "int8 per output channel" if config.per_channel else "int8 per layer",
        "activations": "8-bit per tensor, quantized at run time",
        "layers": len(chosen),
        "left_as_they_were": len(left),
        "head": "int8" if config.head == "int8" else "kept as it is",
    }


class DynamicInt8(Technique):
    """W8A8 dynamic int8 of a causal LM in PyTorch, measured on its own int8 kernels. The text-generation run
    applies it (pipeline/generate.py); the stage pipeline of the other tasks never does."""

    name, config, works_on, tag = "dynamic_int8", DynamicInt8Config, "torch", "w8a8-dynamic"
    structures = ("decoder",)

    def variant(self, config: DynamicInt8Config) -> str:
        return (
            "w8a8-dynamic" + ("" if config.per_channel else "-per-layer") + ("-head8" if config.head == "int8" else "")
        )

    def apply(self, config: DynamicInt8Config, source: TorchModel, context: StageContext) -> StageOutput:
        raise GreencompressError(
            "dynamic_int8 is applied by a text-generation run (pipeline/generate.py), not by the stage pipeline"
        )

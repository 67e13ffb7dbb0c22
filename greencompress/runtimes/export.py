"""ONNX export of a PyTorch model, and the parity check that the exported graph computes the same thing."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError, ParityError
from greencompress.core.logs import quiet_libraries
from greencompress.models.encoder_layout import attention_shape
from greencompress.models.inputs import ModelInputs
from greencompress.models.serving import Scorer, logits_only, output_names, outputs_of, served
from greencompress.runtimes.base import RUNTIMES, batch_size_of

log = logging.getLogger(__name__)


class ExportSpec(Section):
    """ONNX export and the parity check against PyTorch."""

    opset: int = Field(default=18, ge=13)
    # Transformers: ONNX Runtime's transformer optimizer (Attention, SkipLayerNormalization, BiasGelu,
    # EmbedLayerNormalization) on the exported file, before quantization, where it knows the architecture. The fused
    # file holds ONNX Runtime's own operators: `auto` fuses when ONNX Runtime is the only runtime of files measured,
    # and keeps the portable graph when another (OpenVINO) must read the same file.
    transformer_fusion: Literal["auto"] | bool = "auto"
    parity_samples: int = Field(default=64, ge=1)
    parity_max_abs_diff: float = Field(default=1e-3, gt=0)
    parity_min_top1_agreement: float = Field(default=0.99, gt=0, le=1)


EXPORTER = "torch.onnx.export(dynamo=True)"  # the torch.export-based exporter; TorchScript export is deprecated
# Transformers: the TorchScript exporter, whose graph ONNX Runtime's transformer optimizer fuses (_export_transformer).
TOKEN_EXPORTER = "torch.onnx.export(dynamo=False)"
TOKEN_OPSET = 17  # the highest the TorchScript exporter writes


def exporter_of(inputs: ModelInputs, opset: int) -> tuple[str, int]:
    """(the exporter used for a model with these inputs, the opset it writes)."""
    return (TOKEN_EXPORTER, min(opset, TOKEN_OPSET)) if inputs.are_tokens else (EXPORTER, opset)


@dataclass(frozen=True)
class Parity:
    """How closely the ONNX model matches PyTorch on real inputs."""

    samples: int
    max_abs_diff: float
    top1_agreement: float
    fusion: dict | str | None = None  # transformers: the operators ONNX Runtime's optimizer fused, or why none


def runtimes_without_fusion(runtimes: list[str]) -> list[str]:
    """The runtimes of files among `runtimes` that cannot read ONNX Runtime's fused operators (all but its own)."""
    return [
        name for name in runtimes if RUNTIMES.get(name).runs == "onnx" and not RUNTIMES.get(name).reads_fused_operators
    ]


@dataclass(frozen=True)
class FusionPlan:
    """Which exports a run makes of each model: the portable graph, ONNX Runtime's fused one, or both side by side
    (ONNX Runtime then runs the fused files, other runtimes the portable ones), and what the report says of it."""

    portable: bool
    fused: bool
    note: str | None = None


def with_fusion(spec: ExportSpec, fused: bool) -> ExportSpec:
    """`spec` deciding one export: fused (ONNX Runtime's operators) or portable."""
    return spec.model_copy(update={"transformer_fusion": fused})


def plan_fusion(spec: ExportSpec, runtimes: list[str], inputs: ModelInputs) -> FusionPlan:
    """The exports for `spec.transformer_fusion` on these runtimes: `auto` fuses where ONNX Runtime runs the files
    and the architecture has fusions, and keeps a portable twin for every other runtime of files."""
    if spec.transformer_fusion is False or inputs.fusion is None:
        unknown = inputs.are_tokens and spec.transformer_fusion is not False
        return FusionPlan(
            portable=True,
            fused=False,
            note=("none: ONNX Runtime has no transformer fusions for this architecture" if unknown else None),
        )
    if spec.transformer_fusion is True:
        return FusionPlan(portable=False, fused=True)
    file_runtimes = [name for name in runtimes if RUNTIMES.get(name).runs == "onnx"]
    others = runtimes_without_fusion(runtimes)
    if not any(RUNTIMES.get(name).reads_fused_operators for name in file_runtimes):
        return FusionPlan(
            portable=True,
            fused=False,
            note=(
                "off: no ONNX Runtime among the runtimes of files, and only it reads its fused operators "
                "(export.transformer_fusion: auto)"
            ),
        )
    if not others:
        return FusionPlan(portable=False, fused=True)
    return FusionPlan(
        portable=True,
        fused=True,
        note=(
            f"ONNX Runtime runs a fused twin of each file, and {' and '.join(others)} the portable graph, which holds "
            f"none of ONNX Runtime's own operators (export.transformer_fusion: auto)"
        ),
    )


def export_onnx(model: nn.Module, inputs: ModelInputs, path: Path, opset: int, fusion: bool = False) -> Path:
    """Export `model` to a single self-contained ONNX file with a dynamic batch (and sequence) dimension.

    `inputs`: the model's inputs (`ModelInputs.image(shape)` for an image model). `fusion`: apply ONNX Runtime's
    transformer fusions.
    """
    _export(model, inputs, path, opset, fusion)
    return path


def _export(model: nn.Module, inputs: ModelInputs, path: Path, opset: int, fusion: bool) -> dict:
    """The export of what `model` serves (models/serving.py); returns what was done beyond it: for a transformer, the
    fused operators (`fusion`)."""
    if inputs.are_tokens:
        return _export_transformer(model, inputs, path, opset, fusion)
    # Batch 2, not 1: torch.export specializes dimensions of size 1, which would fix the batch size.
    example = torch.randn(2, *inputs.image_shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    chatter = io.StringIO()  # the exporter prints its steps; keep them for the log, not the terminal
    module = served(model)
    with contextlib.redirect_stdout(chatter):
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            dynamo=True,
            opset_version=opset,
            input_names=["input"],
            output_names=list(output_names(module)),
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
    log.debug("exporter output:\n%s", chatter.getvalue())
    return {}


def _export_transformer(model: nn.Module, inputs: ModelInputs, path: Path, opset: int, fusion: bool) -> dict:
    # The TorchScript exporter, not torch.export: ONNX Runtime's transformer optimizer matches the graph it
    # writes for eager attention, while on torch.export's graph of MiniLM it stopped with "Graph is not a DAG"
    # (torch 2.14, onnxruntime 1.32). Its trace is checked on texts of several lengths by the parity check.
    module = served(model)
    outputs = list(output_names(module))
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs.names}
    # Token states (last_hidden_state) keep a sequence axis; logits and sentence embeddings have a batch axis only.
    axes.update({name: {0: "batch", 1: "sequence"} if "hidden" in name else {0: "batch"} for name in outputs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values; parity on real text decides
        torch.onnx.export(
            module.eval(),
            inputs.example(2, 16),
            str(path),
            dynamo=False,
            opset_version=exporter_of(inputs, opset)[1],
            input_names=list(inputs.names),
            output_names=outputs,
            dynamic_axes=axes,
        )
    if not fusion or inputs.fusion is None:
        return {"fusion": None if not fusion else "none: ONNX Runtime has no transformer fusions for this architecture"}
    # The head count of the model as it is now (pruning may have removed heads), not of the folder's config: the
    # fusion reshapes by it. One count for the whole graph, so layers that differ are left unfused.
    try:
        shape = attention_shape(model)
    except GreencompressError:  # a layout greencompress cannot read (it cannot prune its heads either): the config's
        shape = (inputs.fusion.num_heads, inputs.fusion.hidden_size)
    if shape is None:
        return {
            "fusion": "none: the layers have different attention head counts (ONNX Runtime's Attention fusion "
            "takes one count per graph)"
        }
    from onnxruntime.transformers import optimizer

    # It logs each pattern tried, at DEBUG, and warns that a pruned attention's width differs from the model's
    # (it fuses it right: parity checks the file); what it fused is reported below.
    with quiet_libraries(logging.WARNING), contextlib.redirect_stdout(io.StringIO()):
        optimized = optimizer.optimize_model(
            str(path), model_type=inputs.fusion.model_type, num_heads=shape[0], hidden_size=shape[1], opt_level=0
        )
        fused = {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
    optimized.save_model_to_file(str(path))
    log.info("transformer fusion: %s", ", ".join(f"{count} {name}" for name, count in fused.items()) or "nothing fused")
    return {"fusion": fused}


def check_parity(
    reference, candidate, batches, max_abs_diff: float, min_top1_agreement: float, scorer: Scorer = logits_only
) -> Parity:
    """Compare two runners' first outputs (logits, or a sentence embedding) over `batches` of inputs, and the top-1
    of their scores (`scorer`, the task's); raises ParityError when they disagree."""
    worst, agree, total = 0.0, 0, 0
    for inputs, _ in batches:
        expected, actual = outputs_of(reference, inputs), outputs_of(candidate, inputs)
        worst = max(worst, float(np.abs(expected[0] - actual[0]).max()))
        agree += int((scorer(expected)[0].argmax(1) == scorer(actual)[0].argmax(1)).sum())
        total += batch_size_of(inputs)
    parity = Parity(samples=total, max_abs_diff=worst, top1_agreement=agree / total)
    if parity.max_abs_diff > max_abs_diff or parity.top1_agreement < min_top1_agreement:
        raise ParityError(
            f"the exported ONNX model does not match PyTorch on {total} real inputs: max |difference| "
            f"{parity.max_abs_diff:.3g} (limit {max_abs_diff:g}), top-1 agreement {parity.top1_agreement:.2%} "
            f"(limit {min_top1_agreement:.0%}). The export is not trustworthy; nothing was quantized."
        )
    return parity


def export_with_parity(
    model: nn.Module,
    inputs: ModelInputs,
    output: Path,
    spec: ExportSpec,
    parity_batches,
    threads: int,
    scorer: Scorer = logits_only,
) -> Parity:
    """Export `model` to `output` and check it against PyTorch on `parity_batches`; the file appears only if it passes.

    Text batches come padded to their longest text, so the check covers several lengths and paddings.
    """
    from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner
    from greencompress.runtimes.pytorch import TorchRunner

    log.info("stage export: %s to ONNX (%s, opset %d)", output.name, *exporter_of(inputs, spec.opset))
    temporary = output.with_name(f".{output.name}.tmp")
    done = _export(model, inputs, temporary, spec.opset, spec.transformer_fusion is not False)
    parity = check_parity(
        TorchRunner(model),
        OnnxRuntimeRunner(temporary, threads),
        parity_batches,
        spec.parity_max_abs_diff,
        spec.parity_min_top1_agreement,
        scorer,
    )
    temporary.replace(output)  # only a model that passed parity gets its real name
    log.info(
        "parity: max |diff| %.3g, top-1 agreement %.2f%% on %d inputs",
        parity.max_abs_diff,
        100 * parity.top1_agreement,
        parity.samples,
    )
    return replace(parity, fusion=done.get("fusion")) if "fusion" in done else parity


def convert_to_fp16(source: Path, output: Path) -> Path:
    """An FP16 copy of an FP32 ONNX file for GPU runtimes: weights and compute in FP16, inputs and logits kept FP32.

    Values beyond FP16's range are clamped to it (ONNX Runtime's float16 converter); callers check accuracy.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    onnx.save(convert_float_to_float16(model, keep_io_types=True), str(output))
    return output


def is_quantized(path: Path) -> bool:
    """Whether an ONNX file holds int8 (QDQ or QOperator) nodes."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(
        node.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger")
        for node in graph.node
    )


def size_at_half_precision(path: Path) -> int:
    """Bytes of an FP32 ONNX file with its FP32 weights held at 2 bytes each (bf16, fp16): what a runtime keeps."""
    import onnx
    from onnx import TensorProto

    graph = onnx.load(str(path), load_external_data=False).graph
    float_elements = sum(
        int(np.prod(tensor.dims)) for tensor in graph.initializer if tensor.data_type == TensorProto.FLOAT
    )
    return path.stat().st_size - 2 * float_elements

"""Which artifacts a run measures: every model it made, on every runtime it lists, at every precision allowed.

A model the run made (the original, the compressed one, their exported and quantized files) is
put on each runtime that runs its kind (a file, or the PyTorch model). Where the CPU has a bf16
unit (or the recipe asks), runtimes that can run FP32 weights in bf16 (OpenVINO's precision hint,
PyTorch autocast) get a bf16 artifact of each FP32 model too: a precision of its own, with its
own accuracy, compared with FP32 on the same runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from greencompress.compress.technique import TorchModel, tag_words
from greencompress.runtimes import RUNTIMES
from greencompress.runtimes.base import Artifact, RuntimeSpec
from greencompress.runtimes.export import size_at_half_precision


@dataclass(frozen=True)
class Made:
    """A model the run started from or made, before it is put on runtimes."""

    model: TorchModel  # the PyTorch model; for a file, the one it was exported from
    path: Path | None  # the ONNX file; None for the PyTorch model itself
    precision: str
    model_techniques: tuple[str, ...]
    file_techniques: tuple[str, ...]
    params: int
    macs: int
    key: str  # the stage key of what made it
    variant: str = ""  # which of several stages of one file technique made it (quantize: "dynamic", "static")
    fused: bool = False  # the file holds ONNX Runtime's fused transformer operators (only ONNX Runtime reads them)


def reduced_precisions(benchmark, device) -> tuple[tuple[str, ...], str]:
    """The precisions besides FP32 this run measures FP32 models at, and why, in words for the report.

    On the CPU: bf16 where it has a bf16 unit (benchmark.bf16). On a GPU: FP16, and BF16 where the GPU
    supports it (weights cast, not autocast).
    """
    if device.kind == "cpu":
        bf16, reason = benchmark.bf16_decision()
        return (("bf16",) if bf16 else ()), reason
    import torch

    if torch.cuda.is_bf16_supported():
        return ("fp16", "bf16"), f"on {device.name}: FP16 and BF16 measured with the weights cast to them"
    return ("fp16",), f"on {device.name}: FP16 measured with the weights cast to it; this GPU has no BF16"


def artifact_name(runtime: str, model_techniques: tuple[str, ...], precision: str, variant: str = "") -> str:
    """An artifact's name for people: `onnxruntime-pruned-finetuned-int8` (`-int8-dynamic` beside a static one).

    Reports read the lineage fields instead."""
    return "-".join(part for part in (runtime, tag_words(model_techniques), precision, variant) if part)


def plan_artifacts(
    made: list[Made],
    runtimes: list[str],
    reduced: tuple[str, ...],
    reference_path: Path | None,
    reference_runtime: str = "torch",
) -> dict[str, tuple[Artifact, object]]:
    """Every artifact by name, with what its runtime runs (a file path or a torch module).

    The as-trained reference comes first: the original model on PyTorch (`torch`, or `torch-cuda` on a GPU),
    also at each reduced precision in `reduced` (bf16, fp16) it supports. Then, per runtime in order, each made
    model it can run, then those of its FP32 models at each precision in `reduced` that it supports.
    """
    original = made[0]
    artifacts = {}
    reference_spec = RUNTIMES.get(reference_runtime)
    for precision in ("fp32", *(p for p in reduced if p in reference_spec.reduced_precisions)):
        reference = Artifact.of_file(
            f"{reference_runtime}-{precision}",
            reference_runtime,
            precision,
            reference_path,
            original.params,
            original.macs,
            source="torch",
        )
        reference = _at_reduced_precision(reference, original.model.module) if precision != "fp32" else reference
        artifacts[reference.name] = (reference, original.model.module)
    fused_twins = {_lineage(item) for item in made if item.fused}
    for runtime in runtimes:
        spec = RUNTIMES.get(runtime)
        runs = [item for item in made if _runs(spec, item, reference_runtime, fused_twins)]
        precisions = [(item, item.precision) for item in runs]
        for precision in (p for p in reduced if p in spec.reduced_precisions):
            precisions += [(item, precision) for item in runs if item.precision == "fp32" and not item.file_techniques]
        for item, precision in precisions:
            source = item.path if spec.runs == "onnx" else item.model.module
            variant = item.variant if precision == item.precision else ""
            artifact = Artifact.of_file(
                artifact_name(runtime, item.model_techniques, precision, variant),
                runtime,
                precision,
                item.path,
                item.params,
                item.macs,
                source=spec.runs,
                model_techniques=item.model_techniques,
                file_techniques=item.file_techniques if precision == item.precision else (),
            )
            if precision != item.precision:
                artifact = _at_reduced_precision(artifact, source)
            artifacts.setdefault(artifact.name, (artifact, source))
    return artifacts


def _lineage(item: Made) -> tuple:
    return item.model_techniques, item.file_techniques, item.variant


def _runs(spec: RuntimeSpec, item: Made, reference_runtime: str, fused_twins: set) -> bool:
    if spec.runs == "onnx":
        if item.path is None:
            return False
        # ONNX Runtime runs the fused file where one was made; every other runtime the portable one.
        if spec.reads_fused_operators:
            return item.fused or _lineage(item) not in fused_twins
        return not item.fused
    # The reference runtime runs the original model as the reference already; other torch runtimes run it too.
    return item.path is None and bool(item.model_techniques or spec.name != reference_runtime)


def _at_reduced_precision(artifact: Artifact, source) -> Artifact:
    """An FP32 model run at bf16/fp16 holds its weights at 2 bytes each: its size is that, not the FP32 file's.

    `source` is what the runtime runs: an ONNX file (its FP32 initializers count) or the PyTorch model (its FP32
    parameters and buffers count; the artifact's file is then the checkpoint).
    """
    if artifact.path is None:
        return artifact
    if isinstance(source, Path):
        return replace(artifact, size_bytes=size_at_half_precision(source))
    float_elements = sum(t.numel() for t in source.state_dict().values() if t.dtype == torch.float32)
    return replace(artifact, size_bytes=artifact.size_bytes - 2 * float_elements)

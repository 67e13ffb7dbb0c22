"""int8 quantization of an exported ONNX model with ONNX Runtime: static (QDQ, calibrated) or dynamic."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from torch.utils.data import Subset

from greencompress.compress.finetune import FinetuneConfig
from greencompress.compress.technique import NotForThisModel, StageContext, StageOutput, Technique
from greencompress.core.config import Section
from greencompress.core.hardware import cpu_info
from greencompress.core.logs import quiet_libraries
from greencompress.models.data import batches
from greencompress.models.serving import Scorer, logits_only
from greencompress.runtimes.base import batch_size_of

log = logging.getLogger(__name__)


class QuantizeConfig(Section):
    """int8 quantization with ONNX Runtime (QDQ format): post-training, or after quantization-aware fine-tuning.

    `qat` (a fine-tuning section; a learning rate near 1e-3 suits it) first fine-tunes the PyTorch
    model under simulated int8 rounding, for when post-training int8 loses too much accuracy.
    """

    method: Literal["static", "dynamic"] = "static"
    calibration_samples: int = Field(default=256, ge=1)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    reduce_range: Literal["auto"] | bool = "auto"
    # uint8 asymmetric activations suit CPU kernels (u8 x s8); int8 symmetric ones are what TensorRT's int8 needs.
    activation_type: Literal["uint8", "int8"] = "uint8"
    qat: FinetuneConfig | None = None
    # Static int8: unless the int8 file's top-1 on held-out calibration-split samples (never the evaluated ones) is
    # shown to be at most this many points below the FP32 file's (by the paired drop's 95% upper bound), layers are
    # kept in float, those with the largest input peaks first (1, 2, 4, ... of them); None: no check. The bound
    # needs samples: even full agreement bounds the drop at about 164 / (fallback_samples + 2) points.
    fallback_max_drop: float | None = Field(default=None, ge=0)
    fallback_samples: int = Field(default=1024, ge=8)

    @model_validator(mode="after")
    def _qat_needs_static_per_channel(self) -> QuantizeConfig:
        if self.qat is not None and (self.method != "static" or not self.per_channel):
            raise ValueError("qat simulates static, per-channel int8: it needs method: static and per_channel: true")
        if self.qat is not None and self.activation_type != "uint8":
            raise ValueError("qat simulates ONNX Runtime's uint8 activations: it needs activation_type: uint8")
        if self.fallback_max_drop is not None and self.method != "static":
            raise ValueError("fallback_max_drop keeps layers of a static int8 model in float: it needs method: static")
        if self.method == "dynamic" and self.activation_type != "uint8":
            raise ValueError("dynamic quantization computes uint8 activations at run time: activation_type: uint8")
        return self


@dataclass(frozen=True)
class QuantizeResult:
    """What the quantize stage made and the settings it actually used."""

    path: Path
    method: str
    calibration_samples: int
    calibration_method: str | None
    per_channel: bool
    reduce_range: bool
    reduce_range_reason: str
    activation_type: str
    weight_type: str
    format: str
    trained_input_ranges: int = 0  # layer inputs quantized on the range QAT trained under, not a calibrated one
    float_operators: tuple[str, ...] = ()  # operator types left in float by design (a transformer's sensitive ones)
    kept_in_float: tuple[str, ...] = ()  # layers the accuracy fallback kept in float
    fallback: tuple[
        dict, ...
    ] = ()  # each fallback step: layers kept in float, top-1 drop in points on held-out samples


def resolve_reduce_range(setting: str | bool) -> tuple[bool, str]:
    """Whether to quantize weights to 7 bits, and why: needed where u8 x s8 products can saturate (no VNNI)."""
    if setting != "auto":
        return bool(setting), "set in the recipe"
    if cpu_info().has_vnni:
        return False, "auto: this CPU has VNNI, full 8-bit range is safe"
    return True, "auto: this CPU lacks VNNI, so 7-bit weights avoid int16 saturation in u8 x s8 kernels"


def quantize_onnx(
    fp32_path: Path,
    output_path: Path,
    config: QuantizeConfig,
    calibration,
    batch_size: int,
    progress=None,
    input_ranges: dict[str, tuple[float, float]] | None = None,
    transformer: bool = False,
    scorer: Scorer = logits_only,
) -> QuantizeResult:
    """Quantize `fp32_path` to int8 at `output_path`; static mode calibrates on `calibration` samples.

    `input_ranges` (layer name -> (min, max), from quantization-aware training) fixes the range of
    each named Conv/Gemm layer's input instead of calibrating it; the other tensors are calibrated.
    `transformer`: the graph is a transformer encoder's (a file taking tokens is known to be one; a ViT's takes
    images), whose static int8 keeps the operators known to be sensitive in float. `scorer` scores the file's
    outputs for the fallback's top-1 (the task's).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reduce_range, reason = resolve_reduce_range(config.reduce_range)
    with tempfile.TemporaryDirectory() as scratch:
        # Shape inference and graph folding first, as ONNX Runtime's quantization guide recommends.
        prepared = Path(scratch) / "prepared.onnx"
        # A graph with ONNX Runtime's fused transformer operators: symbolic shape inference stops on them
        # ("Incomplete symbolic shape inference"), and the quantizer must be told the float type it cannot infer.
        # A transformer's graph, fused or not, stops it too (the exported attention mask's shape arithmetic).
        fused, tokens = _graph_kind(fp32_path)
        with quiet_libraries():
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=fused or tokens)
        if fused:
            _type_fused_outputs(prepared)
        extra = {"DefaultTensorType": 1} if fused or tokens else {}  # 1: onnx.TensorProto.FLOAT
        # A transformer's static int8 quantizes its matrix products only: LayerNorm, GELU, the residual Adds and
        # Softmax stay in float, where naive min-max calibration is known to wreck accuracy (optimum#151). The small
        # Gemm heads stay float too: the exporter may share their bias tensor with a LayerNorm's, which int8 cannot.
        only = ("MatMul",) if (tokens or transformer) and config.method == "static" else None
        float_operators = _float_operators(_operator_types(prepared), only) if only else ()
        kept, steps = (), ()
        if config.method == "dynamic":
            with quiet_libraries():
                quantize_dynamic(
                    str(prepared),
                    str(output_path),
                    weight_type=QuantType.QInt8,
                    per_channel=config.per_channel,
                    reduce_range=reduce_range,
                    extra_options=extra,
                )
            samples, overrides = 0, {}
        else:
            overrides = _range_overrides(prepared, input_ranges or {})

            def quantize(excluded: tuple[str, ...]) -> int:
                return _quantize_static(
                    prepared,
                    output_path,
                    config,
                    calibration,
                    batch_size,
                    reduce_range,
                    overrides,
                    progress,
                    extra,
                    only,
                    excluded,
                )

            samples = quantize(())
            if config.fallback_max_drop is not None:
                from greencompress.compress.fallback import keep_layers_in_float

                held_out = Subset(calibration, range(samples, min(len(calibration), samples + config.fallback_samples)))
                kept, steps = keep_layers_in_float(
                    prepared, output_path, quantize, held_out, batch_size, config.fallback_max_drop, only, scorer
                )
    return QuantizeResult(
        path=output_path,
        method=config.method,
        calibration_samples=samples,
        calibration_method=config.calibration_method if config.method == "static" else None,
        per_channel=config.per_channel,
        reduce_range=reduce_range,
        reduce_range_reason=reason,
        activation_type=(
            ("int8 (symmetric)" if config.activation_type == "int8" else "uint8")
            if config.method == "static"
            else "uint8 (computed per batch at run time)"
        ),
        weight_type="int8",
        format="QDQ" if config.method == "static" else "QOperator (dynamic)",
        trained_input_ranges=len(overrides),
        float_operators=float_operators,
        kept_in_float=kept,
        fallback=steps,
    )


def _graph_kind(path: Path) -> tuple[bool, bool]:
    """(holds ONNX Runtime's fused transformer operators, takes integer token tensors rather than float images)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    fused = any(node.domain == "com.microsoft" for node in graph.node)
    tokens = any(
        item.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) for item in graph.input
    )
    return fused, tokens


def _float_operators(types: set[str], quantized: tuple[str, ...]) -> tuple[str, ...]:
    """The compute operators of a graph left in float when only `quantized` types are (shape plumbing not named)."""
    plumbing = {
        "Shape",
        "Gather",
        "Unsqueeze",
        "Concat",
        "Reshape",
        "Transpose",
        "Cast",
        "Constant",
        "Slice",
        "Squeeze",
        "Expand",
        "Range",
        "Equal",
        "Where",
        "And",
        "GreaterOrEqual",
        "Flatten",
        "Identity",
        "ConstantOfShape",
    }
    return tuple(sorted(types - set(quantized) - plumbing))


def _operator_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}


def _type_fused_outputs(path: Path) -> None:
    """Declare the element type of ONNX Runtime's fused operators' outputs, which ONNX shape inference cannot infer.

    Without it the static quantizer skips every product fed by a fused LayerNorm or Attention ("failed to infer the
    type of tensor"), leaving a transformer nearly all float. Their outputs are float, but for the mask index
    of EmbedLayerNormalization (int32).
    """
    import onnx

    model = onnx.load(str(path))
    typed = {info.name for info in (*model.graph.value_info, *model.graph.output, *model.graph.input)}
    for node in model.graph.node:
        if node.domain != "com.microsoft":
            continue
        for index, name in enumerate(node.output):
            if name and name not in typed:
                element = (
                    onnx.TensorProto.INT32
                    if node.op_type == "EmbedLayerNormalization" and index == 1
                    else onnx.TensorProto.FLOAT
                )
                model.graph.value_info.append(onnx.helper.make_tensor_value_info(name, element, None))
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))


def _range_overrides(model_path: Path, input_ranges: dict[str, tuple[float, float]]) -> dict[str, list[dict]]:
    """ONNX Runtime tensor overrides that put each named layer's input on the range it was trained under.

    Layers are found by their weight: the exporter names a Conv/Gemm weight initializer after the
    module (`layer1.0.conv1.weight`), and batch-norm folding keeps that name.
    """
    import numpy as np
    import onnx

    if not input_ranges:
        return {}
    overrides = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1:
            layer = node.input[1].removesuffix(".weight")
            if layer in input_ranges:
                low, high = input_ranges[layer]
                if node.input[0] in overrides:  # one tensor feeding two layers (a block input): one grid holding both
                    shared = overrides[node.input[0]][0]
                    low, high = min(low, float(shared["rmin"])), max(high, float(shared["rmax"]))
                overrides[node.input[0]] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]
    log.info(
        "quantize: %d layer inputs take the range quantization-aware training used (%d layers trained)",
        len(overrides),
        len(input_ranges),
    )
    return overrides


def _quantize_static(
    prepared: Path,
    output_path: Path,
    config: QuantizeConfig,
    calibration,
    batch_size: int,
    reduce_range: bool,
    overrides: dict[str, list[dict]],
    progress,
    extra: dict,
    only: tuple[str, ...] | None = None,
    excluded: tuple[str, ...] = (),
) -> int:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    samples = min(config.calibration_samples, len(calibration))
    input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
    task = progress.add_task("calibrating", total=samples) if progress else None

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = batches(calibration, batch_size, limit=samples)

        def get_next(self):
            inputs, _ = next(self.batches, (None, None))
            if inputs is None:
                return None
            if progress:
                progress.update(task, advance=batch_size_of(inputs))
            return inputs if isinstance(inputs, dict) else {input_name: inputs}

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    # On a fused transformer graph the quantizer warns for every tensor of ONNX Runtime's own operators it cannot type
    # (they stay float, as intended): only errors show then.
    with quiet_libraries(logging.WARNING if extra else logging.INFO):
        quantize_static(
            str(prepared),
            str(output_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8 if config.activation_type == "int8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[config.calibration_method],
            op_types_to_quantize=list(only) if only else None,
            nodes_to_exclude=list(excluded),
            extra_options={
                **extra,
                **({"TensorQuantOverrides": overrides} if overrides else {}),
                **({"ActivationSymmetric": True} if config.activation_type == "int8" else {}),
            },
        )
    return samples


class Quantize(Technique):
    """int8 with ONNX Runtime on an exported file; with `qat`, the torch model first fine-tuned under int8 rounding."""

    name, config, works_on, tag = "quantize", QuantizeConfig, "onnx", "int8"

    def needs_labels(self, config: QuantizeConfig) -> bool:
        return config.qat is not None

    def variant(self, config: QuantizeConfig) -> str:
        return config.method

    def check(self, config: QuantizeConfig, structure: str) -> None:
        # QAT simulates the int8 of convolutions and Gemms; an encoder's static int8 covers its matrix products only.
        if config.qat is not None and structure == "encoder":
            raise NotForThisModel(
                "qat", "not available for a transformer encoder yet; quantize it (static or dynamic) without qat"
            )

    def resolved(self, config: QuantizeConfig) -> dict:
        return {**config.model_dump(mode="json"), "reduce_range": resolve_reduce_range(config.reduce_range)[0]}

    def apply(self, config: QuantizeConfig, source: Path, context: StageContext) -> StageOutput:
        output = context.output_path
        temporary = output.with_name(f".{output.name}.tmp")
        with tempfile.TemporaryDirectory() as scratch:
            fp32_path, metrics, input_ranges = source, {}, None
            if config.qat is not None:
                # Same export, parity check and ONNX Runtime quantization as post-training int8, on weights
                # fine-tuned under int8 rounding: the graph, and so the speed, is the same.
                reduce_range, _ = resolve_reduce_range(config.reduce_range)
                log.info("quantization-aware fine-tuning of %s (%d epochs)", source.name, config.qat.epochs)
                trained = context.fine_tune("qat", context.source_model, config.qat, context.work_dir, reduce_range)
                fp32_path = Path(scratch) / "qat_fp32.onnx"
                parity = context.export(trained.model, fp32_path)
                metrics = {
                    "qat_history": trained.history,
                    "qat_best_epoch": trained.best_epoch,
                    "qat_resumed_from_epoch": trained.resumed_from_epoch,
                    "qat_export_parity": parity,
                }
                input_ranges = trained.input_ranges
            result = quantize_onnx(
                fp32_path,
                temporary,
                config,
                context.data.calibration,
                context.batch_size,
                context.progress,
                input_ranges,
                transformer=context.inputs.structure == "encoder",
                scorer=context.scorer,
            )
        temporary.replace(output)
        settings = {key: value for key, value in asdict(result).items() if key != "path"}
        settings["quantization_aware_finetuning"] = config.qat is not None
        return StageOutput(settings, metrics, path=output, precision="int8")

    def shown_settings(self, settings: dict) -> dict:
        shown = {
            key: value
            for key, value in settings.items()
            if key not in ("float_operators", "kept_in_float", "fallback") or value
        }
        if shown.get("float_operators"):
            shown["float_operators"] = ", ".join(shown["float_operators"])
        if shown.get("fallback"):
            last = shown["fallback"][-1]
            bound = last.get("drop_upper_bound_points")  # absent from runs made before the bound was used
            shown["fallback"] = (
                f"{last['kept_in_float']} layer(s) kept in float, top-1 {last['top1_drop_points']:.2f} pt "
                + (f"(95% upper bound {bound:.2f} pt) " if bound is not None else "")
                + f"below FP32 on {last['samples']} held-out calibration-split samples"
            )
        if shown.get("kept_in_float"):
            shown["kept_in_float"] = ", ".join(shown["kept_in_float"])
        return shown

    def describe(self, settings: dict, metrics: dict) -> list[str]:
        kept = settings.get("kept_in_float") or ()
        if kept:
            return [
                f"static int8 kept {len(kept)} layer(s) in float to stay within the fallback budget: {', '.join(kept)}"
            ]
        return [
            f"quantization-aware fine-tuning of {source}: best validation epoch {facts['qat_best_epoch']} of "
            f"{len(facts['qat_history'])}"
            for source, facts in metrics.get("by_source", {}).items()
            if "qat_best_epoch" in facts
        ]

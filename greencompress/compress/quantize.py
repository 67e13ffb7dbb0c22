"""int8 quantization of an exported ONNX model with ONNX Runtime: static (QDQ, calibrated) or dynamic."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from greencompress.data import batches
from greencompress.environment import cpu_info
from greencompress.recipe import QuantizeConfig

log = logging.getLogger(__name__)


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


def resolve_reduce_range(setting: str | bool) -> tuple[bool, str]:
    """Whether to quantize weights to 7 bits, and why: needed where u8 x s8 products can saturate (no VNNI)."""
    if setting != "auto":
        return bool(setting), "set in the recipe"
    if cpu_info().has_vnni:
        return False, "auto: this CPU has VNNI, full 8-bit range is safe"
    return True, "auto: this CPU lacks VNNI, so 7-bit weights avoid int16 saturation in u8 x s8 kernels"


def quantize_onnx(fp32_path: Path, output_path: Path, config: QuantizeConfig, calibration, batch_size: int,
                  progress=None) -> QuantizeResult:
    """Quantize `fp32_path` to int8 at `output_path`; static mode calibrates on `calibration` samples."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reduce_range, reason = resolve_reduce_range(config.reduce_range)
    with tempfile.TemporaryDirectory() as scratch:
        # Shape inference and graph folding first, as ONNX Runtime's quantization guide recommends.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        if config.method == "dynamic":
            quantize_dynamic(str(prepared), str(output_path), weight_type=QuantType.QInt8,
                             per_channel=config.per_channel, reduce_range=reduce_range)
            samples = 0
        else:
            samples = _quantize_static(prepared, output_path, config, calibration, batch_size, reduce_range, progress)
    return QuantizeResult(
        path=output_path,
        method=config.method,
        calibration_samples=samples,
        calibration_method=config.calibration_method if config.method == "static" else None,
        per_channel=config.per_channel,
        reduce_range=reduce_range,
        reduce_range_reason=reason,
        activation_type="uint8" if config.method == "static" else "uint8 (computed per batch at run time)",
        weight_type="int8",
        format="QDQ" if config.method == "static" else "QOperator (dynamic)",
    )


def _quantize_static(prepared: Path, output_path: Path, config: QuantizeConfig, calibration, batch_size: int,
                     reduce_range: bool, progress) -> int:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

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
                progress.update(task, advance=len(inputs))
            return {input_name: inputs}

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    quantize_static(
        str(prepared), str(output_path), Reader(),
        quant_format=QuantFormat.QDQ, per_channel=config.per_channel, reduce_range=reduce_range,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        calibrate_method=methods[config.calibration_method],
    )
    return samples

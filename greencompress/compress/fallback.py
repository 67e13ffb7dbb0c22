"""Static int8 that keeps its most sensitive layers in float until accuracy is within a budget.

Sensitivity is read from the FP32 model on real inputs: a layer whose input reaches far beyond its
typical values (GELU outputs feeding a transformer's FFN projection are the known case) gets a coarse
int8 grid from min-max calibration, so layers are kept in float in the order of their input's peak,
1, 2, 4, ... of them, each step measured on held-out samples the calibration did not see.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from greencompress.measure.accuracy import evaluate
from greencompress.models.data import batches
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner

log = logging.getLogger(__name__)


def keep_layers_in_float(fp32_path: Path, int8_path: Path, quantize: Callable[[tuple[str, ...]], int], held_out,
                         batch_size: int, max_drop_points: float,
                         op_types: tuple[str, ...] | None) -> tuple[tuple[str, ...], tuple[dict, ...]]:
    """Requantize `int8_path` (with `quantize(excluded_layers)`) until its top-1 on `held_out` is within the budget.

    Returns the layers kept in float and one record per step; the last file written is the one kept.
    """
    reference = evaluate(OnnxRuntimeRunner(fp32_path, 1), held_out, batch_size).top1
    ranked = layers_by_input_peak(fp32_path, held_out, batch_size, op_types or ("MatMul", "Gemm", "Conv"))
    kept: tuple[str, ...] = ()
    steps = []
    while True:
        drop = 100 * (reference - evaluate(OnnxRuntimeRunner(int8_path, 1), held_out, batch_size).top1)
        steps.append({"kept_in_float": len(kept), "top1_drop_points": round(drop, 3), "samples": len(held_out)})
        log.info("quantize fallback: %d layer(s) in float, top-1 %.2f pt below FP32 on %d held-out samples",
                 len(kept), drop, len(held_out))
        if drop <= max_drop_points or len(kept) == len(ranked):
            break
        kept = tuple(ranked[: max(1, 2 * len(kept))])
        quantize(kept)
    if steps[-1]["top1_drop_points"] > max_drop_points:
        log.warning("quantize fallback: still %.2f pt below FP32 with every quantized layer in float",
                    steps[-1]["top1_drop_points"])
    return kept, tuple(steps)


def layers_by_input_peak(path: Path, samples, batch_size: int, op_types: tuple[str, ...]) -> list[str]:
    """Names of the `op_types` nodes, largest peak-to-median ratio of |input| first, on a batch of `samples`."""
    import onnx

    model = onnx.load(str(path))
    nodes = [node for node in model.graph.node if node.op_type in op_types and node.name]
    known = {output.name for output in model.graph.output}
    for node in nodes:
        if node.input[0] not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.input[0]))
            known.add(node.input[0])
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "probe.onnx"
        onnx.save(model, str(probe))
        runner = OnnxRuntimeRunner(probe, 1)
        names = [output.name for output in runner.session.get_outputs()]
        inputs, _ = next(batches(samples, batch_size))
        feed = inputs if isinstance(inputs, dict) else {runner.input_name: inputs}
        values = dict(zip(names, runner.session.run(None, feed)))
    peaks = {}
    for node in nodes:
        magnitude = np.abs(values[node.input[0]]).ravel()
        peaks[node.name] = float(magnitude.max() / max(float(np.median(magnitude)), 1e-12))
    return sorted(peaks, key=peaks.get, reverse=True)

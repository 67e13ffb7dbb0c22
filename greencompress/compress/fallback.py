"""Static int8 that keeps its most sensitive layers in float until accuracy is within a budget.

Sensitivity is read from the FP32 model on real inputs: a layer whose input reaches far beyond its
typical values (GELU outputs feeding a transformer's FFN projection are the known case) gets a coarse
int8 grid from min-max calibration, so layers are kept in float in the order of their input's peak,
1, 2, 4, ... of them, each step measured on held-out samples the calibration did not see.

"Within the budget" means the drop's one-sided 95% upper bound, paired per sample against the FP32
file, not the observed drop: 256 held-out texts once showed -0.4 pt while 600 test texts showed
-0.83 (docs/BENCHMARKS.md), a sample too small to tell a 0.5 pt budget from noise.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from greencompress.measure.stats import accuracy_drop, smallest_certifiable_drop
from greencompress.models.data import batches
from greencompress.models.serving import Scorer, logits_only
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner

log = logging.getLogger(__name__)


def keep_layers_in_float(
    fp32_path: Path,
    int8_path: Path,
    quantize: Callable[[tuple[str, ...]], int],
    held_out,
    batch_size: int,
    max_drop_points: float,
    op_types: tuple[str, ...] | None,
    scorer: Scorer = logits_only,
) -> tuple[tuple[str, ...], tuple[dict, ...]]:
    """Requantize `int8_path` (with `quantize(excluded_layers)`) until its top-1 drop on `held_out` is within the
    budget by its upper bound.

    Returns the layers kept in float and one record per step; the last file written is the one kept.
    """
    floor = smallest_certifiable_drop(len(held_out))
    if floor > max_drop_points:
        log.warning(
            "quantize fallback: %d held-out samples cannot show a drop below %.2f pt even when int8 agrees on "
            "every one (the least they can bound is %.2f pt): every layer may go back to float; raise "
            "fallback_samples (or give the calibration split more rows)",
            len(held_out),
            max_drop_points,
            floor,
        )
    reference = correct_per_sample(fp32_path, held_out, batch_size, scorer)
    ranked = layers_by_input_peak(fp32_path, held_out, batch_size, op_types or ("MatMul", "Gemm", "Conv"))
    kept: tuple[str, ...] = ()
    steps = []
    while True:
        drop = accuracy_drop(reference, correct_per_sample(int8_path, held_out, batch_size, scorer))
        steps.append(
            {
                "kept_in_float": len(kept),
                "top1_drop_points": round(drop.points, 3),
                "drop_upper_bound_points": round(drop.upper_points, 3),
                "lost": drop.lost,
                "gained": drop.gained,
                "samples": drop.samples,
            }
        )
        log.info(
            "quantize fallback: %d layer(s) in float, top-1 %.2f pt below FP32 (95%% upper bound %.2f; %d lost, "
            "%d gained) on %d held-out samples",
            len(kept),
            drop.points,
            drop.upper_points,
            drop.lost,
            drop.gained,
            drop.samples,
        )
        if drop.upper_points <= max_drop_points or len(kept) == len(ranked):
            break
        kept = tuple(ranked[: max(1, 2 * len(kept))])
        quantize(kept)
    if steps[-1]["drop_upper_bound_points"] > max_drop_points:
        log.warning(
            "quantize fallback: with every quantized layer in float the drop is still not shown to be within "
            "%.2f pt (upper bound %.2f pt on %d samples)",
            max_drop_points,
            steps[-1]["drop_upper_bound_points"],
            len(held_out),
        )
    return kept, tuple(steps)


def correct_per_sample(path: Path, samples, batch_size: int, scorer: Scorer = logits_only) -> np.ndarray:
    """Whether the ONNX file's top-1 (its outputs scored by `scorer`) is right, sample by sample, in `samples` order."""
    runner = OnnxRuntimeRunner(path, 1)
    right = []
    for inputs, labels in batches(samples, batch_size):
        right.append(np.argmax(scorer(runner.outputs(inputs))[0], axis=1) == labels)
    return np.concatenate(right)


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

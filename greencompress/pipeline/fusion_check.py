"""Whether ONNX Runtime's transformer fusions make this model faster on this CPU, measured before it is served.

`export.transformer_fusion: auto` exports the original model twice (fused and portable, FP32), times the
two on ONNX Runtime in interleaved windows at one shape (the smallest benchmarked batch, the longest
sequence), and keeps the fused graph for ONNX Runtime unless it is slower by an interval that excludes 1
(then ONNX Runtime runs the portable graph too). The result is cached per model, CPU, ONNX Runtime version,
threads and shape.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from greencompress.measure.latency import shape_words
from greencompress.measure.lock import measurement_lock
from greencompress.pipeline.proxy import time_pair
from greencompress.runtimes.export import FusionPlan, export_with_parity, with_fusion

log = logging.getLogger(__name__)

ROUNDS, WINDOW_S = 7, 0.25  # the proxy's: seconds in all, small against a transformer run


@dataclass(frozen=True)
class FusionCheck:
    """Fused over portable p50 latency of the original FP32 model on ONNX Runtime, with its paired 95% interval."""

    ratio: float
    low: float
    high: float
    rounds: int
    batch_size: int
    sequence_length: int

    @property
    def slower(self) -> bool:
        return self.low > 1.0

    def words(self) -> str:
        return (
            f"fused {self.ratio:.2f}x [{self.low:.2f}, {self.high:.2f}] the portable graph's p50 latency on ONNX "
            f"Runtime here ({shape_words(self.batch_size, self.sequence_length)}, FP32, {self.rounds} paired rounds)"
        )


def measure_fusion(model, inputs, export_spec, parity_batches, feed, settings, shape: tuple[int, int]) -> FusionCheck:
    """Export `model` fused and portable into a scratch folder (each checked on `parity_batches`, a list) and time the
    two on ONNX Runtime with `feed`."""
    from greencompress.runtimes import RUNTIMES

    with tempfile.TemporaryDirectory(prefix="greencompress-fusion-") as scratch:
        paths = {}
        for fused in (True, False):
            paths[fused] = Path(scratch) / f"{'fused' if fused else 'portable'}.onnx"
            export_with_parity(
                model, inputs, paths[fused], with_fusion(export_spec, fused), parity_batches, settings.threads
            )
        runtime = RUNTIMES.get("onnxruntime")
        fused_runner, portable_runner = (runtime.runner(paths[fused], settings) for fused in (True, False))
        with measurement_lock("transformer fusion check"):
            result = time_pair(fused_runner, portable_runner, feed, ROUNDS, WINDOW_S)
    return FusionCheck(result.ratio, result.low, result.high, result.rounds, *shape)


def decide(plan: FusionPlan, check: FusionCheck) -> FusionPlan:
    """The plan after the measurement: no fused files when the fused graph is slower, else the plan, saying why."""
    log.info("transformer fusion check: %s", check.words())
    if check.slower:
        return FusionPlan(
            portable=True,
            fused=False,
            note=(f"off: the fused graph is slower on this CPU: {check.words()} (export.transformer_fusion: auto)"),
        )
    return replace(plan, note="; ".join(part for part in (plan.note, f"measured: {check.words()}") if part))

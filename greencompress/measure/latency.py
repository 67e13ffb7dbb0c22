"""Latency of a runner at one batch size, with an energy window around the timed loop."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from greencompress.measure.energy import EnergyMeter, EnergyReading
from greencompress.recipe import BenchmarkSpec


@dataclass(frozen=True)
class Latency:
    """Per-batch latency in milliseconds and throughput in samples per second."""

    batch_size: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float


@dataclass(frozen=True)
class Benchmark:
    """One runner at one batch size: its latency and the energy of the timed loop."""

    latency: Latency
    energy: EnergyReading

    @property
    def joules_per_inference(self) -> float:
        return self.energy.total_j / (self.latency.iterations * self.latency.batch_size)


def benchmark(runner, inputs: np.ndarray, spec: BenchmarkSpec, meter: EnergyMeter) -> Benchmark:
    """Warm up, then run back-to-back until both `iterations` and `min_duration_s` are reached.

    The loop stops at `max_duration_s` whatever the count, so a slow model cannot stall a run. Only
    a clock read is added per iteration; the meter is read once before and once after.
    """
    for _ in range(spec.warmup_iterations):
        runner(inputs)
    durations_ns = []
    meter.begin_window()
    started = time.perf_counter_ns()
    min_ns, max_ns = spec.min_duration_s * 1e9, spec.max_duration_s * 1e9
    while True:
        before = time.perf_counter_ns()
        runner(inputs)
        after = time.perf_counter_ns()
        durations_ns.append(after - before)
        elapsed = after - started
        if (len(durations_ns) >= spec.iterations and elapsed >= min_ns) or elapsed >= max_ns:
            break
    energy = meter.end_window()
    milliseconds = np.array(durations_ns) / 1e6
    batch_size = len(inputs)
    latency = Latency(
        batch_size=batch_size,
        iterations=len(milliseconds),
        p50_ms=float(np.percentile(milliseconds, 50)),
        p90_ms=float(np.percentile(milliseconds, 90)),
        p99_ms=float(np.percentile(milliseconds, 99)),
        mean_ms=float(milliseconds.mean()),
        throughput_per_s=float(batch_size * 1e3 / milliseconds.mean()),
    )
    return Benchmark(latency=latency, energy=energy)

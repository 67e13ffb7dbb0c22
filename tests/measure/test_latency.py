"""The timed loop: counts, percentiles, the duration cap, and the energy window around it."""

from __future__ import annotations

import time

import numpy as np
import pytest

from greencompress.measure.energy.estimate import EstimateMeter
from greencompress.measure.latency import benchmark
from greencompress.recipe import BenchmarkSpec


class SleepingRunner:
    """Takes `seconds` of wall time per call and burns no CPU."""

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def __call__(self, inputs):
        self.calls += 1
        time.sleep(self.seconds)
        return inputs


def test_warmup_then_at_least_iterations_and_min_duration():
    runner = SleepingRunner(0.002)
    spec = BenchmarkSpec(warmup_iterations=3, iterations=5, min_duration_s=0.1, max_duration_s=5)
    result = benchmark(runner, np.zeros((4, 3, 8, 8), np.float32), spec, EstimateMeter(5.0))
    latency = result.latency
    assert latency.iterations >= 5 and latency.iterations * 0.002 >= 0.09
    assert runner.calls == latency.iterations + 3
    assert 2.0 <= latency.p50_ms <= 10.0
    assert latency.p50_ms <= latency.p90_ms <= latency.p99_ms
    assert latency.batch_size == 4
    assert latency.throughput_per_s == pytest.approx(4e3 / latency.mean_ms)


def test_max_duration_caps_a_slow_model():
    spec = BenchmarkSpec(warmup_iterations=0, iterations=10_000, min_duration_s=0, max_duration_s=0.05)
    result = benchmark(SleepingRunner(0.01), np.zeros((1, 3, 8, 8), np.float32), spec, EstimateMeter(5.0))
    assert 3 <= result.latency.iterations <= 8


def test_sleeping_costs_no_estimated_energy_and_busy_work_does():
    spec = BenchmarkSpec(warmup_iterations=0, iterations=20, min_duration_s=0)
    idle = benchmark(SleepingRunner(0.005), np.zeros((1, 3, 8, 8), np.float32), spec, EstimateMeter(10.0))

    def busy(inputs):
        end = time.process_time() + 0.005
        while time.process_time() < end:
            pass
        return inputs

    busy_result = benchmark(busy, np.zeros((2, 3, 8, 8), np.float32), spec, EstimateMeter(10.0))
    assert idle.joules_per_inference < 0.2 * busy_result.joules_per_inference
    # 20 iterations x >=5 ms CPU x 10 W, over 40 inferences: about 25 mJ each
    assert busy_result.joules_per_inference == pytest.approx(0.025, rel=0.5)
    assert busy_result.energy.method == "estimate" and not busy_result.energy.measured

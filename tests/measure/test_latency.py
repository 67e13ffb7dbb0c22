"""One timed window: counts, percentiles, the duration cap, and how little the loop itself costs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from greencompress.measure.energy.estimate import EstimateMeter
from greencompress.measure.latency import latency_stats, run_window


class SleepingRunner:
    """Takes `seconds` of wall time per call and burns no CPU."""

    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def __call__(self, inputs):
        self.calls += 1
        time.sleep(self.seconds)
        return inputs


def busy(seconds: float):
    def run(inputs):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
        return inputs

    return run


def test_window_runs_until_both_duration_and_count_are_reached():
    runner = SleepingRunner(0.002)
    window = run_window(runner, np.zeros((4, 3, 8, 8), np.float32), EstimateMeter(5.0), 0.1, 5, 5.0)
    assert len(window.durations_ns) == runner.calls >= 5
    assert sum(window.durations_ns) >= 0.09e9
    assert window.inferences == 4 * runner.calls
    assert window.energy.duration_s >= 0.1


def test_max_duration_caps_a_slow_model():
    window = run_window(SleepingRunner(0.01), np.zeros((1, 3, 8, 8), np.float32), EstimateMeter(5.0), 0, 10_000, 0.05)
    assert 1 <= len(window.durations_ns) <= 6


def test_latency_statistics():
    latency = latency_stats([1_000_000] * 98 + [5_000_000, 9_000_000], batch_size=4)
    assert latency.p50_ms == 1.0 and latency.iterations == 100
    assert latency.p90_ms == 1.0 and 1.0 < latency.p99_ms <= 9.0
    assert latency.mean_ms == pytest.approx(1.12)
    assert latency.throughput_per_s == pytest.approx(4e3 / 1.12)


def test_loop_overhead_is_under_one_percent_of_the_window():
    window = run_window(busy(0.001), np.zeros((1,), np.float32), EstimateMeter(5.0), 0.3, 1, 5.0)
    inside_runs_s = sum(window.durations_ns) / 1e9
    assert (window.energy.duration_s - inside_runs_s) / window.energy.duration_s < 0.01

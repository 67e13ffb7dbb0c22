"""The methodology: interleaved rounds, idle subtraction, confidence intervals and the extra-windows rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from greencompress.measure.benchmark import IdleBaseline, benchmark_interleaved, measure_idle
from greencompress.measure.energy.meter import EnergyMeter, EnergyReading, MeterDescription, Uncertainty
from greencompress.measure.stats import mean_interval
from greencompress.recipe import BenchmarkSpec

BAND = Uncertainty(0.05, 0.05, "test")


class ScriptedMeter(EnergyMeter):
    """Returns the next scripted energy (J) for each window; logs the order windows were taken in."""

    method = "rapl"
    min_window_s = 0.0

    def __init__(self, joules_by_runner: dict[str, list[float]], log: list[str]):
        self.joules_by_runner, self.log = {k: list(v) for k, v in joules_by_runner.items()}, log

    def begin_window(self):
        pass

    def end_window(self) -> EnergyReading:
        runner = self.log[-1]
        return EnergyReading({"cpu": self.joules_by_runner[runner].pop(0)}, 0.01, "rapl", BAND, measured=True)

    def describe(self):
        return MeterDescription("rapl", True, ("cpu",))


def runner(name: str, log: list[str]):
    def run(inputs):
        if not log or log[-1] != name:
            log.append(name)
        return inputs

    return run


def spec(**fields) -> BenchmarkSpec:
    # Windows of exactly 4 runs: the count binds, the (1 ns) duration does not.
    base = dict(warmup_iterations=0, window_s=1e-9, min_iterations=4, max_window_s=10.0, windows=3, max_windows=6,
                target_relative_ci=0.05)
    return BenchmarkSpec(**{**base, **fields})


def no_idle() -> IdleBaseline:
    return IdleBaseline({"cpu": 0.0}, 1.0, "rapl")


def test_confidence_interval_on_known_samples():
    interval = mean_interval([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, sample sd 1.291, se 0.6455, t(0.975, 3) = 3.1824
    assert interval.mean == 2.5
    assert interval.half_width == pytest.approx(3.1824 * 0.6455, rel=1e-3)
    assert interval.relative_half_width == pytest.approx(0.8217, rel=1e-3)
    assert math.isinf(mean_interval([5.0]).half_width)


def test_rounds_interleave_and_rotate():
    log: list[str] = []
    steady = [1.0] * 10
    meter = ScriptedMeter({"a": steady, "b": steady, "c": steady}, log)
    benchmark_interleaved({n: runner(n, log) for n in "abc"}, np.zeros(1), spec(), meter, no_idle())
    assert log == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_steady_energy_stops_after_the_minimum_windows():
    log: list[str] = []
    meter = ScriptedMeter({"a": [2.0] * 10}, log)
    (result,) = benchmark_interleaved({"a": runner("a", log)}, np.zeros(1), spec(), meter, no_idle()).values()
    assert result.energy.windows == 3 and not result.energy.noisy
    assert result.energy.joules_per_inference == pytest.approx(0.5) and result.energy.ci95_j == 0.0
    assert result.latency.iterations == 12 and result.energy.inferences == 12


def test_noisy_energy_gets_extra_windows_then_is_flagged():
    log: list[str] = []
    meter = ScriptedMeter({"a": [1.0, 3.0] * 5, "b": [1.0] * 10}, log)
    results = benchmark_interleaved({n: runner(n, log) for n in "ab"}, np.zeros(1), spec(), meter, no_idle())
    assert results["a"].energy.windows == 6 and results["a"].energy.noisy
    assert results["b"].energy.windows == 6  # extra rounds cover every artifact, keeping them interleaved
    assert not results["b"].energy.noisy


def test_idle_power_is_subtracted_for_the_active_figure():
    log: list[str] = []
    meter = ScriptedMeter({"a": [1.0] * 10}, log)
    idle = IdleBaseline({"cpu": 50.0}, 3.0, "rapl")  # 50 W x 0.01 s = 0.5 J of each 1 J window
    (result,) = benchmark_interleaved({"a": runner("a", log)}, np.zeros((2,)), spec(), meter, idle).values()
    energy = result.energy
    assert energy.joules_per_inference == pytest.approx(1.0 / 8)  # 4 runs of batch 2 per window
    assert energy.active_joules_per_inference == pytest.approx(0.5 / 8)
    assert energy.idle_power_w == {"cpu": 50.0}


def test_measure_idle_reports_watts():
    class ConstantMeter(ScriptedMeter):
        min_window_s = 0.05

        def end_window(self):
            return EnergyReading({"cpu": 2.0, "dram": 0.5}, 0.1, "rapl", BAND, measured=True)

    idle = measure_idle(ConstantMeter({}, []), seconds=0.0)
    assert idle.power_w == {"cpu": 20.0, "dram": 5.0} and idle.total_w == 25.0

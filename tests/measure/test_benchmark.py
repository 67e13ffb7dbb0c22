"""The methodology: interleaved rounds, idle subtraction, confidence intervals and the extra-windows rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from greencompress.measure.benchmark import (
    BenchmarkSpec,
    IdleBaseline,
    benchmark_interleaved,
    measure_idle,
)
from greencompress.measure.energy.meter import (
    EnergyMeter,
    EnergyReading,
    MeterDescription,
    Uncertainty,
)
from greencompress.measure.stats import mean_interval

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
    base = dict(
        warmup_iterations=0,
        window_s=1e-9,
        min_iterations=4,
        max_window_s=10.0,
        windows=3,
        max_windows=6,
        target_relative_ci=0.05,
    )
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


def test_a_time_budget_keeps_measuring_a_noisy_figure_past_max_windows_until_it_is_spent():
    log: list[str] = []
    noisy = [1.0, 3.0] * 200
    meter = ScriptedMeter({"a": noisy}, log)
    slow = runner("a", log)

    def timed(inputs):  # 1 ms a call: 4 calls a window
        import time

        time.sleep(0.001)
        return slow(inputs)

    (result,) = benchmark_interleaved({"a": timed}, np.zeros(1), spec(max_time_s=0.25), meter, no_idle()).values()
    assert result.energy.windows > 6 and result.energy.noisy  # beyond max_windows, and still noisy: it says so
    assert result.latency.iterations < 4 * 0.25 / 0.004 + 8  # and no longer than the budget (plus one round)
    steady = ScriptedMeter({"a": [2.0] * 10}, log)
    (result,) = benchmark_interleaved(
        {"a": runner("a", log)}, np.zeros(1), spec(max_time_s=60), steady, no_idle()
    ).values()
    assert result.energy.windows == 3  # within the target: no extra round, however much time is left


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
    assert idle.power_w == pytest.approx({"cpu": 20.0, "dram": 5.0}) and idle.total_w == pytest.approx(25.0)
    assert idle.ci95_w == pytest.approx(0.0, abs=1e-9)  # three equal sub-windows: no spread
    assert idle.duration_s == pytest.approx(0.3)


def test_domains_add_up_to_the_total_when_windows_hold_different_numbers_of_runs():
    from greencompress.measure.benchmark import _summarize
    from greencompress.measure.latency import Window

    def window(runs: int, cpu_j: float, dram_j: float) -> Window:
        reading = EnergyReading({"cpu": cpu_j, "dram": dram_j}, 1.0, "rapl", BAND, measured=True)
        return Window([1_000_000] * runs, reading, batch_size=1, started_s=0.0, other_cpu_share=0.0)

    # A window slowed by a neighbour runs 2 inferences instead of 20 for about the same joules.
    bench = _summarize([window(20, 10.0, 2.0), window(2, 9.0, 2.0), window(20, 10.0, 2.0)], no_idle(), 0.05)
    energy = bench.energy
    assert energy.joules_per_inference == pytest.approx((12 / 20 + 11 / 2 + 12 / 20) / 3)
    assert sum(energy.joules_per_inference_by_domain.values()) == pytest.approx(energy.joules_per_inference)
    assert energy.window_joules_per_inference == pytest.approx((0.6, 5.5, 0.6))
    assert energy.busy_windows == 0 and energy.window_other_cpu_share == (0.0, 0.0, 0.0)


def test_windows_record_how_busy_the_machine_was(tmp_path):
    from greencompress.measure.load import LoadMonitor

    stat, ticks = tmp_path / "stat", iter(range(0, 10_000, 60))

    class ScriptedLoad(LoadMonitor):  # every read finds 60 more busy ticks: another process on 2 CPUs
        def begin(self):
            stat.write_text(f"cpu  {next(ticks)} 0 0 0 0 0 0 0\n")
            super().begin()

        def end(self):
            stat.write_text(f"cpu  {next(ticks)} 0 0 0 0 0 0 0\n")
            return super().end()

    log = []
    meter = ScriptedMeter({"a": [1.0] * 10}, log)
    load = ScriptedLoad(stat, logical_cpus=2, ticks_per_s=100)
    (result,) = benchmark_interleaved(
        {"a": runner("a", log)}, np.zeros((2,)), spec(window_s=0.05), meter, no_idle(), load=load
    ).values()
    assert len(result.energy.window_other_cpu_share) == result.energy.windows
    assert result.energy.busy_windows == result.energy.windows  # 0.6 CPU-s in ~0.05 s on 2 CPUs: saturated

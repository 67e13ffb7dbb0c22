"""The estimate meter: labelled as an estimate, with its assumptions and a wide band, never as a measurement."""

from __future__ import annotations

import time

import pytest

from greencompress.core.hardware import CpuInfo
from greencompress.measure.energy import EnergySpec, select_meter
from greencompress.measure.energy.estimate import (
    DEFAULT_WATTS_PER_CORE,
    EstimateMeter,
    watts_per_core,
)
from greencompress.measure.energy.meter import EnergyReading, Uncertainty


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_joules_are_cpu_seconds_times_watts_per_core():
    meter = EstimateMeter(cpu_watts_per_core=20.0)
    # The meter counts every thread of this process: let thread pools that earlier tests woke (OpenMP workers
    # spin for a while after a parallel region) fall asleep first.
    time.sleep(1.0)
    meter.begin_window()
    burn_cpu(0.2)
    time.sleep(0.1)  # wall time without CPU costs nothing in this model
    reading = meter.end_window()
    assert reading.energy_j["cpu"] == pytest.approx(4.0, rel=0.2)
    assert reading.duration_s >= 0.3
    assert reading.method == "estimate" and reading.measured is False
    assert reading.uncertainty.low_fraction >= 0.5 and reading.uncertainty.high_fraction >= 1.0


def test_end_without_begin_is_an_error():
    with pytest.raises(RuntimeError):
        EstimateMeter(5.0).end_window()


def test_watts_per_core_from_recipe_table_or_default(monkeypatch):
    assert watts_per_core(12.5) == (12.5, "energy.cpu_watts_per_core in the recipe")
    monkeypatch.setattr(
        "greencompress.measure.energy.estimate.cpu_info", lambda: CpuInfo("AMD EPYC 7763 64-Core Processor", 2, ())
    )
    figure, source = watts_per_core(None)
    assert figure == pytest.approx(280 / 64) and "AMD EPYC 7763" in source
    monkeypatch.setattr("greencompress.measure.energy.estimate.cpu_info", lambda: CpuInfo("Mystery CPU", 2, ()))
    assert watts_per_core(None)[0] == DEFAULT_WATTS_PER_CORE


def test_description_says_it_is_not_a_measurement():
    description = EstimateMeter(5.0).describe()
    assert description.method == "estimate" and not description.measured
    assert any("not a measurement" in line for line in description.assumptions)


def test_auto_falls_back_to_the_estimate_and_says_why(tmp_path):
    meter, reason = select_meter(EnergySpec(meter="auto"), powercap_root=tmp_path / "no-powercap")
    assert isinstance(meter, EstimateMeter)
    assert "rapl: unavailable: no RAPL zones" in reason and "estimate: active" in reason


def test_readings_only_carry_known_methods():
    with pytest.raises(ValueError, match="unknown energy method"):
        EnergyReading({"cpu": 1.0}, 1.0, "guess", Uncertainty(0.1, 0.1, "x"), measured=True)

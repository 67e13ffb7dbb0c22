"""Energy counters as perf events, on a fake power PMU tree and a fake kernel: discovery, scale, a counter that
does not count, permissions, and joules per window."""

from __future__ import annotations

import errno

import pytest

from greencompress.measure.energy.meter import MeterUnavailable
from greencompress.measure.energy.perf_events import PerfEnergyMeter, discover_counters

SCALE = 2.3283064365386962890625e-10  # joules per count, as Intel's power PMU states it


def power_pmu(root, events=("energy-pkg", "energy-ram"), psys=False, unit="Joules"):
    (root / "events").mkdir(parents=True)
    (root / "type").write_text("23\n")
    codes = {"energy-pkg": "0x02", "energy-ram": "0x03", "energy-psys": "0x05"}
    for name in (*events, *(("energy-psys",) if psys else ())):
        (root / "events" / name).write_text(f"event={codes[name]}\n")
        (root / "events" / f"{name}.scale").write_text(f"{SCALE}\n")
        (root / "events" / f"{name}.unit").write_text(f"{unit}\n")
    return root


class FakeKernel:
    """Counters per event code that move by `per_read` counts at every read (0: a counter that never counts)."""

    def __init__(self, per_read: dict[int, int], refuse: int | None = None):
        self.per_read, self.refuse, self.value, self.opened = per_read, refuse, {}, []

    def open(self, pmu_type, config, cpu):
        if self.refuse is not None:
            raise OSError(self.refuse, "Permission denied")
        self.opened.append((pmu_type, config, cpu))
        self.value[config] = 10**12  # a counter far from zero: only differences matter
        return config

    def read(self, fd):
        self.value[fd] += self.per_read[fd]
        return self.value[fd]

    def close(self, fd):
        self.value.pop(fd)


def test_package_and_dram_counters_give_joules_per_window_at_their_scale(tmp_path):
    kernel = FakeKernel({0x02: 4_294_967_296, 0x03: 1_073_741_824})  # 1 J and 0.25 J per read
    meter = PerfEnergyMeter(power_pmu(tmp_path / "power"), kernel, probe_s=0.01)
    assert kernel.opened == [(23, 0x02, 0), (23, 0x03, 0)]
    meter.begin_window()
    reading = meter.end_window()
    assert reading.energy_j == pytest.approx({"cpu": 1.0, "dram": 0.25})
    assert reading.method == "perf-energy" and reading.measured
    assert meter.describe().domains == ("cpu", "dram")


def test_a_counter_that_reads_zero_is_named_as_not_working_never_zero_joules(tmp_path):
    root = power_pmu(tmp_path / "power", events=(), psys=True)  # this project's VMs: energy-psys only, reading 0
    with pytest.raises(MeterUnavailable, match=r"power/energy-psys/ reads 0.00 J .* does not work here .*not taken"):
        PerfEnergyMeter(root, FakeKernel({0x05: 0}), probe_s=0.01)


def test_psys_alone_is_used_and_said_to_be_the_whole_platform(tmp_path):
    root = power_pmu(tmp_path / "power", events=(), psys=True)
    meter = PerfEnergyMeter(root, FakeKernel({0x05: 2**32}), probe_s=0.01)
    assert "whole platform" in " ".join(meter.describe().assumptions)


def test_missing_pmu_refused_events_and_other_units_say_why(tmp_path):
    with pytest.raises(MeterUnavailable, match="no perf power PMU"):
        discover_counters(tmp_path / "none", FakeKernel({}))
    with pytest.raises(MeterUnavailable, match="perf_event_paranoid <= 0"):
        discover_counters(power_pmu(tmp_path / "a"), FakeKernel({}, refuse=errno.EACCES))
    with pytest.raises(MeterUnavailable, match="expected Joules"):
        discover_counters(power_pmu(tmp_path / "b", unit="Watts"), FakeKernel({0x02: 1, 0x03: 1}))
    (tmp_path / "c" / "events").mkdir(parents=True)
    (tmp_path / "c" / "type").write_text("23")
    with pytest.raises(MeterUnavailable, match="lists no energy-pkg"):
        discover_counters(tmp_path / "c", FakeKernel({}))

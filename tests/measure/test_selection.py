"""Choosing a CPU meter: RAPL when readable, else the estimate, and never a silent fallback when RAPL is asked for."""

from __future__ import annotations

import pytest

from greencompress.core.errors import GreencompressError
from greencompress.measure.energy import EnergySpec, select_meter
from greencompress.measure.energy.estimate import EstimateMeter
from greencompress.measure.energy.rapl import RaplMeter
from tests.measure.test_rapl import make_zone


def test_auto_takes_rapl_when_the_tree_is_readable(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    meter, reason = select_meter(EnergySpec(meter="auto"), powercap_root=tmp_path)
    assert isinstance(meter, RaplMeter) and reason == "rapl: active; perf-energy: not needed: a better meter is active"


def test_asking_for_the_estimate_skips_rapl(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", "package-0", 5)
    meter, reason = select_meter(EnergySpec(meter="estimate"), powercap_root=tmp_path)
    assert isinstance(meter, EstimateMeter) and "not tried" in reason


def test_asking_for_rapl_where_there_is_none_is_an_error_not_an_estimate(tmp_path):
    with pytest.raises(GreencompressError, match="energy.meter: rapl is not available here: rapl: unavailable"):
        select_meter(EnergySpec(meter="rapl"), powercap_root=tmp_path)

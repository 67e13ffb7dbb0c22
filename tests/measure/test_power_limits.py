"""GPU power limits with a fake NVML: applied and restored even on an error, refused without root, range-checked."""

from __future__ import annotations

import pytest

from greencompress.core.errors import GreencompressError
from greencompress.measure.energy.power_limits import (
    gpu_power_limit,
    optimal_and_fastest,
)
from tests.fake_gpu import FakeGpu, fake_pynvml, with_power_limits


def nvml_with_limits(allowed: bool = True):
    gpu = FakeGpu("H100", 300_000, True)
    return with_power_limits(fake_pynvml([gpu]), allowed), gpu


def test_a_limit_is_applied_for_the_block_and_restored_even_when_it_fails():
    nvml, gpu = nvml_with_limits()
    with gpu_power_limit(nvml, gpu, 300) as limit:
        assert limit.applied and gpu.limit_mw == 300_000
    assert gpu.limit_mw == 700_000
    with pytest.raises(KeyboardInterrupt):
        with gpu_power_limit(nvml, gpu, 250):
            raise KeyboardInterrupt  # Ctrl-C, or SIGTERM turned into it by the command line
    assert gpu.limit_mw == 700_000 and gpu.history == [300_000, 700_000, 250_000, 700_000]


def test_without_root_the_sweep_says_why_and_measures_at_the_current_limit():
    nvml, gpu = nvml_with_limits(allowed=False)
    with gpu_power_limit(nvml, gpu, 300) as limit:
        assert not limit.applied and limit.in_force_w == 700
        assert limit.reason == "changing the power limit needs root; measured at the current 700 W"


def test_a_limit_outside_the_gpu_s_range_is_refused_before_anything_changes():
    nvml, gpu = nvml_with_limits()
    with pytest.raises(GreencompressError, match="100 W is outside what this GPU accepts \\(200-700 W\\)"):
        with gpu_power_limit(nvml, gpu, 100):
            pass
    assert gpu.history == []


def test_the_energy_optimal_limit_is_named_next_to_the_fastest():
    rows = [
        {"limit_w": 700, "j_per_inference": 1.0, "p50_ms": 2.0},
        {"limit_w": 400, "j_per_inference": 0.8, "p50_ms": 2.3},
        {"limit_w": 250, "j_per_inference": 0.9, "p50_ms": 3.5},
    ]
    optimal, fastest = optimal_and_fastest(rows)
    assert optimal["limit_w"] == 400 and fastest["limit_w"] == 700

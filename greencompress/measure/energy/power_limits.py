"""GPU power limits (DVFS) for a sweep: set one for a block, restore the original afterwards, whatever happens.

Lowering a GPU's power limit lowers its clocks and voltage: often fewer joules per inference for a
little more latency, the Green-AI lever beside compression. NVML lets only root change the limit;
elsewhere the sweep says why and measures at the current limit. The original limit comes back when
the block ends, on an error, or on Ctrl-C/SIGTERM (which greencompress turns into an exception); a
SIGKILL cannot be caught, and the report of such a run never appears, so its limit stays: the
limit in force is in every report's environment.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

from greencompress.core.errors import GreencompressError


@dataclass(frozen=True)
class PowerLimit:
    """What a block ran at: the limit asked for, whether it was applied, and if not, why."""

    asked_w: float
    applied: bool
    in_force_w: float
    reason: str = ""


@contextlib.contextmanager
def gpu_power_limit(nvml, handle, watts: float) -> Iterator[PowerLimit]:
    """Run the block at `watts` where NVML allows it; the original limit is restored in every case."""
    original = nvml.nvmlDeviceGetPowerManagementLimit(handle)
    low, high = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
    if not low <= watts * 1e3 <= high:
        raise GreencompressError(
            f"--gpu-power-limits: {watts:g} W is outside what this GPU accepts ({low / 1e3:g}-{high / 1e3:g} W)"
        )
    try:
        nvml.nvmlDeviceSetPowerManagementLimit(handle, int(watts * 1e3))
    except nvml.NVMLError as error:
        no_permission = getattr(error, "value", None) == getattr(nvml, "NVML_ERROR_NO_PERMISSION", object())
        why = "changing the power limit needs root" if no_permission else f"NVML refused: {error}"
        yield PowerLimit(watts, False, original / 1e3, f"{why}; measured at the current {original / 1e3:g} W")
        return
    try:
        yield PowerLimit(watts, True, watts)
    finally:
        nvml.nvmlDeviceSetPowerManagementLimit(handle, original)


def optimal_and_fastest(rows: list[dict]) -> tuple[dict, dict]:
    """Of measured rows ({limit_w, j_per_inference, p50_ms}), the energy-optimal one and the fastest one."""
    return min(rows, key=lambda row: row["j_per_inference"]), min(rows, key=lambda row: row["p50_ms"])

"""A physical floor for latency: MACs divided by the CPU's peak multiply-accumulate rate.

The peak comes from the vector width, FMA and VNNI flags, the clock /proc/cpuinfo reports and the
thread count. It is an upper bound on throughput (every cycle on every port busy with useful
multiply-accumulates), so the floor is a lower bound on latency: a variant at 3x the floor leaves
two thirds of the hardware idle, whatever the reason (memory, overheads, layout).
"""

from __future__ import annotations

from dataclasses import dataclass

from greencompress.environment import CpuInfo

FMA_PORTS = 2  # vector FMA units per core on current Xeon and EPYC cores


@dataclass(frozen=True)
class PeakRate:
    """Peak multiply-accumulates per second for one precision, and how it was derived."""

    macs_per_s: float
    basis: str

    def floor_ms(self, macs_per_sample: int, batch_size: int) -> float:
        return 1e3 * macs_per_sample * batch_size / self.macs_per_s


def peak_mac_rate(cpu: CpuInfo, threads: int, precision: str) -> PeakRate | None:
    """The peak rate for `precision` ("fp32" or "int8") on `threads` cores; None when the clock is unknown."""
    if cpu.mhz is None:
        return None
    width = 512 if "avx512f" in cpu.flags else 256 if "avx2" in cpu.flags else 128
    cores = min(threads, cpu.logical_cores)
    if precision == "int8":
        lanes = width // 8
        # VNNI: vpdpbusd does a u8 x s8 multiply-accumulate per byte lane; without it vpmaddubsw + vpmaddwd
        # take two instructions for the same work.
        per_cycle = FMA_PORTS * lanes if cpu.has_vnni else FMA_PORTS * lanes // 2
        how = "VNNI" if cpu.has_vnni else "no VNNI (vpmaddubsw + vpmaddwd)"
    else:
        lanes = width // 32
        per_cycle = FMA_PORTS * lanes if "fma" in cpu.flags else lanes
        how = "FMA" if "fma" in cpu.flags else "no FMA"
    return PeakRate(cores * cpu.mhz * 1e6 * per_cycle,
                    f"{cores} cores x {cpu.mhz:.0f} MHz x {per_cycle} {precision} MACs/cycle "
                    f"({width}-bit vectors, {FMA_PORTS} ports, {how})")

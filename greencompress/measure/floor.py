"""A physical floor for latency: MACs divided by the CPU's peak multiply-accumulate rate.

The peak comes from the fastest matrix unit the CPU flags show (AMX tiles, else AVX-512/AVX2 with
VNNI or FMA), the clock /proc/cpuinfo reports and the thread count; each rate names the unit it
assumes. A measured latency below the floor means the floor was wrong (a unit it does not count,
a clock above the reported one), and `floor_ratio_text` says so instead of printing a ratio below 1. It is an
upper bound on throughput (every cycle on every port busy with useful multiply-accumulates), so the floor is a
lower bound on latency: a variant at 3x the floor leaves two thirds of the hardware idle, whatever the reason
(memory, overheads, layout).
"""

from __future__ import annotations

from dataclasses import dataclass

from greencompress.core.hardware import CpuInfo

FMA_PORTS = 2  # vector FMA units per core on current Xeon and EPYC cores
# AMX (Sapphire Rapids and later): 2,048 int8 or 1,024 bf16 operations per cycle per core, i.e. 1,024 and 512
# multiply-accumulates (Intel Architecture Day 2021; Intel 64 and IA-32 Optimization Reference Manual, AMX chapter).
AMX_MACS_PER_CYCLE = {"int8": 1024, "bf16": 512}


@dataclass(frozen=True)
class PeakRate:
    """Peak multiply-accumulates per second for one precision, and how it was derived."""

    macs_per_s: float
    basis: str

    def floor_ms(self, macs_per_sample: int, batch_size: int) -> float:
        return 1e3 * macs_per_sample * batch_size / self.macs_per_s


def peak_mac_rate(cpu: CpuInfo, threads: int, precision: str) -> PeakRate | None:
    """The peak rate for `precision` ("fp32", "bf16" or "int8") on `threads` cores; None when the clock is unknown."""
    if cpu.mhz is None:
        return None
    width = 512 if "avx512f" in cpu.flags else 256 if "avx2" in cpu.flags else 128
    cores = min(threads, cpu.logical_cores)
    amx_flag = {"int8": "amx_int8", "bf16": "amx_bf16"}.get(precision)
    if amx_flag in cpu.flags:
        per_cycle = AMX_MACS_PER_CYCLE[precision]
        return PeakRate(
            cores * cpu.mhz * 1e6 * per_cycle,
            f"{cores} cores x {cpu.mhz:.0f} MHz x {per_cycle} {precision} MACs/cycle (AMX tiles)",
        )
    if precision == "bf16":
        # vdpbf16ps: two bf16 products per 32-bit lane; without AVX512_BF16, bf16 runs at the fp32 rate.
        lanes = width // 32
        per_cycle = FMA_PORTS * lanes * (2 if "avx512_bf16" in cpu.flags else 1)
        how = "AVX512_BF16" if "avx512_bf16" in cpu.flags else "no bf16 unit: fp32 rate"
    elif precision == "int8":
        lanes = width // 8
        # VNNI: vpdpbusd does a u8 x s8 multiply-accumulate per byte lane; without it vpmaddubsw + vpmaddwd
        # take two instructions for the same work.
        per_cycle = FMA_PORTS * lanes if cpu.has_vnni else FMA_PORTS * lanes // 2
        how = "VNNI" if cpu.has_vnni else "no VNNI (vpmaddubsw + vpmaddwd)"
    else:
        lanes = width // 32
        per_cycle = FMA_PORTS * lanes if "fma" in cpu.flags else lanes
        how = "FMA" if "fma" in cpu.flags else "no FMA"
    return PeakRate(
        cores * cpu.mhz * 1e6 * per_cycle,
        f"{cores} cores x {cpu.mhz:.0f} MHz x {per_cycle} {precision} MACs/cycle "
        f"({width}-bit vectors, {FMA_PORTS} ports, {how})",
    )


def floor_ratio_text(latency_ms: float, floor_ms: float | None) -> str:
    """Latency over the floor, as a table cell; below 1 the floor itself is wrong, and the cell says so."""
    if floor_ms is None:
        return "-"
    ratio = latency_ms / floor_ms
    return f"{ratio:.1f}" if ratio >= 1 else f"{ratio:.2f} (below the floor: the floor is wrong for this CPU)"

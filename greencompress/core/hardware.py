"""The CPU this process runs on: model, the flags deciding int8/bf16 speed, cores, SMT, clocks (/proc and sysfs)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Flags that decide how fast int8 runs on x86: VNNI does u8 x s8 dot products without the
# 16-bit saturation that forces `reduce_range` on plain AVX2/AVX-512.
_INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    logical_cores: int
    flags: tuple[str, ...]
    mhz: float | None = None  # the clock /proc/cpuinfo reports (base or current; VMs often show the nominal one)

    @property
    def has_vnni(self) -> bool:
        return "avx512_vnni" in self.flags or "avx_vnni" in self.flags

    @property
    def has_bf16(self) -> bool:
        """A bf16 matrix unit: AMX tiles or AVX512_BF16 (without one, bf16 inference is emulated, not faster)."""
        return "amx_bf16" in self.flags or "avx512_bf16" in self.flags

    @property
    def matrix_units(self) -> dict[str, bool]:
        """The features that decide which runtime and precision run fastest here, each present or not."""
        return {
            "avx2": "avx2" in self.flags,
            "avx512_vnni": "avx512_vnni" in self.flags,
            "avx_vnni": "avx_vnni" in self.flags,
            "avx512_bf16": "avx512_bf16" in self.flags,
            "amx_int8": "amx_int8" in self.flags,
            "amx_bf16": "amx_bf16" in self.flags,
        }


@lru_cache(maxsize=1)
def cpu_info(cpuinfo_path: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """The CPU model and its int8-relevant flags, from /proc/cpuinfo (platform fallbacks elsewhere)."""
    model, flags, mhz = platform.processor() or platform.machine(), set(), None
    try:
        for line in cpuinfo_path.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
    except OSError:
        pass  # not Linux: the model from `platform` stands and no flags are claimed
    return CpuInfo(
        model=model,
        logical_cores=os.cpu_count() or 1,
        flags=tuple(flag for flag in _INTERESTING_FLAGS if flag in flags),
        mhz=mhz,
    )


@dataclass(frozen=True)
class CpuTopology:
    """What the kernel says of the cores this process runs on; None where it is not exposed (VMs often hide cpufreq)."""

    allowed_cpus: tuple[int, ...]  # this process's CPU affinity: threads are not pinned further than this
    threads_per_core: int | None  # 2 with SMT (hyper-threading) on, 1 without
    smt_active: bool | None
    governor: str | None  # cpufreq scaling governor of the first allowed CPU
    frequency_mhz: float | None  # its current clock, from cpufreq


def cpu_topology(sys_cpu: Path = Path("/sys/devices/system/cpu")) -> CpuTopology:
    """Affinity, SMT, governor and clock of the first allowed CPU, read from sysfs."""
    allowed = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
    first = f"cpu{allowed[0] if allowed else 0}"
    siblings = _read(sys_cpu / first / "topology" / "thread_siblings_list")
    smt = _read(sys_cpu / "smt" / "active")
    frequency = _read(sys_cpu / first / "cpufreq" / "scaling_cur_freq")
    return CpuTopology(
        allowed_cpus=allowed,
        threads_per_core=len(_cpu_list(siblings)) if siblings else None,
        smt_active=(smt == "1") if smt in ("0", "1") else None,
        governor=_read(sys_cpu / first / "cpufreq" / "scaling_governor"),
        frequency_mhz=int(frequency) / 1000 if frequency and frequency.isdigit() else None,
    )


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _cpu_list(text: str) -> list[int]:
    """`0-2,5` -> [0, 1, 2, 5] (the kernel's CPU list format)."""
    cpus = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus += range(int(low), int(high or low) + 1)
    return cpus


def physical_cores_allowed(
    sys_cpu: Path = Path("/sys/devices/system/cpu"), allowed: tuple[int, ...] | None = None
) -> int:
    """The physical cores among the CPUs this process may run on (its affinity mask): hyperthread siblings count once.

    Where the topology is hidden, every allowed logical CPU counts as a core.
    """
    if allowed is None:
        allowed = (
            tuple(sorted(os.sched_getaffinity(0)))
            if hasattr(os, "sched_getaffinity")
            else tuple(range(os.cpu_count() or 1))
        )
    cores = set()
    for cpu in allowed:
        package = _read(sys_cpu / f"cpu{cpu}" / "topology" / "physical_package_id")
        core = _read(sys_cpu / f"cpu{cpu}" / "topology" / "core_id")
        cores.add((package, core) if core is not None else ("cpu", cpu))
    return max(1, len(cores))

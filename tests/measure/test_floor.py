"""The physical floor: peak MAC rates from a fake /proc/cpuinfo, for the CPUs this project meets."""

from __future__ import annotations

import pytest

from greencompress.core.hardware import cpu_info
from greencompress.measure.floor import peak_mac_rate

AVX512_VNNI = "fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni"
AVX2_ONLY = "fpu sse2 avx avx2 fma"


def fake_cpu(tmp_path, flags: str, mhz: str | None = "2000.000"):
    lines = [
        "processor\t: 0",
        "model name\t: Test CPU",
        *([f"cpu MHz\t\t: {mhz}"] if mhz else []),
        f"flags\t\t: {flags}",
    ]
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(lines) + "\n")
    cpu_info.cache_clear()
    try:
        return cpu_info(path)
    finally:
        cpu_info.cache_clear()


def test_avx512_vnni_peaks(tmp_path):
    cpu = fake_cpu(tmp_path, AVX512_VNNI)
    assert cpu.mhz == 2000.0 and cpu.has_vnni
    fp32, int8 = peak_mac_rate(cpu, 2, "fp32"), peak_mac_rate(cpu, 2, "int8")
    assert fp32.macs_per_s == pytest.approx(2 * 2e9 * 2 * 16)  # 2 cores, 2 ports, 16 fp32 lanes
    assert int8.macs_per_s == pytest.approx(2 * 2e9 * 2 * 64)  # 64 byte lanes with vpdpbusd
    assert "VNNI" in int8.basis and "512-bit" in int8.basis
    # ResNet-18: 1.82 G MACs per image; one image at the int8 peak takes 1.82e9 / 5.12e11 s.
    assert int8.floor_ms(1_820_000_000, 1) == pytest.approx(1e3 * 1.82e9 / 5.12e11)


def test_avx2_without_vnni_halves_the_int8_rate(tmp_path):
    cpu = fake_cpu(tmp_path, AVX2_ONLY)
    assert peak_mac_rate(cpu, 2, "fp32").macs_per_s == pytest.approx(2 * 2e9 * 2 * 8)
    assert peak_mac_rate(cpu, 2, "int8").macs_per_s == pytest.approx(2 * 2e9 * 32)
    assert "no VNNI" in peak_mac_rate(cpu, 2, "int8").basis


def test_threads_beyond_the_cores_do_not_add_peak_and_no_clock_means_no_floor(tmp_path):
    cpu = fake_cpu(tmp_path, AVX2_ONLY)
    assert peak_mac_rate(cpu, 64, "fp32").macs_per_s == peak_mac_rate(cpu, cpu.logical_cores, "fp32").macs_per_s
    assert peak_mac_rate(fake_cpu(tmp_path, AVX2_ONLY, mhz=None), 2, "fp32") is None


AMX = AVX512_VNNI + " avx512_bf16 amx_bf16 amx_tile amx_int8"


def test_amx_tiles_set_the_int8_and_bf16_peaks_where_the_flags_show_them(tmp_path):
    cpu = fake_cpu(tmp_path, AMX)
    int8, bf16 = peak_mac_rate(cpu, 2, "int8"), peak_mac_rate(cpu, 2, "bf16")
    assert int8.macs_per_s == pytest.approx(2 * 2e9 * 1024) and "AMX tiles" in int8.basis
    assert bf16.macs_per_s == pytest.approx(2 * 2e9 * 512) and "AMX tiles" in bf16.basis
    assert peak_mac_rate(cpu, 2, "fp32").macs_per_s == pytest.approx(2 * 2e9 * 2 * 16)  # AMX has no fp32
    # OpenVINO int8 ResNet-18 at batch 1 ran 1.58 ms on such a CPU: under the VNNI-only floor, above the AMX one.
    vnni_only = peak_mac_rate(fake_cpu(tmp_path, AVX512_VNNI), 2, "int8")
    assert vnni_only.floor_ms(1_820_000_000, 1) > 1.58 > int8.floor_ms(1_820_000_000, 1)


def test_bf16_without_amx_uses_avx512_bf16_or_the_fp32_rate(tmp_path):
    assert peak_mac_rate(fake_cpu(tmp_path, AVX512_VNNI + " avx512_bf16"), 2, "bf16").macs_per_s == pytest.approx(
        2 * 2e9 * 2 * 32
    )
    assert "fp32 rate" in peak_mac_rate(fake_cpu(tmp_path, AVX2_ONLY), 2, "bf16").basis


def test_a_ratio_below_the_floor_says_the_floor_is_wrong():
    from greencompress.measure.floor import floor_ratio_text

    assert floor_ratio_text(3.0, 1.0) == "3.0"
    assert floor_ratio_text(1.58, 3.0) == "0.53 (below the floor: the floor is wrong for this CPU)"
    assert floor_ratio_text(1.0, None) == "-"

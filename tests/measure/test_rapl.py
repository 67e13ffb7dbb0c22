"""RAPL on a temporary powercap tree: parsing, units, sums, DRAM kept apart, wrap-around, permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from greencompress.measure.energy.meter import MeterUnavailable
from greencompress.measure.energy.rapl import (
    RaplMeter,
    counter_delta_uj,
    discover_zones,
)

MAX_RANGE_UJ = 262_143_328_850  # a real package's max_energy_range_uj


def make_zone(root: Path, folder: str, name: str, energy_uj: int, max_range_uj: int = MAX_RANGE_UJ) -> Path:
    zone = root / folder
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{name}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
    return zone


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


@pytest.fixture
def two_socket_tree(tmp_path) -> dict[str, Path]:
    """Two packages with core/uncore/dram sub-zones, a psys zone and an MMIO duplicate, as on a real server."""
    root = tmp_path / "powercap"
    zones = {
        "pkg0": make_zone(root, "intel-rapl:0", "package-0", 1_000_000),
        "core0": make_zone(root, "intel-rapl:0:0", "core", 500_000),
        "dram0": make_zone(root, "intel-rapl:0:1", "dram", 200_000, 65_712_999_613),
        "pkg1": make_zone(root, "intel-rapl:1", "package-1", 3_000_000),
        "dram1": make_zone(root, "intel-rapl:1:0", "dram", 400_000, 65_712_999_613),
        "psys": make_zone(root, "intel-rapl:2", "psys", 9_000_000),
        "mmio": make_zone(root, "intel-rapl-mmio:0", "package-0", 1_000_000),
    }
    zones["root"] = root
    return zones


def test_packages_sum_into_cpu_and_dram_stays_separate(two_socket_tree):
    meter = RaplMeter(two_socket_tree["root"])
    assert [zone.name for zone in meter.zones] == ["package-0", "dram", "package-1", "dram"]
    meter.begin_window()
    set_energy(two_socket_tree["pkg0"], 1_000_000 + 2_500_000)  # +2.5 J
    set_energy(two_socket_tree["pkg1"], 3_000_000 + 1_500_000)  # +1.5 J
    set_energy(two_socket_tree["dram0"], 200_000 + 300_000)  # +0.3 J
    set_energy(two_socket_tree["dram1"], 400_000 + 200_000)  # +0.2 J
    set_energy(two_socket_tree["core0"], 99_000_000)  # inside package-0: must not count
    set_energy(two_socket_tree["psys"], 99_000_000)  # overlaps everything: must not count
    reading = meter.end_window()
    assert reading.energy_j == pytest.approx({"cpu": 4.0, "dram": 0.5})
    assert reading.method == "rapl" and reading.measured
    assert meter.describe().domains == ("cpu", "dram")


def test_wrap_around_between_begin_and_end(tmp_path):
    root = tmp_path / "powercap"
    package = make_zone(root, "intel-rapl:0", "package-0", MAX_RANGE_UJ - 1_000_000)
    meter = RaplMeter(root)
    meter.begin_window()
    set_energy(package, 2_000_000)  # wrapped: 1 J before the top, 2 J after zero (+1 uJ for the step to 0)
    reading = meter.end_window()
    assert reading.energy_j["cpu"] == pytest.approx(3.000001)


def test_counter_delta_without_and_with_wrap():
    assert counter_delta_uj(10, 25, 100) == 15
    assert counter_delta_uj(90, 5, 99) == 15  # 90 -> 99 is 9, 99 -> 0 is 1, 0 -> 5 is 5


def test_missing_tree_says_so(tmp_path):
    with pytest.raises(MeterUnavailable, match="no RAPL zones under"):
        discover_zones(tmp_path / "absent")


def test_tree_without_a_package_is_unavailable(tmp_path):
    make_zone(tmp_path, "intel-rapl:0", "psys", 10)
    with pytest.raises(MeterUnavailable, match="no CPU package counter"):
        discover_zones(tmp_path)


def test_unreadable_energy_says_why_and_how_to_grant_access(tmp_path, monkeypatch):
    package = make_zone(tmp_path, "intel-rapl:0", "package-0", 10)
    energy_file = package / "energy_uj"
    if os.geteuid() == 0:  # root reads any file: make the read itself fail as it does for a normal user
        real_read_text = Path.read_text

        def read_text(path, *args, **kwargs):
            if path == energy_file:
                raise PermissionError(13, "Permission denied", str(path))
            return real_read_text(path, *args, **kwargs)

        monkeypatch.setattr(Path, "read_text", read_text)
    else:
        energy_file.chmod(0o200)
    with pytest.raises(MeterUnavailable) as caught:
        RaplMeter(tmp_path)
    message = str(caught.value)
    assert "not readable" in message and "CVE-2020-8694" in message and "chmod o+r" in message


def test_measurement_overhead_is_far_below_one_percent_of_a_window(two_socket_tree):
    import time

    meter = RaplMeter(two_socket_tree["root"])
    started = time.perf_counter()
    for _ in range(100):
        meter.begin_window()
        meter.end_window()
    per_window_s = (time.perf_counter() - started) / 100
    assert per_window_s < 0.01 * meter.min_window_s

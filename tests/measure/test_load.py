"""The other processes' share of the machine during a window, parsed from a fake /proc/stat."""

from __future__ import annotations

import pytest

from greencompress.measure.load import (
    CpuTimes,
    LoadMonitor,
    other_cpu_share,
    read_cpu_times,
)


def write_stat(path, user, system, idle, steal=0):
    path.write_text(f"cpu  {user} 0 {system} {idle} 0 0 0 {steal} 0 0\ncpu0 1 2 3 4\nintr 1\n")


def test_cpu_times_are_parsed_in_seconds(tmp_path):
    stat = tmp_path / "stat"
    write_stat(stat, user=1000, system=500, idle=9000, steal=50)
    times = read_cpu_times(stat, ticks_per_s=100)
    assert times.machine_busy_s == 15.0 and times.machine_steal_s == 0.5


def test_old_kernel_lines_and_unreadable_files(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 50 900\n")  # no iowait/irq/steal columns
    assert read_cpu_times(stat, ticks_per_s=100).machine_busy_s == 1.5
    assert read_cpu_times(tmp_path / "absent", ticks_per_s=100) is None
    stat.write_text("intr 1 2 3\n")
    assert read_cpu_times(stat, ticks_per_s=100) is None


def test_share_subtracts_this_process_and_counts_stolen_time():
    start = CpuTimes(machine_busy_s=100.0, machine_steal_s=1.0, own_s=10.0, wall_s=50.0)
    # 2 s on 2 CPUs = 4 CPU-s of capacity; the machine was busy 3 CPU-s, 1.8 of them ours; 0.2 s stolen.
    end = CpuTimes(machine_busy_s=103.0, machine_steal_s=1.2, own_s=11.8, wall_s=52.0)
    assert other_cpu_share(start, end, logical_cpus=2) == pytest.approx((3.0 - 1.8 + 0.2) / 4.0)
    quiet_end = CpuTimes(100.0, 1.0, 10.01, 52.0)  # tick rounding: ours exceeds the machine's by a hair
    assert other_cpu_share(start, quiet_end, logical_cpus=2) == 0.0
    assert other_cpu_share(None, end, logical_cpus=2) is None


def test_monitor_reads_its_file_at_begin_and_end(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr("greencompress.measure.load.time.process_time", lambda: 0.0)  # this process: idle
    walls = iter([10.0, 11.0])
    monkeypatch.setattr("greencompress.measure.load.time.perf_counter", lambda: next(walls))
    monitor = LoadMonitor(stat, logical_cpus=2, ticks_per_s=100)
    write_stat(stat, user=1000, system=0, idle=0)
    monitor.begin()
    write_stat(stat, user=1100, system=0, idle=0)  # another process used 1 CPU-s of the 2 available
    assert monitor.end() == pytest.approx(0.5)

"""Latency statistics, and one timed measurement window of back-to-back runs."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np

from greencompress.measure.energy import EnergyMeter, EnergyReading
from greencompress.measure.load import LoadMonitor
from greencompress.runtimes.base import Inputs, batch_size_of


@dataclass(frozen=True)
class Latency:
    """Per-batch latency in milliseconds and throughput in samples per second."""

    batch_size: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_per_s: float
    percentiles_ms: tuple[float, ...] = ()  # the 0th..100th percentiles: the distribution, for plots
    window_p50_ms: tuple[float, ...] = ()  # the median of each window, in the order measured: the spread over rounds
    sequence_length: int | None = None  # transformers: tokens per input (padded); None for image models

    @property
    def shape(self) -> tuple[int, int | None]:
        """What a figure is keyed by: (batch size, sequence length or None)."""
        return self.batch_size, self.sequence_length

    @property
    def tokens_per_s(self) -> float | None:
        return self.throughput_per_s * self.sequence_length if self.sequence_length else None


def shape_label(batch_size: int, sequence_length: int | None = None) -> str:
    """How reports name a measured shape: `8`, or `8 x 128` (batch x tokens) for a transformer."""
    return str(batch_size) if sequence_length is None else f"{batch_size} x {sequence_length}"


def shape_words(batch_size: int, sequence_length: int | None = None) -> str:
    """The shape in a sentence: `batch 8`, or `batch 8, sequence 128`."""
    return f"batch {batch_size}" + (f", sequence {sequence_length}" if sequence_length is not None else "")


def shape_key(batch_size: int, sequence_length: int | None = None) -> str:
    """The shape as a report.json key: `8`, or `8x128`."""
    return str(batch_size) if sequence_length is None else f"{batch_size}x{sequence_length}"


def latency_stats(durations_ns, batch_size: int, window_p50_ms=()) -> Latency:
    """Percentiles, mean and throughput of per-batch durations given in nanoseconds."""
    milliseconds = np.asarray(durations_ns, dtype=float) / 1e6
    return Latency(
        batch_size=batch_size,
        iterations=len(milliseconds),
        p50_ms=float(np.percentile(milliseconds, 50)),
        p90_ms=float(np.percentile(milliseconds, 90)),
        p99_ms=float(np.percentile(milliseconds, 99)),
        mean_ms=float(milliseconds.mean()),
        throughput_per_s=float(batch_size * 1e3 / milliseconds.mean()),
        percentiles_ms=tuple(float(value) for value in np.percentile(milliseconds, np.arange(101))),
        window_p50_ms=tuple(float(value) for value in window_p50_ms),
    )


@dataclass(frozen=True)
class Window:
    """One measurement window: the duration of each run in it, and the energy of the whole window."""

    durations_ns: list[int]
    energy: EnergyReading
    batch_size: int
    started_s: float  # time.perf_counter() at the window's start
    other_cpu_share: float | None = None  # of the machine's CPU capacity, used by other processes (measure/load.py)

    @property
    def inferences(self) -> int:
        return len(self.durations_ns) * self.batch_size


def run_window(
    runner,
    inputs: Inputs,
    meter: EnergyMeter,
    min_duration_s: float,
    min_iterations: int,
    max_duration_s: float,
    load: LoadMonitor | None = None,
) -> Window:
    """Run back-to-back until both `min_duration_s` and `min_iterations` are reached, or `max_duration_s`.

    The meter is read once before and once after; inside the loop only a clock read (a vDSO call,
    not a syscall) is added per run, so measuring costs far under 1% of the window. `load`, when
    given, records how busy the rest of the machine was.
    """
    durations_ns = []
    min_ns, max_ns = min_duration_s * 1e9, max_duration_s * 1e9
    # A GPU runner puts the batch on the device once, outside the timed calls, and waits for the device in each;
    # its call may return the device's own time for the run (CUDA events), which is then the duration recorded.
    prepared = hasattr(runner, "prepare")
    call = runner.prepare(inputs) if prepared else functools.partial(runner, inputs)
    if load is not None:
        load.begin()
    meter.begin_window()
    started = time.perf_counter_ns()
    started_s = time.perf_counter()
    while True:
        before = time.perf_counter_ns()
        device_ns = call()
        after = time.perf_counter_ns()
        durations_ns.append(device_ns if prepared and isinstance(device_ns, int) else after - before)
        elapsed = after - started
        if (len(durations_ns) >= min_iterations and elapsed >= min_ns) or elapsed >= max_ns:
            break
    reading = meter.end_window()
    return Window(durations_ns, reading, batch_size_of(inputs), started_s, load.end() if load is not None else None)

"""The benchmark methodology: idle baseline, repeated windows interleaved across artifacts, confidence intervals.

For each batch size every artifact is warmed up, then measured in rounds: one window per artifact
per round, the order rotating each round, so drift (thermal, a neighbour on a shared machine)
touches all artifacts alike. After `windows` rounds, more rounds run while any artifact's 95%
confidence interval on joules per inference is wider than `target_relative_ci`, up to
`max_windows`; an artifact still above it is reported as noisy. See docs/energy.md.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from greencompress.core.config import Section
from greencompress.core.registry import unknown_choice
from greencompress.measure.energy import EnergyMeter, Uncertainty
from greencompress.measure.latency import Latency, Window, latency_stats, run_window
from greencompress.measure.load import BUSY_SHARE, LoadMonitor
from greencompress.measure.stats import mean_interval
from greencompress.runtimes.base import Inputs, RunnerSettings, batch_size_of

log = logging.getLogger(__name__)


class BenchmarkSpec(Section):
    """Latency and energy measurement: per batch size, interleaved windows of back-to-back runs (docs/energy.md)."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8], min_length=1)
    # Transformers: each batch size is measured at each of these lengths, real texts padded (or cut) to it.
    sequence_lengths: list[int] = Field(default_factory=lambda: [128], min_length=1)
    # Text generation: tokens generated after each prompt (a prompt is one of sequence_lengths long).
    new_tokens: int = Field(default=64, ge=8)
    # Text generation: the models measured, every one the stages make (`all`), or the original on PyTorch (the
    # reference) and the last stage's model (`last`: a search trial's, whose models in between are only steps).
    measure: Literal["all", "last"] = "all"
    warmup_iterations: int = Field(default=10, ge=0)
    window_s: float = Field(default=1.0, gt=0)  # raised to the meter's shortest supported window
    min_iterations: int = Field(default=10, ge=1)  # per window
    max_window_s: float = Field(default=30.0, gt=0)  # a window ends here even if a slow model ran fewer times
    windows: int = Field(default=5, ge=2)
    max_windows: int = Field(default=10, ge=2)
    # Instead of max_windows: keep adding rounds while a figure's interval is wider than the target, until this many
    # seconds per batch size have been spent (a noisy machine then gets a longer, stated, measurement).
    max_time_s: float | None = Field(default=None, gt=0)
    target_relative_ci: float = Field(default=0.05, gt=0)  # 95% CI half-width / mean, on joules per inference
    # Intra-op threads of every runtime; `auto`: the physical cores this process may use (its affinity mask).
    # Resolved when the recipe is read, so the report and recipe.resolved.yaml say the number used.
    threads: Literal["auto"] | int = Field(default="auto", validate_default=True)
    # ONNX Runtime workers spin-wait for work when true; off, they sleep: same latency on a quiet machine, less
    # CPU time, and far less harm on a busy one (docs/BENCHMARKS.md, scripts/bench_spinning.py).
    allow_spinning: bool = False
    # Where to measure: cpu, cuda (the first GPU), cuda:N, or auto (a GPU when PyTorch sees one). Declared before
    # `runtimes`, whose `auto` depends on it; checked against the machine when the run starts (runtimes/device.py).
    device: str = "cpu"
    # Registered runtimes (runtimes/) that run every exported file, or every PyTorch model for those that run
    # torch; onnxruntime is the reference and always listed. PyTorch eager runs the original model regardless.
    # `auto`: every installed runtime (ONNX Runtime, OpenVINO, ...), resolved when the recipe is read.
    runtimes: Literal["auto"] | list[str] = Field(default="auto", validate_default=True)
    # The runtime you serve the model on today: reports set the recommended deployment against the original FP32
    # model on it. None: PyTorch (the as-trained reference every run measures). Must be measured: torch, or listed
    # in `runtimes`.
    baseline: str | None = None
    # bf16 inference of the FP32 models (OpenVINO's precision hint, PyTorch autocast) as artifacts of their own:
    # `auto` where the CPU has a bf16 unit (AMX-BF16 or AVX512_BF16), true/false to force it. (On a GPU, PyTorch
    # runs FP16 and BF16 weights whenever the GPU supports them.)
    bf16: Literal["auto"] | bool = "auto"
    warmup_s: float = Field(default=0.0, ge=0)  # warm-up by time too (a GPU must reach its steady clock)
    cooldown_s: float = Field(default=0.0, ge=0)  # pause between windows (a GPU's temperature settles)
    torch_compile: bool = False  # PyTorch on a GPU: torch.compile the model
    # GPU power limits in watts (DVFS): every artifact measured again at each, where NVML lets this process set
    # it (root); the original limit is restored afterwards. The report shows the energy-optimal limit and the
    # fastest per artifact. Needs benchmark.device cuda.
    gpu_power_limits: list[float] | None = None

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        from greencompress.runtimes.device import check_device_setting

        return check_device_setting(value)

    @field_validator("threads")
    @classmethod
    def _resolve_threads(cls, value: str | int) -> int:
        if value == "auto":
            from greencompress.core.hardware import physical_cores_allowed

            return physical_cores_allowed()
        if value < 1:
            raise ValueError(f"threads must be >= 1 or auto, got {value}")
        return value

    @field_validator("runtimes")
    @classmethod
    def _runtimes_available(cls, value: str | list[str], info: ValidationInfo) -> list[str]:
        from greencompress.runtimes import RUNTIMES
        from greencompress.runtimes.device import no_gpu_here

        kind = device_kind(info.data.get("device", "cpu"))
        if value == "auto":
            chosen = [
                spec.name for spec in RUNTIMES if spec.in_auto and spec.device == kind and spec.unavailable() is None
            ]
            if not chosen:
                reasons = "; ".join(f"{spec.name}: {spec.unavailable()}" for spec in RUNTIMES if spec.device == kind)
                gpu = no_gpu_here() if kind == "cuda" else None
                raise ValueError(
                    (f"benchmark.device asks for a GPU, and there is no GPU here: {gpu}; " if gpu else "")
                    + f"no runtime can run on {kind} here ({reasons})"
                )
            return list(dict.fromkeys(["onnxruntime", *chosen] if kind == "cpu" else chosen))
        for name in value:
            if name not in RUNTIMES:
                raise ValueError(unknown_choice("runtime", name, RUNTIMES.names()))
            if reason := RUNTIMES.get(name).unavailable():
                raise ValueError(reason)
            if RUNTIMES.get(name).device != kind:
                raise ValueError(f"{name} runs on {RUNTIMES.get(name).device}, but benchmark.device is {kind}")
        return list(dict.fromkeys(value))

    @field_validator("baseline")
    @classmethod
    def _baseline_measured(cls, value: str | None, info: ValidationInfo) -> str | None:
        if "runtimes" not in info.data:
            return value  # the runtimes were refused: that one error says what to fix
        measured = [
            "torch" if device_kind(info.data.get("device", "cpu")) == "cpu" else "torch-cuda",
            *info.data.get("runtimes", []),
        ]
        if value is not None and value not in measured:
            raise ValueError(f"the baseline must be a runtime this run measures ({', '.join(measured)}), got {value!r}")
        return value

    @property
    def runner_settings(self) -> RunnerSettings:
        return RunnerSettings(self.threads, self.allow_spinning, compile=self.torch_compile)

    def bf16_decision(self, cpu=None) -> tuple[bool, str]:
        """Whether bf16 artifacts are measured in this run, and why (in words for the report)."""
        from greencompress.core.hardware import cpu_info

        cpu = cpu or cpu_info()
        if self.bf16 != "auto":
            return bool(self.bf16), f"benchmark.bf16: {str(self.bf16).lower()} in the recipe"
        if cpu.has_bf16:
            units = " and ".join(flag for flag in ("amx_bf16", "avx512_bf16") if flag in cpu.flags)
            return True, f"bf16 measured: this CPU has a bf16 unit ({units})"
        return False, (
            "bf16 not measured: this CPU has neither AMX-BF16 nor AVX512_BF16 (read from its flags), so "
            "bf16 would be emulated, not faster; set benchmark.bf16: true to measure it anyway"
        )

    @model_validator(mode="after")
    def _window_counts(self) -> BenchmarkSpec:
        if self.max_windows < self.windows:
            raise ValueError(f"max_windows ({self.max_windows}) must be >= windows ({self.windows})")
        if self.gpu_power_limits is not None:
            if device_kind(self.device) != "cuda":
                raise ValueError(f"gpu_power_limits needs device: cuda (or cuda:N, auto on a GPU), got {self.device}")
            if not self.gpu_power_limits or min(self.gpu_power_limits) <= 0:
                raise ValueError(f"gpu_power_limits: positive watts expected, got {self.gpu_power_limits}")
        return self

    @field_validator("batch_sizes", "sequence_lengths")
    @classmethod
    def _sizes_in_range(cls, value: list[int], info: ValidationInfo) -> list[int]:
        # A sequence holds at least [CLS] and [SEP].
        least, what = (1, "batch size") if info.field_name == "batch_sizes" else (2, "sequence length")
        for index, size in enumerate(value):
            if size < least:
                raise ValueError(f"{what} must be >= {least}, got {size} at position {index}")
        return sorted(set(value))


def device_kind(setting: str) -> str:
    """ "cpu" or "cuda": the kind of device a `benchmark.device` setting means on this machine."""
    if setting == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cpu" if setting == "cpu" else "cuda"


@dataclass(frozen=True)
class IdleBaseline:
    """Power per domain, in watts, while this process sleeps: the share of a window not caused by the model."""

    power_w: dict[str, float]
    duration_s: float
    method: str
    ci95_w: float = 0.0  # half-width of the 95% interval of the total, over the sub-windows (inf for one)
    when: str = "before benchmarking"

    @property
    def total_w(self) -> float:
        return sum(self.power_w.values())


IDLE_WINDOWS = 3  # sub-windows per idle measurement: enough for an interval, so drift can be told from noise
MAX_ROUNDS = 1_000  # with benchmark.max_time_s: a bound on rounds however short the windows


def measure_idle(meter: EnergyMeter, seconds: float, when: str = "before benchmarking") -> IdleBaseline:
    """Measure the idle power over `seconds` (each of IDLE_WINDOWS sub-windows at least the meter's shortest)."""
    readings = []
    for _ in range(IDLE_WINDOWS):
        meter.begin_window()
        time.sleep(max(seconds / IDLE_WINDOWS, meter.min_window_s))
        readings.append(meter.end_window())
    duration = sum(reading.duration_s for reading in readings)
    power = {domain: sum(r.energy_j[domain] for r in readings) / duration for domain in readings[0].energy_j}
    interval = mean_interval([reading.total_j / reading.duration_s for reading in readings])
    return IdleBaseline(power, duration, readings[0].method, interval.half_width, when)


def idle_drift(checks: list[IdleBaseline]) -> str | None:
    """A sentence when idle power moved between checks by more than their 95% intervals allow; None otherwise."""
    if len(checks) < 2:
        return None
    low, high = min(checks, key=lambda c: c.total_w), max(checks, key=lambda c: c.total_w)
    if high.total_w - high.ci95_w <= low.total_w + low.ci95_w:
        return None
    return (
        f"idle power drifted from {low.total_w:.3g} W ({low.when}) to {high.total_w:.3g} W ({high.when}), beyond "
        f"the noise of either measurement: active energy (total - idle) is uncertain by that much power"
    )


@dataclass(frozen=True)
class EnergyResult:
    """Joules per inference over repeated windows: total (all the meter sees) and active (idle power subtracted)."""

    joules_per_inference: float
    ci95_j: float  # half-width of the 95% confidence interval of the mean, over windows
    active_joules_per_inference: float
    active_ci95_j: float
    joules_per_inference_by_domain: dict[str, float]  # mean over windows per domain: sums to joules_per_inference
    idle_power_w: dict[str, float]
    windows: int
    window_s: float  # mean duration of one window
    inferences: int
    method: str
    measured: bool
    uncertainty: Uncertainty  # the method's systematic band, beside the statistical interval
    noisy: bool  # the interval stayed wider than the target after the last allowed window
    timeline: tuple[tuple[float, float, float], ...] = ()  # per window: (start s, duration s, joules)
    # Per window, in the order measured (window i of every artifact ran in round i): what ratios pair on.
    window_joules_per_inference: tuple[float, ...] = ()
    window_active_joules_per_inference: tuple[float, ...] = ()
    window_other_cpu_share: tuple[float, ...] = ()  # empty where the machine's CPU time cannot be read
    window_telemetry: tuple[dict, ...] = ()  # per window, what the meter saw of the device (GPU clock, temperature)

    @property
    def relative_ci95(self) -> float:
        return self.ci95_j / self.joules_per_inference if self.joules_per_inference else float("inf")

    @property
    def busy_windows(self) -> int:
        """Windows during which other processes used more than BUSY_SHARE of the machine."""
        return sum(share > BUSY_SHARE for share in self.window_other_cpu_share)


@dataclass(frozen=True)
class Benchmark:
    """One artifact at one batch size: latency over every run of every window, and energy over windows."""

    latency: Latency
    energy: EnergyResult

    @property
    def joules_per_inference(self) -> float:
        return self.energy.joules_per_inference


def window_duration_s(spec: BenchmarkSpec, meter: EnergyMeter) -> float:
    """The window length used: the recipe's, but never shorter than the meter supports."""
    return max(spec.window_s, meter.min_window_s)


def benchmark_interleaved(
    runners: dict,
    inputs: Inputs,
    spec: BenchmarkSpec,
    meter: EnergyMeter,
    idle: IdleBaseline,
    progress=None,
    load: LoadMonitor | None = None,
) -> dict[str, Benchmark]:
    """Measure every runner on the same `inputs` in interleaved rounds; returns a Benchmark per runner name."""
    window_s = window_duration_s(spec, meter)
    load = load or LoadMonitor()
    for runner in runners.values():
        for _ in range(spec.warmup_iterations):
            runner(inputs)
        warm_until = time.perf_counter() + spec.warmup_s
        while time.perf_counter() < warm_until:  # by time too: a GPU's clock and temperature need seconds to settle
            runner(inputs)
    windows: dict[str, list[Window]] = {name: [] for name in runners}
    names = list(runners)
    task = (
        progress.add_task(f"benchmark windows (batch {batch_size_of(inputs)})", total=spec.windows * len(names))
        if progress
        else None
    )
    started = time.perf_counter()
    for round_index in itertools.count():
        if round_index >= spec.windows and (
            not _any_too_wide(windows, idle, spec.target_relative_ci)
            or _budget_spent(spec, round_index, time.perf_counter() - started)
        ):
            break
        if round_index >= spec.windows and progress:
            progress.update(task, total=(round_index + 1) * len(names))
        rotation = round_index % len(names)
        for name in names[rotation:] + names[:rotation]:
            if spec.cooldown_s:
                time.sleep(spec.cooldown_s)
            windows[name].append(
                run_window(runners[name], inputs, meter, window_s, spec.min_iterations, spec.max_window_s, load)
            )
            if progress:
                progress.update(task, advance=1)
    return {name: _summarize(measured, idle, spec.target_relative_ci) for name, measured in windows.items()}


def _budget_spent(spec: BenchmarkSpec, rounds_done: int, elapsed_s: float) -> bool:
    """Whether extra rounds stop: `max_time_s` spent where set (the round cap then a safety net), else max_windows."""
    if spec.max_time_s is not None:
        return elapsed_s >= spec.max_time_s or rounds_done >= MAX_ROUNDS
    return rounds_done >= spec.max_windows


def _per_inference(windows: list[Window], idle: IdleBaseline) -> tuple[list[float], list[float]]:
    total = [w.energy.total_j / w.inferences for w in windows]
    active = [(w.energy.total_j - idle.total_w * w.energy.duration_s) / w.inferences for w in windows]
    return total, active


def _any_too_wide(windows: dict[str, list[Window]], idle: IdleBaseline, target: float) -> bool:
    return any(
        mean_interval(_per_inference(measured, idle)[0]).relative_half_width > target for measured in windows.values()
    )


def _summarize(windows: list[Window], idle: IdleBaseline, target: float) -> Benchmark:
    total, active = _per_inference(windows, idle)
    total_interval, active_interval = mean_interval(total), mean_interval(active)
    inferences = sum(w.inferences for w in windows)
    # Averaged like the total (per window, then over windows), so the domains add up to it exactly.
    by_domain = {
        domain: float(np.mean([w.energy.energy_j[domain] / w.inferences for w in windows]))
        for domain in windows[0].energy.energy_j
    }
    shares = [w.other_cpu_share for w in windows]
    first = windows[0].energy
    energy = EnergyResult(
        joules_per_inference=total_interval.mean,
        ci95_j=total_interval.half_width,
        active_joules_per_inference=active_interval.mean,
        active_ci95_j=active_interval.half_width,
        joules_per_inference_by_domain=by_domain,
        idle_power_w=idle.power_w,
        windows=len(windows),
        window_s=float(np.mean([w.energy.duration_s for w in windows])),
        inferences=inferences,
        method=first.method,
        measured=first.measured,
        uncertainty=first.uncertainty,
        noisy=total_interval.relative_half_width > target,
        timeline=tuple((w.started_s, w.energy.duration_s, w.energy.total_j) for w in windows),
        window_joules_per_inference=tuple(total),
        window_active_joules_per_inference=tuple(active),
        window_other_cpu_share=tuple(shares) if None not in shares else (),
        window_telemetry=tuple(w.energy.telemetry for w in windows) if any(w.energy.telemetry for w in windows) else (),
    )
    durations = [duration for w in windows for duration in w.durations_ns]
    window_p50_ms = [np.median(w.durations_ns) / 1e6 for w in windows]
    return Benchmark(latency=latency_stats(durations, windows[0].batch_size, window_p50_ms), energy=energy)

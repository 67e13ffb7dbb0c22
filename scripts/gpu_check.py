"""The GPU checks in one command, for a machine lent with an NVIDIA GPU (at most --budget-s, 7 minutes by default).

    python scripts/gpu_check.py --out $OUT          # writes gpu_check.json and gpu_check.md there
    bash scripts/gpu_session.sh                     # on a lent machine: this, the GPU tests and a GPU run

Parts (a), (b), (c) and (e) take about 2 minutes; (d) then measures model by model, batch size 32
first, and skips (saying so) whatever would end past the budget.

(a) NVML's energy counter against integrated sampled power, on a steady matrix-multiply load and on
    50 ms on/off pulses (sampled power is a ~1 s average on recent GPUs and misses pulses);
(b) the 95% interval half-width of power against window length (0.5, 1, 2, 5 s), and the counter's
    measured update period;
(c) idle power at rest, and how long it takes to settle back after load;
(d) the default recipe's architecture (ResNet-18, 10 classes, 64x64) and ResNet-50 at 224x224, random
    weights, batch 1, 32 and 256: FP32 vs FP16 vs BF16 (weights cast) vs FP32 compiled, J/inference by
    the NVML counter with paired intervals, and latency, side by side in interleaved windows;
(e) energy and time per matrix multiply at four GPU power limits, minimum to default, where NVML lets
    this process set them (root), the limit restored afterwards even on Ctrl-C; where not, why not;
(f) with onnxruntime-gpu: FP32 vs the FP16 export on the CUDA provider, and whether TensorRT runs
    the symmetric int8 graph whole (profiled node placement); without it, the reason.
Needs PyTorch with CUDA and nvidia-ml-py, which the lent machines have, and pydantic, which they lack:
scripts/gpu_wheels.py fetches it to carry. Every part that cannot run says why in the output instead of
stopping the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from greencompress.measure.stats import mean_interval, paired_ratio_interval  # noqa: E402
from greencompress.models.inputs import ModelInputs  # noqa: E402

BATCH_SIZES = (32, 256, 1)  # in this order: what the time budget leaves out is batch 1 first
PRECISIONS = ("fp32", "fp16", "bf16", "fp32-compiled")
MODELS = (("resnet18", 10, 64), ("resnet50", 1000, 224))  # (torchvision name, classes, input size)


@dataclass(frozen=True)
class Durations:
    """How long each check loads or watches the GPU, in seconds (a rehearsal on fakes runs them scaled down)."""

    counter_load_s: float = 8.0  # (a) each of the steady and the pulsed load
    pulse_s: float = 0.05  # (a) on for this long, then idle for this long
    window_lengths_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)  # (b)
    windows_per_length: int = 5  # (b)
    update_period_probe_s: float = 1.0  # (b) how long the counter's update period is watched
    rest_s: float = 6.0  # (c) idle power before any load of this part
    idle_load_s: float = 10.0  # (c)
    after_load_s: float = 25.0  # (c) watched after the load
    power_reading_s: float = 1.0  # (c) one power reading per this long
    model_warmup_s: float = 1.0  # (d) per variant; the GPU's clock has settled in the parts before
    model_window_s: float = 1.0  # (d) raised by the meter to what its counter needs
    model_windows: int = 5  # (d)
    model_idle_s: float = 3.0  # (d)
    model_reserve_s: float = 30.0  # (d) spare time a model and batch size needs beyond its windows (compiling)
    limit_load_s: float = 5.0  # (e) at each power limit

    def scaled(self, factor: float) -> Durations:
        def scale(value):
            if isinstance(value, tuple):
                return tuple(v * factor for v in value)
            return value * factor if isinstance(value, float) else value

        return replace(self, **{f.name: scale(getattr(self, f.name)) for f in fields(self)})


DURATIONS = Durations()


@dataclass(frozen=True)
class Gpu:
    """What the checks touch: NVML and the GPU's handle, a load to put on it, and the pipeline's own meter."""

    nvml: ModuleType
    handle: object
    load: Callable[..., int]  # load(seconds, pulse_s=None) -> operations run
    meter: object  # the EnergyMeter `greencompress run` would choose for this GPU
    bf16: bool  # whether the GPU runs BF16


class MatmulLoad:
    """FP16 matrix multiplies on the GPU, each waited for; with `pulse_s`, on for pulse_s then idle as long."""

    def __init__(self, torch, size: int = 8192):
        self.torch = torch
        self.matrix = torch.randn(size, size, device="cuda", dtype=torch.float16)

    def __call__(self, seconds: float, pulse_s: float | None = None) -> int:
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            burst_end = time.perf_counter() + (pulse_s or seconds)
            while time.perf_counter() < burst_end:
                self.matrix @ self.matrix
                self.torch.cuda.synchronize()
                count += 1
            if pulse_s:
                time.sleep(pulse_s)
        return count


def counter_vs_sampled(counter_j: float, sampled_j: float) -> float:
    """Sampled-power energy as a fraction of the counter's (1.0: they agree)."""
    return sampled_j / counter_j if counter_j else float("nan")


def settle_time_s(times_s: list[float], watts: list[float], rest_w: float, tolerance: float = 0.05) -> float | None:
    """Seconds until power stays within `tolerance` of the resting power for the rest of the series; None if never."""
    for index in range(len(watts)):
        if all(abs(w - rest_w) <= tolerance * rest_w for w in watts[index:]):
            return times_s[index] - times_s[0]
    return None


class PowerSampler:
    """Integrates nvmlDeviceGetPowerUsage (trapezoids) at `hz` in a thread: the method that misses short pulses."""

    def __init__(self, nvml, handle, hz: float = 100.0):
        self.nvml, self.handle, self.interval = nvml, handle, 1.0 / hz
        self.joules, self.stop_flag = 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _watts(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1e3

    def _run(self) -> None:
        then, before = time.perf_counter(), self._watts()
        while not self.stop_flag.wait(self.interval):
            now, watts = time.perf_counter(), self._watts()
            self.joules += 0.5 * (watts + before) * (now - then)
            then, before = now, watts

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_flag.set()
        self.thread.join()


def counter_j(gpu: Gpu) -> float:
    return gpu.nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle) / 1e3


def check_counter_vs_sampled(gpu: Gpu, durations: Durations) -> dict:
    results = {}
    for name, pulse in (("steady", None), (f"pulses_{durations.pulse_s * 1e3:g}ms", durations.pulse_s)):
        start = counter_j(gpu)
        with PowerSampler(gpu.nvml, gpu.handle) as sampler:
            gpu.load(durations.counter_load_s, pulse)
        counted = counter_j(gpu) - start
        results[name] = {
            "counter_j": counted,
            "sampled_j": sampler.joules,
            "sampled_over_counter": counter_vs_sampled(counted, sampler.joules),
        }
    return results


def check_window_lengths(gpu: Gpu, durations: Durations) -> dict:
    from greencompress.measure.energy.nvml import counter_update_period_s

    results = {
        "counter_update_period_s": counter_update_period_s(
            gpu.nvml, gpu.handle, duration_s=durations.update_period_probe_s
        )
    }
    for length in durations.window_lengths_s:
        watts = []
        for _ in range(durations.windows_per_length):
            start, began = counter_j(gpu), time.perf_counter()
            gpu.load(length)
            watts.append((counter_j(gpu) - start) / (time.perf_counter() - began))
        interval = mean_interval(watts)
        results[f"{length:g}s"] = {"mean_w": interval.mean, "ci95_half_width_pct": 100 * interval.relative_half_width}
    return results


def check_idle(gpu: Gpu, durations: Durations) -> dict:
    def power_series(seconds: float) -> tuple[list[float], list[float]]:
        times, watts, end = [], [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            start, began = counter_j(gpu), time.perf_counter()
            time.sleep(durations.power_reading_s)
            times.append(began)
            watts.append((counter_j(gpu) - start) / (time.perf_counter() - began))
        return times, watts

    _, rest = power_series(durations.rest_s)
    gpu.load(durations.idle_load_s)
    times, after = power_series(durations.after_load_s)
    rest_w = float(np.median(rest))
    return {
        "rest_w": rest_w,
        "first_second_after_load_w": after[0],
        "after_load_w": after,
        "settle_s": settle_time_s(times, after, rest_w),
    }


def check_models(gpu: Gpu, durations: Durations, time_left: Callable[[], float]) -> list[dict]:
    import torchvision

    import greencompress.runtimes.pytorch_cuda as gpu_runtime
    from greencompress.measure.benchmark import (
        BenchmarkSpec,
        benchmark_interleaved,
        measure_idle,
        window_duration_s,
    )
    from greencompress.runtimes.base import RunnerSettings

    idle = measure_idle(gpu.meter, durations.model_idle_s)
    models = {
        name: torchvision.models.get_model(name, weights=None, num_classes=classes).eval()
        for name, classes, _ in MODELS
    }
    variants = [p for p in PRECISIONS if gpu.bf16 or not p.startswith("bf16")]
    rows = []
    for batch in BATCH_SIZES:  # batch size first: with little time left, each size still has one model
        spec = BenchmarkSpec(
            batch_sizes=[batch],
            warmup_iterations=5,
            warmup_s=durations.model_warmup_s,
            window_s=durations.model_window_s,
            windows=durations.model_windows,
            max_windows=durations.model_windows,
            threads=1,
        )
        needs_s = durations.model_reserve_s + len(variants) * (
            durations.model_warmup_s + durations.model_windows * window_duration_s(spec, gpu.meter)
        )
        for name, _, size in MODELS:
            if time_left() < needs_s:
                rows.append(
                    {"model": name, "batch": batch, "skipped": f"out of the time budget (needs about {needs_s:.0f} s)"}
                )
                continue
            model = models[name]
            runners = {
                precision: gpu_runtime.TorchCudaRunner(
                    model,
                    RunnerSettings(
                        1, precision=precision.removesuffix("-compiled"), compile=precision.endswith("compiled")
                    ),
                )
                for precision in variants
            }
            inputs = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
            measured = benchmark_interleaved(runners, inputs, spec, gpu.meter, idle)
            fp32 = measured["fp32"]
            for precision, bench in measured.items():
                energy = paired_ratio_interval(
                    bench.energy.window_joules_per_inference, fp32.energy.window_joules_per_inference
                )
                latency = paired_ratio_interval(bench.latency.window_p50_ms, fp32.latency.window_p50_ms)
                rows.append(
                    {
                        "model": name,
                        "input": size,
                        "batch": batch,
                        "variant": precision,
                        "p50_ms": bench.latency.p50_ms,
                        "j_per_inference": bench.joules_per_inference,
                        "method": bench.energy.method,
                        "j_ratio": [energy.ratio, energy.low, energy.high] if energy else None,
                        "latency_ratio": [latency.ratio, latency.low, latency.high] if latency else None,
                        "telemetry_last_window": bench.energy.window_telemetry[-1]
                        if bench.energy.window_telemetry
                        else None,
                    }
                )
    return rows


def check_onnxruntime_gpu(work: Path) -> dict:
    """FP32 vs the FP16 export on ONNX Runtime's CUDA provider, and whether TensorRT takes the int8 graph whole.

    TensorRT's int8 needs symmetric activations (quantize.activation_type: int8); a graph it took whole
    shows as TensorRT engine nodes only in the profile, with no QuantizeLinear left on the CPU. The GPU
    machine here has ONNX Runtime's CPU build only: then this part says so and the rest runs.
    """
    import onnxruntime
    import torch
    import torchvision

    from greencompress.compress.quantize import QuantizeConfig, quantize_onnx
    from greencompress.runtimes.base import RunnerSettings
    from greencompress.runtimes.export import export_onnx
    from greencompress.runtimes.onnxruntime_gpu import (
        OnnxRuntimeGpuRunner,
        provider_unavailable,
    )

    result = {"onnxruntime": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}
    if reason := provider_unavailable("CUDAExecutionProvider"):
        return {**result, "skipped": reason}
    model = torchvision.models.get_model("resnet18", weights=None, num_classes=10).eval()
    fp32 = export_onnx(model, ModelInputs.image((3, 64, 64)), work / "resnet18.onnx", 18)
    inputs = np.random.default_rng(0).standard_normal((32, 3, 64, 64), dtype=np.float32)
    runners = {
        precision: OnnxRuntimeGpuRunner(fp32, RunnerSettings(1, precision=precision), "CUDAExecutionProvider")
        for precision in ("fp32", "fp16")
    }
    outputs = {precision: runner(inputs) for precision, runner in runners.items()}
    result["cuda_fp16_max_abs_diff_vs_fp32"] = float(np.abs(outputs["fp16"] - outputs["fp32"]).max())
    result["cuda_p50_ms"] = {precision: _p50_ms(runner.prepare(inputs)) for precision, runner in runners.items()}
    if reason := provider_unavailable("TensorrtExecutionProvider"):
        return {**result, "tensorrt": reason}
    int8 = work / "resnet18_int8_symmetric.onnx"
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(inputs), torch.zeros(len(inputs), dtype=torch.long))
    quantize_onnx(fp32, int8, QuantizeConfig(activation_type="int8", calibration_samples=32), dataset, 32)
    trt = OnnxRuntimeGpuRunner(int8, RunnerSettings(1), "TensorrtExecutionProvider")
    result["tensorrt_int8_placement"] = trt.placement(inputs)
    result["tensorrt_int8_whole_graph"] = set(result["tensorrt_int8_placement"]) == {"TensorrtExecutionProvider"}
    result["tensorrt_int8_top1_agreement_vs_fp32"] = float((trt(inputs).argmax(1) == outputs["fp32"].argmax(1)).mean())
    result["tensorrt_p50_ms"] = {
        "int8": _p50_ms(trt.prepare(inputs)),
        "fp16": _p50_ms(
            OnnxRuntimeGpuRunner(fp32, RunnerSettings(1, precision="fp16"), "TensorrtExecutionProvider").prepare(inputs)
        ),
    }
    return result


def _p50_ms(call, runs: int = 50) -> float:
    for _ in range(10):
        call()
    durations = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        durations.append(time.perf_counter() - started)
    return float(np.median(durations) * 1e3)


def check_power_limits(gpu: Gpu, durations: Durations) -> dict:
    """Energy per matmul at limits from the minimum to the default; the original limit restored even on Ctrl-C."""
    from greencompress.measure.energy.power_limits import gpu_power_limit

    nvml, handle = gpu.nvml, gpu.handle
    try:
        low, high = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        original = nvml.nvmlDeviceGetPowerManagementLimit(handle)
    except nvml.NVMLError as error:
        return {"skipped": f"power limits cannot be read: {error}"}
    results = []
    for milliwatts in sorted({int(low + (high - low) * share) for share in (0.0, 0.33, 0.66)} | {original}):
        with gpu_power_limit(nvml, handle, milliwatts / 1e3) as limit:
            if not limit.applied:
                return {"skipped": limit.reason, "current_limit_w": original / 1e3}
            start, began = counter_j(gpu), time.perf_counter()
            count = gpu.load(durations.limit_load_s)
            elapsed = time.perf_counter() - began
            results.append(
                {
                    "limit_w": milliwatts / 1e3,
                    "j_per_matmul": (counter_j(gpu) - start) / count,
                    "ms_per_matmul": 1e3 * elapsed / count,
                }
            )
    return {"limits": results, "restored_limit_w": nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1e3}


def markdown(report: dict) -> str:
    """The short table for docs/BENCHMARKS.md; a part that failed or was skipped says so in its place."""
    lines = [
        f"GPU: {report['gpu']}; energy meter: {report['meter']} (windows of at least "
        f"{report.get('meter_min_window_s')} s)",
        "",
    ]
    for name, render in (
        ("counter_vs_sampled", _counter_lines),
        ("window_lengths", _window_lines),
        ("idle", _idle_lines),
        ("models", _model_lines),
        ("power_limits", _limit_lines),
        ("onnxruntime_gpu", lambda part: [f"- ONNX Runtime on the GPU: {json.dumps(part)}"]),
    ):
        part = report.get(name)
        if part is None:
            lines.append(f"- {name}: not run")
        elif isinstance(part, dict) and ("failed" in part or "skipped" in part):
            lines.append(
                f"- {name}: {'failed' if 'failed' in part else 'skipped'}: {part.get('failed') or part.get('skipped')}"
            )
        else:
            try:
                lines += render(part)
            except (KeyError, TypeError, IndexError) as error:  # the JSON still holds the part as it came
                lines.append(f"- {name}: not rendered ({error!r}); see gpu_check.json")
    if "seconds" in report:
        lines += ["", f"Total: {report['seconds']:.0f} s"]
    return "\n".join(lines) + "\n"


STEADY_AGREEMENT = 0.05  # the goal: sampled power within 5% of the counter on a steady load
TARGET_HALF_WIDTH_PCT = 3.0  # the window length that reaches this 95% CI half-width is the one to use


def _counter_lines(part: dict) -> list[str]:
    lines = [
        f"- {name}: counter {value['counter_j']:.1f} J, sampled power {value['sampled_j']:.1f} J, "
        f"sampled/counter {value['sampled_over_counter']:.3f}"
        for name, value in part.items()
    ]
    steady = part["steady"]["sampled_over_counter"]
    verdict = "within" if abs(steady - 1) <= STEADY_AGREEMENT else "outside"
    return lines + [f"- steady load: sampled power {verdict} {STEADY_AGREEMENT:.0%} of the counter"]


def _window_lines(part: dict) -> list[str]:
    lengths = {name: value for name, value in part.items() if isinstance(value, dict)}
    lines = [f"- counter update period: {part.get('counter_update_period_s')} s"]
    lines += [
        f"- window {name}: power {v['mean_w']:.1f} W, 95% CI half-width {v['ci95_half_width_pct']:.2f}%"
        for name, v in lengths.items()
    ]
    enough = [name for name, v in lengths.items() if v["ci95_half_width_pct"] <= TARGET_HALF_WIDTH_PCT]
    return lines + [
        f"- shortest window with a half-width <= {TARGET_HALF_WIDTH_PCT:g}%: "
        f"{enough[0] if enough else 'none of those tried'}"
    ]


def _idle_lines(part: dict) -> list[str]:
    return [
        f"- idle at rest {part['rest_w']:.1f} W; first second after load "
        f"{part['first_second_after_load_w']:.1f} W; settled after {part['settle_s']} s"
    ]


def _model_lines(rows: list[dict]) -> list[str]:
    def ratio(r):
        return f"{r[0]:.2f}x [{r[1]:.2f}, {r[2]:.2f}]" if r else "-"

    lines = [
        "",
        "| model | input | batch | variant | p50 ms | J/inference | method | J ratio vs fp32 [95% CI] | "
        "latency ratio [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['model']} | | {row['batch']} | skipped: {row['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {row['model']} | {row['input']} | {row['batch']} | {row['variant']} | {row['p50_ms']:.3f} | "
            f"{row['j_per_inference']:.4g} | {row['method']} | {ratio(row['j_ratio'])} | "
            f"{ratio(row['latency_ratio'])} |"
        )
    return lines + [""]


def _limit_lines(part: dict) -> list[str]:
    lines = ["| power limit W | J per matmul | ms per matmul |", "|---|---|---|"]
    lines += [
        f"| {row['limit_w']:.0f} | {row['j_per_matmul']:.4g} | {row['ms_per_matmul']:.3f} |" for row in part["limits"]
    ]
    return lines + [f"- limit restored to {part['restored_limit_w']:.0f} W", ""]


def run_checks(gpu: Gpu, description: str, meter_reason: str, out: Path, budget_s: float, durations: Durations) -> dict:
    """Every part in turn, the JSON rewritten after each (a part that fails is written down, the rest still run)."""
    started = time.perf_counter()
    report = {
        "gpu": description,
        "meter": gpu.meter.method,
        "meter_reason": meter_reason,
        "meter_min_window_s": getattr(gpu.meter, "min_window_s", None),
    }  # what sets (d)'s window length
    parts = (
        ("counter_vs_sampled", lambda: check_counter_vs_sampled(gpu, durations)),
        ("window_lengths", lambda: check_window_lengths(gpu, durations)),
        ("idle", lambda: check_idle(gpu, durations)),
        ("power_limits", lambda: check_power_limits(gpu, durations)),
        # Last of the timed parts: it takes what the budget leaves, model by model.
        ("models", lambda: check_models(gpu, durations, lambda: budget_s - (time.perf_counter() - started))),
        ("onnxruntime_gpu", lambda: _in_temporary_folder(check_onnxruntime_gpu)),
    )
    for name, part in parts:
        print(f"gpu_check: {name} ({time.perf_counter() - started:.0f} s in)", file=sys.stderr, flush=True)
        try:
            report[name] = part()
        except Exception as error:  # one part failing must not lose the others: it is written down instead
            report[name] = {"failed": repr(error)}
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    report["seconds"] = time.perf_counter() - started
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    return report


def _in_temporary_folder(check: Callable[[Path], dict]) -> dict:
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as work:  # ONNX files stay off $OUT (8 files come back)
        return check(Path(work))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument(
        "--budget-s",
        type=float,
        default=420.0,
        help="seconds the check may take: a model check that would end later is skipped",
    )
    arguments = parser.parse_args(argv)
    import pynvml
    import torch

    from greencompress.core.errors import GreencompressError
    from greencompress.measure.energy import EnergySpec, select_meter
    from greencompress.runtimes.device import resolve_device

    try:
        device = resolve_device("cuda")
        meter, reason = select_meter(EnergySpec(), gpu_uuid=device.uuid)
    except GreencompressError as error:  # no GPU, driver or NVML here: nothing to check
        print(f"gpu_check: {error}", file=sys.stderr)
        return 2
    pynvml.nvmlInit()
    gpu = Gpu(
        pynvml,
        pynvml.nvmlDeviceGetHandleByUUID(device.uuid.encode()),
        MatmulLoad(torch),
        meter,
        torch.cuda.is_bf16_supported(),
    )
    driver = pynvml.nvmlSystemGetDriverVersion()
    description = f"{device.name} ({device.uuid}), driver {driver.decode() if isinstance(driver, bytes) else driver}"
    print(f"gpu_check: {description}; meter {meter.method} ({reason})", file=sys.stderr, flush=True)
    arguments.out.mkdir(parents=True, exist_ok=True)
    run_checks(gpu, description, reason, arguments.out, arguments.budget_s, DURATIONS)
    print((arguments.out / "gpu_check.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU checks in one command, for a machine lent with an NVIDIA GPU (about 7 minutes on one H100).

    python scripts/gpu_check.py --out $OUT          # writes gpu_check.json and gpu_check.md there

(a) NVML's energy counter against integrated sampled power, on a steady matrix-multiply load and on
    50 ms on/off pulses (sampled power is a ~1 s average on recent GPUs and misses pulses);
(b) the 95% interval half-width of power against window length (0.5, 1, 2, 5 s), and the counter's
    measured update period;
(c) idle power at rest, and how long it takes to settle back after load;
(d) the default recipe's architecture (ResNet-18, 10 classes, 64x64) and ResNet-50 at 224x224, random
    weights, batch 1, 32 and 256: FP32 vs FP16 vs BF16 (weights cast) vs FP32 compiled, J/inference by
    the NVML counter with paired intervals, and latency, side by side in interleaved windows;
(e) a GPU power-limit sweep of one model where NVML lets this process set limits (root), the limit
    restored afterwards even on Ctrl-C; where it may not, it says why;
(f) with onnxruntime-gpu: FP32 vs the FP16 export on the CUDA provider, and whether TensorRT runs
    the symmetric int8 graph whole (profiled node placement); without it, the reason.
Needs only what the GPU machine has: PyTorch with CUDA and nvidia-ml-py. Every part that cannot run
says why in the output instead of stopping the rest.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from greencompress.measure.stats import mean_interval, paired_ratio_interval  # noqa: E402

WINDOW_LENGTHS_S = (0.5, 1.0, 2.0, 5.0)
BATCH_SIZES = (1, 32, 256)
PRECISIONS = ("fp32", "fp16", "bf16", "fp32-compiled")


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


def load(torch, seconds: float, pulse_s: float | None = None) -> None:
    """A matrix-multiply load for `seconds`; with `pulse_s`, on for pulse_s then idle for pulse_s, repeatedly."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        burst_end = time.perf_counter() + (pulse_s or seconds)
        while time.perf_counter() < burst_end:
            a @ a
            torch.cuda.synchronize()
        if pulse_s:
            time.sleep(pulse_s)


def counter_j(nvml, handle) -> float:
    return nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3


def check_counter_vs_sampled(torch, nvml, handle, seconds: float) -> dict:
    results = {}
    for name, pulse in (("steady", None), ("pulses_50ms", 0.05)):
        start = counter_j(nvml, handle)
        with PowerSampler(nvml, handle) as sampler:
            load(torch, seconds, pulse)
        counted = counter_j(nvml, handle) - start
        results[name] = {"counter_j": counted, "sampled_j": sampler.joules,
                         "sampled_over_counter": counter_vs_sampled(counted, sampler.joules)}
    return results


def check_window_lengths(torch, nvml, handle, windows: int = 6) -> dict:
    from greencompress.measure.energy.nvml import counter_update_period_s

    results = {"counter_update_period_s": counter_update_period_s(nvml, handle, duration_s=1.0)}
    for length in WINDOW_LENGTHS_S:
        watts = []
        for _ in range(windows):
            start, began = counter_j(nvml, handle), time.perf_counter()
            load(torch, length)
            watts.append((counter_j(nvml, handle) - start) / (time.perf_counter() - began))
        interval = mean_interval(watts)
        results[f"{length:g}s"] = {"mean_w": interval.mean, "ci95_half_width_pct": 100 * interval.relative_half_width}
    return results


def check_idle(torch, nvml, handle, rest_s: float = 10.0, after_s: float = 40.0) -> dict:
    def power_series(seconds: float) -> tuple[list[float], list[float]]:
        times, watts, end = [], [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            start, began = counter_j(nvml, handle), time.perf_counter()
            time.sleep(1.0)
            times.append(began)
            watts.append((counter_j(nvml, handle) - start) / (time.perf_counter() - began))
        return times, watts

    _, rest = power_series(rest_s)
    load(torch, 15.0)
    times, after = power_series(after_s)
    rest_w = float(np.median(rest))
    return {"rest_w": rest_w, "first_second_after_load_w": after[0], "after_load_w": after,
            "settle_s": settle_time_s(times, after, rest_w)}


def check_models(torch, meter, time_left) -> list[dict]:
    import torchvision

    from greencompress.gpu_runtime import TorchCudaRunner
    from greencompress.measure.benchmark import (
        BenchmarkSpec,
        benchmark_interleaved,
        measure_idle,
    )
    from greencompress.runtime import RunnerSettings

    idle = measure_idle(meter, 3.0)
    rows = []
    for name, classes, size in (("resnet18", 10, 64), ("resnet50", 1000, 224)):
        model = torchvision.models.get_model(name, weights=None, num_classes=classes).eval()
        for batch in BATCH_SIZES:
            if time_left() < 60:
                rows.append({"model": name, "batch": batch, "skipped": "out of the time budget"})
                continue
            runners = {}
            for precision in PRECISIONS:
                base = precision.removesuffix("-compiled")
                if base == "bf16" and not torch.cuda.is_bf16_supported():
                    continue
                runners[precision] = TorchCudaRunner(model, RunnerSettings(1, precision=base,
                                                                           compile=precision.endswith("compiled")))
            spec = BenchmarkSpec(batch_sizes=[batch], warmup_iterations=5, warmup_s=2.0, window_s=1.0, windows=5,
                                 max_windows=5, threads=1)
            inputs = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
            measured = benchmark_interleaved(runners, inputs, spec, meter, idle)
            fp32 = measured["fp32"]
            for precision, bench in measured.items():
                energy = paired_ratio_interval(bench.energy.window_joules_per_inference,
                                               fp32.energy.window_joules_per_inference)
                latency = paired_ratio_interval(bench.latency.window_p50_ms, fp32.latency.window_p50_ms)
                rows.append({"model": name, "input": size, "batch": batch, "variant": precision,
                             "p50_ms": bench.latency.p50_ms, "j_per_inference": bench.joules_per_inference,
                             "method": bench.energy.method,
                             "j_ratio": [energy.ratio, energy.low, energy.high] if energy else None,
                             "latency_ratio": [latency.ratio, latency.low, latency.high] if latency else None,
                             "telemetry_last_window": bench.energy.window_telemetry[-1] if bench.energy.window_telemetry
                             else None})
    return rows


def check_onnxruntime_gpu(torch, work: Path) -> dict:
    """FP32 vs the FP16 export on ONNX Runtime's CUDA provider, and whether TensorRT takes the int8 graph whole.

    TensorRT's int8 needs symmetric activations (quantize.activation_type: int8); a graph it took whole
    shows as TensorRT engine nodes only in the profile, with no QuantizeLinear left on the CPU. The GPU
    machine here has ONNX Runtime's CPU build only: then this part says so and the rest runs.
    """
    import onnxruntime
    import torchvision

    from greencompress.compress.quantize import QuantizeConfig, quantize_onnx
    from greencompress.export import export_onnx
    from greencompress.gpu_runtime import OnnxRuntimeGpuRunner, provider_unavailable
    from greencompress.runtime import RunnerSettings

    result = {"onnxruntime": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}
    if reason := provider_unavailable("CUDAExecutionProvider"):
        return {**result, "skipped": reason}
    model = torchvision.models.get_model("resnet18", weights=None, num_classes=10).eval()
    fp32 = export_onnx(model, (3, 64, 64), work / "resnet18.onnx", 18)
    inputs = np.random.default_rng(0).standard_normal((32, 3, 64, 64), dtype=np.float32)
    runners = {precision: OnnxRuntimeGpuRunner(fp32, RunnerSettings(1, precision=precision), "CUDAExecutionProvider")
               for precision in ("fp32", "fp16")}
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
    result["tensorrt_p50_ms"] = {"int8": _p50_ms(trt.prepare(inputs)), "fp16": _p50_ms(
        OnnxRuntimeGpuRunner(fp32, RunnerSettings(1, precision="fp16"), "TensorrtExecutionProvider").prepare(inputs))}
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


def check_power_limits(torch, nvml, handle, seconds_each: float = 8.0) -> dict:
    """Energy per matmul at each power limit from the minimum to the default; the default limit always restored."""
    try:
        low, high = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
        original = nvml.nvmlDeviceGetPowerManagementLimit(handle)
    except nvml.NVMLError as error:
        return {"skipped": f"power limits cannot be read: {error}"}
    limits = sorted({int(low + (high - low) * share) for share in (0.0, 0.33, 0.66)} | {original})
    results = []
    try:
        for limit in limits:
            try:
                nvml.nvmlDeviceSetPowerManagementLimit(handle, limit)
            except nvml.NVMLError as error:
                return {"skipped": f"setting a power limit was refused ({error}): measured at the current limit only",
                        "current_limit_w": original / 1e3}
            a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
            start, began, count = counter_j(nvml, handle), time.perf_counter(), 0
            while time.perf_counter() - began < seconds_each:
                a @ a
                count += 1
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - began
            results.append({"limit_w": limit / 1e3, "j_per_matmul": (counter_j(nvml, handle) - start) / count,
                            "ms_per_matmul": 1e3 * elapsed / count})
    finally:
        nvml.nvmlDeviceSetPowerManagementLimit(handle, original)
    return {"limits": results, "restored_limit_w": original / 1e3}


def markdown(report: dict) -> str:
    lines = [f"GPU: {report['gpu']}", ""]
    for name, value in report["counter_vs_sampled"].items():
        lines.append(f"- {name}: counter {value['counter_j']:.1f} J, sampled power {value['sampled_j']:.1f} J, "
                     f"sampled/counter {value['sampled_over_counter']:.3f}")
    windows = report["window_lengths"]
    lines.append(f"- counter update period: {windows.get('counter_update_period_s')} s")
    lines += [f"- window {length}: power {v['mean_w']:.1f} W, 95% CI half-width {v['ci95_half_width_pct']:.2f}%"
              for length, v in windows.items() if isinstance(v, dict)]
    idle = report["idle"]
    lines.append(f"- idle at rest {idle['rest_w']:.1f} W; first second after load {idle['first_second_after_load_w']:.1f} W; "
                 f"settled after {idle['settle_s']} s")
    lines += ["", "| model | input | batch | variant | p50 ms | J/inf (nvml-counter) | J ratio vs fp32 [95% CI] | "
              "latency ratio [95% CI] |", "|---|---|---|---|---|---|---|---|"]
    for row in report["models"]:
        if "skipped" in row:
            lines.append(f"| {row['model']} | | {row['batch']} | skipped: {row['skipped']} | | | | |")
            continue
        ratio = lambda r: f"{r[0]:.2f}x [{r[1]:.2f}, {r[2]:.2f}]" if r else "-"  # noqa: E731
        lines.append(f"| {row['model']} | {row['input']} | {row['batch']} | {row['variant']} | {row['p50_ms']:.3f} | "
                     f"{row['j_per_inference']:.4g} | {ratio(row['j_ratio'])} | {ratio(row['latency_ratio'])} |")
    lines += ["", f"Power limits: {json.dumps(report['power_limits'])}",
              f"ONNX Runtime on the GPU: {json.dumps(report.get('onnxruntime_gpu'))}", f"Total: {report['seconds']:.0f} s"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting model checks past this")
    arguments = parser.parse_args()
    started = time.perf_counter()
    import pynvml
    import torch

    from greencompress.device import resolve_device
    from greencompress.measure.energy import EnergySpec, select_meter

    device = resolve_device("cuda")
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByUUID(device.uuid.encode())
    meter, reason = select_meter(EnergySpec(), gpu_uuid=device.uuid)
    report = {"gpu": f"{device.name} ({device.uuid}), driver {pynvml.nvmlSystemGetDriverVersion()}",
              "meter": meter.method, "meter_reason": reason}
    parts = (("counter_vs_sampled", lambda: check_counter_vs_sampled(torch, pynvml, handle, 10.0)),
             ("window_lengths", lambda: check_window_lengths(torch, pynvml, handle)),
             ("idle", lambda: check_idle(torch, pynvml, handle)),
             ("models", lambda: check_models(torch, meter, lambda: arguments.budget_s - (time.perf_counter() - started))),
             ("power_limits", lambda: check_power_limits(torch, pynvml, handle)),
             ("onnxruntime_gpu", lambda: check_onnxruntime_gpu(torch, arguments.out)))
    for name, part in parts:
        print(f"gpu_check: {name}", file=sys.stderr, flush=True)
        try:
            report[name] = part()
        except Exception as error:  # one part failing must not lose the others: it is written down instead
            report[name] = {"failed": repr(error)}
        (arguments.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    report["seconds"] = time.perf_counter() - started
    (arguments.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    try:
        text = markdown(report)
    except (KeyError, TypeError) as error:  # a failed part has no table: the JSON holds what there is
        text = f"(table not rendered: {error!r}; see gpu_check.json)\n"
    (arguments.out / "gpu_check.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

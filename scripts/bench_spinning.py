"""ONNX Runtime with spin-waiting workers vs sleeping ones: latency and CPU time, paired, quiet and busy.

    python scripts/bench_spinning.py [--run-dir RUN]   # the default recipe's exported files unless RUN is given

Spin-waiting keeps idle intra-op workers polling for the next task. On a quiet machine that can
shave wake-up latency; on a busy one a worker spins while its sibling is descheduled, burning CPU
time (energy, and the estimate meter's figure) for nothing. Each file is measured with spinning on
and off in the same interleaved rounds, first alone, then beside a process spinning on one core;
ratios are off / on with paired 95% intervals.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from greencompress.core.hardware import cpu_info
from greencompress.measure.benchmark import (
    BenchmarkSpec,
    benchmark_interleaved,
    measure_idle,
)
from greencompress.measure.energy.estimate import EstimateMeter
from greencompress.measure.stats import paired_ratio_interval
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neighbour import busy_neighbour  # noqa: E402


def default_run_dir() -> Path:
    """Export and quantize the default recipe (cached after the first time) and return its run folder."""
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.folder import create_run_dir
    from greencompress.pipeline.recipe import load_recipe

    recipe = load_recipe(
        Path(__file__).resolve().parents[1] / "recipes" / "resnet_int8.yaml",
        [
            "benchmark.batch_sizes=[1]",
            "benchmark.windows=2",
            "benchmark.max_windows=2",
            "benchmark.window_s=0.2",
            "energy.idle_s=0",
        ],
    )
    run_dir = create_run_dir(recipe, Path("runs") / "bench_spinning")
    run(recipe, run_dir)
    return run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="a run folder holding model_fp32.onnx and model_int8.onnx")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", default="1,8")
    arguments = parser.parse_args()
    run_dir = arguments.run_dir or default_run_dir()
    spec = BenchmarkSpec(windows=8, max_windows=8, window_s=1.0, threads=arguments.threads)
    meter = EstimateMeter()
    idle = measure_idle(meter, 1.0)
    cpu = cpu_info()
    print(
        f"{cpu.model}, flags {' '.join(cpu.flags)}, {arguments.threads} threads; ratios spinning off / on, "
        f"paired 95% CI over {spec.windows} rounds"
    )
    print("| machine | file | batch | p50 ms on | p50 ms off | p50 off/on | CPU s per inference off/on |")
    print("|---|---|---|---|---|---|---|")
    for machine in ("quiet", "one core busy"):
        with busy_neighbour(cores=1 if machine != "quiet" else 0):
            for file in ("model_fp32.onnx", "model_int8.onnx"):
                runners = {
                    spin: OnnxRuntimeRunner(run_dir / file, arguments.threads, allow_spinning=spin)
                    for spin in (True, False)
                }
                for batch_size in (int(size) for size in arguments.batch_sizes.split(",")):
                    inputs = np.random.default_rng(0).standard_normal((batch_size, 3, 64, 64), dtype=np.float32)
                    result = benchmark_interleaved(runners, inputs, spec, meter, idle)
                    on, off = result[True], result[False]
                    latency = paired_ratio_interval(off.latency.window_p50_ms, on.latency.window_p50_ms)
                    cpu_time = paired_ratio_interval(
                        off.energy.window_joules_per_inference, on.energy.window_joules_per_inference
                    )
                    print(
                        f"| {machine} | {file} | {batch_size} | {on.latency.p50_ms:.3f} | {off.latency.p50_ms:.3f} "
                        f"| {_cell(latency)} | {_cell(cpu_time)} |",
                        flush=True,
                    )


def _cell(interval) -> str:
    text = f"{interval.ratio:.2f}x [{interval.low:.2f}, {interval.high:.2f}]"
    return text + (" within noise" if interval.within_noise else "")


if __name__ == "__main__":
    main()

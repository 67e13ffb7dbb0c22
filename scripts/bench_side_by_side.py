"""Two finished runs' models measured again side by side, in one process, on each runtime: paired ratios.

    python scripts/bench_side_by_side.py RUN_A RUN_B [--batch-sizes 1,8] [--runtimes onnxruntime,openvino]

Each run's candidate is its most compressed ONNX file (or name one: RUN:ARTIFACT, an artifact name from
its report.json). Both files run in the same interleaved windows on the same runtime and batch size,
so drift touches both alike; the ratio B / A of J/inference and latency p50 comes with a paired 95%
interval. Accuracy is read from each run's report (the same evaluation split when the recipes share
their data section, which is checked).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from greencompress.core.hardware import cpu_info  # noqa: E402
from greencompress.measure.benchmark import (  # noqa: E402
    BenchmarkSpec,
    benchmark_interleaved,
    measure_idle,
)
from greencompress.measure.energy import EnergySpec, select_meter  # noqa: E402
from greencompress.measure.lock import measurement_lock  # noqa: E402
from greencompress.measure.stats import paired_ratio_interval  # noqa: E402
from greencompress.runtimes import RUNTIMES  # noqa: E402


def candidate(argument: str) -> tuple[str, dict, dict]:
    """(label, artifact entry, report) of RUN or RUN:ARTIFACT."""
    folder, _, name = argument.partition(":")
    report = json.loads((Path(folder) / "report.json").read_text())
    files = [
        a for a in report["artifacts"] if a["path"] and a["path"].endswith(".onnx") and a["runtime"] == "onnxruntime"
    ]
    chosen = (
        next(a for a in files if a["name"] == name)
        if name
        else max(files, key=lambda a: (len(a.get("model_techniques", [])), a["precision"] != "fp32"))
    )
    return report["name"], chosen, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a")
    parser.add_argument("run_b")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--runtimes", default="onnxruntime,openvino")
    arguments = parser.parse_args()
    (name_a, artifact_a, report_a), (name_b, artifact_b, report_b) = map(candidate, (arguments.run_a, arguments.run_b))
    if report_a["recipe"]["data"] != report_b["recipe"]["data"]:
        print("warning: the two runs' data sections differ; their accuracies are not comparable", file=sys.stderr)
    spec = BenchmarkSpec(windows=8, max_windows=12, window_s=1.0)
    meter, reason = select_meter(EnergySpec())
    cpu = cpu_info()
    print(
        f"CPU: {cpu.model}; flags: {', '.join(cpu.flags)}; {spec.threads} threads; energy: {meter.method} "
        f"({'measured' if meter.describe().measured else 'an ESTIMATE'}: {reason})\n"
    )
    print(
        f"A = {name_a}: {artifact_a['name']} ({Path(artifact_a['path']).name}), top-1 "
        f"{100 * artifact_a['accuracy']['top1']:.2f}%, MACs {artifact_a['macs'] / 1e6:.1f} M"
    )
    print(
        f"B = {name_b}: {artifact_b['name']} ({Path(artifact_b['path']).name}), top-1 "
        f"{100 * artifact_b['accuracy']['top1']:.2f}%, MACs {artifact_b['macs'] / 1e6:.1f} M\n"
    )
    print("| runtime | batch | A J/inf | B J/inf | B/A J/inf [95% CI] | A p50 ms | B p50 ms | B/A latency [95% CI] |")
    print("|---|---|---|---|---|---|---|---|")
    shape = tuple(report_a["recipe"]["data"].get("image_size", 32) for _ in range(2))
    with measurement_lock("side-by-side benchmark"):
        idle = measure_idle(meter, 3.0)
        for runtime in arguments.runtimes.split(","):
            runtime_spec = RUNTIMES.get(runtime)
            if reason := runtime_spec.unavailable():
                print(f"| {runtime} | skipped: {reason} |")
                continue
            runners = {
                key: runtime_spec.runner(Path(artifact["path"]), spec.runner_settings)
                for key, artifact in (("A", artifact_a), ("B", artifact_b))
            }
            for batch in map(int, arguments.batch_sizes.split(",")):
                inputs = np.random.default_rng(0).standard_normal((batch, 3, *shape), dtype=np.float32)
                measured = benchmark_interleaved(runners, inputs, spec, meter, idle)
                a, b = measured["A"], measured["B"]
                energy = paired_ratio_interval(
                    b.energy.window_joules_per_inference, a.energy.window_joules_per_inference
                )
                latency = paired_ratio_interval(b.latency.window_p50_ms, a.latency.window_p50_ms)
                print(
                    f"| {runtime} | {batch} | {a.joules_per_inference:.4g} | {b.joules_per_inference:.4g} | "
                    f"{energy.ratio:.3f}x [{energy.low:.3f}, {energy.high:.3f}] | {a.latency.p50_ms:.3f} | "
                    f"{b.latency.p50_ms:.3f} | {latency.ratio:.3f}x [{latency.low:.3f}, {latency.high:.3f}] |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The default recipe run twice back to back: alone, then beside a process that keeps one core busy.

    python scripts/bench_busy_machine.py [--output runs/busy-machine]

Shows what a shared machine does to the figures and whether the report notices: each run's busy
windows (other processes' share of the CPUs, from /proc/stat) and its int8/FP32 ratios with their
paired 95% intervals, and whether the busy run's intervals overlap the quiet run's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from greencompress.core.hardware import cpu_info
from greencompress.pipeline.execute import run
from greencompress.pipeline.folder import create_run_dir
from greencompress.pipeline.recipe import load_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neighbour import busy_neighbour  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "resnet_int8.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs") / "busy-machine")
    arguments = parser.parse_args()
    recipe = load_recipe(RECIPE)
    reports = {}
    for label, cores in (("quiet", 0), ("one core busy", 1)):
        print(f"{label}: running {RECIPE.name}", file=sys.stderr, flush=True)
        with busy_neighbour(cores):
            reports[label] = run(recipe, create_run_dir(recipe, arguments.output / label.replace(" ", "-")))
    cpu = cpu_info()
    print(
        f"{cpu.model} ({cpu.logical_cores} logical CPUs; flags {' '.join(cpu.flags)}), "
        f"{recipe.benchmark.threads} threads, energy: {reports['quiet'].energy_meter.method}\n"
    )
    print("| run | busy windows (max other share) | batch | int8/fp32 p50 [95% CI] | int8/fp32 J/inf [95% CI] |")
    print("|---|---|---|---|---|")
    for label, report in reports.items():
        busy, windows, worst = report.busy_windows
        for c in report.comparisons:
            print(
                f"| {label} | {busy}/{windows} ({100 * worst:.0f}%) | {c.batch_size} | {_cell(c.latency_p50)} "
                f"| {_cell(c.joules_per_inference)} |"
            )
    print()
    for quiet, busy in zip(reports["quiet"].comparisons, reports["one core busy"].comparisons):
        for metric in ("latency_p50", "joules_per_inference"):
            a, b = getattr(quiet, metric), getattr(busy, metric)
            overlap = a.low <= b.high and b.low <= a.high
            print(
                f"- batch {quiet.batch_size}, {metric}: intervals {'overlap' if overlap else 'DO NOT overlap'} "
                f"(quiet {_cell(a)}, busy {_cell(b)})"
            )
    for label, report in reports.items():
        print(f"\n{label} run folder: {report.run_dir}")


def _cell(interval) -> str:
    return f"{interval.ratio:.2f}x [{interval.low:.2f}, {interval.high:.2f}]"


if __name__ == "__main__":
    main()

"""`greencompress compare`: several runs side by side, with deltas against the first.

Figures are only compared when they were measured on the same hardware, thread count, runtime,
batch size and energy method; otherwise compare refuses, unless forced, and then marks each row.
"""

from __future__ import annotations

from dataclasses import dataclass

from greencompress.core.errors import GreencompressError
from greencompress.measure.environment import hardware_name
from greencompress.measure.latency import shape_label, shape_words
from greencompress.measure.stats import unpaired_ratio_interval
from greencompress.report.schema import RunReport


@dataclass(frozen=True)
class RunComparison:
    """Rows of a comparison table, the differences found between the runs, and whether they were forced."""

    headers: list[str]
    rows: list[list[str]]
    mismatches: list[str]


def setting_mismatches(first: RunReport, other: RunReport) -> list[str]:
    """What differs between two runs in a way that makes their figures incomparable."""
    differences = []
    settings = {
        "hardware": lambda r: hardware_name(r.environment),
        "threads": lambda r: str(r.environment["threads"]),
        "energy method": lambda r: r.energy_meter.method,
    }
    for name, read in settings.items():
        if read(first) != read(other):
            differences.append(f"{other.run_dir}: {name} {read(other)!r} differs from {first.run_dir}: {read(first)!r}")
    return differences


def compare_runs(reports: list[RunReport], force: bool = False) -> RunComparison:
    """Each run's artifacts against the first run's artifact with the same runtime, precision and batch size."""
    if len(reports) < 2:
        raise GreencompressError("compare needs at least two run folders")
    first = reports[0]
    mismatches = [m for report in reports[1:] for m in setting_mismatches(first, report)]
    reference = {
        (r.artifact.runtime, r.artifact.precision, b.latency.shape): (r, b)
        for r in first.artifacts
        for b in r.benchmarks
    }
    headers = [
        "run",
        "artifact",
        "batch",
        "top-1",
        "Δ top-1",
        "p50 ms",
        "Δ p50 [95% CI]",
        "J/inf",
        "Δ J/inf [95% CI]",
        "method",
        "mark",
    ]
    rows = []
    unmatched = []
    for index, report in enumerate(reports):
        mark = "" if index == 0 or not setting_mismatches(first, report) else "FORCED: different settings"
        for result in report.artifacts:
            for bench in result.benchmarks:
                key = (result.artifact.runtime, result.artifact.precision, bench.latency.shape)
                base = reference.get(key)
                if base is None:
                    unmatched.append(
                        f"{report.run_dir}: {result.artifact.name} at {shape_words(*bench.latency.shape)} "
                        f"has no counterpart (runtime, precision, batch size, sequence length) in "
                        f"{first.run_dir}"
                    )
                    continue
                base_result, base_bench = base
                rows.append(
                    [
                        f"#{index + 1} {report.name}",
                        result.artifact.name,
                        shape_label(*bench.latency.shape),
                        f"{100 * result.accuracy.top1:.2f}%" if result.accuracy else "n/a",
                        _delta_points(result.accuracy, base_result.accuracy) if index else "",
                        f"{bench.latency.p50_ms:.3f}",
                        _delta(
                            bench.latency.p50_ms,
                            base_bench.latency.p50_ms,
                            bench.latency.window_p50_ms,
                            base_bench.latency.window_p50_ms,
                        )
                        if index
                        else "",
                        f"{bench.joules_per_inference:.4g} ±{100 * bench.energy.relative_ci95:.0f}%",
                        _delta(
                            bench.joules_per_inference,
                            base_bench.joules_per_inference,
                            bench.energy.window_joules_per_inference,
                            base_bench.energy.window_joules_per_inference,
                        )
                        if index
                        else "",
                        bench.energy.method,
                        mark,
                    ]
                )
    if (mismatches or unmatched) and not force:
        raise GreencompressError(
            "refusing to compare runs measured differently (use --force to compare anyway, "
            "rows are then marked):\n  " + "\n  ".join(mismatches + unmatched)
        )
    return RunComparison(headers, rows, mismatches + unmatched)


def _delta_points(accuracy, base) -> str:
    return f"{100 * (accuracy.top1 - base.top1):+.2f} pt" if accuracy and base else "n/a"


def _delta(value: float, base: float, windows, base_windows) -> str:
    """`-12.3% [-15.0%, -9.4%]` from the two runs' windows (unpaired: they ran at different times), or the bare
    change where a run has no per-window figures (reports before schema 1.2 kept latency windows only)."""
    interval = unpaired_ratio_interval(windows, base_windows) if len(windows) and len(base_windows) else None
    if interval is None:
        return f"{100 * (value / base - 1):+.1f}% (no interval)"
    text = f"{100 * (interval.ratio - 1):+.1f}% [{100 * (interval.low - 1):+.1f}%, {100 * (interval.high - 1):+.1f}%]"
    return text + (" within noise" if interval.within_noise else "")


def render_comparison(comparison: RunComparison, output_format: str) -> str:
    """The comparison as a markdown table or a small self-contained HTML page."""
    from html import escape

    from greencompress.report.html import html_table
    from greencompress.report.markdown import markdown_table

    table = (comparison.headers, comparison.rows)
    if output_format == "markdown":
        lines = markdown_table(table) + [f"\n- **Forced:** {mismatch}" for mismatch in comparison.mismatches]
        return "\n".join(lines)
    notes = "".join(f"<p><b>Forced:</b> {escape(m)}</p>" for m in comparison.mismatches)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>greencompress compare</title></head>'
        f"<body><h1>Runs compared with the first</h1>{html_table(*table)}{notes}</body></html>"
    )

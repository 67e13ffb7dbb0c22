"""Plots for report.html, as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

from greencompress.report.pareto import non_dominated
from greencompress.report.schema import RunReport

_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]


def new_figure(width: float = 6.4, height: float = 3.6):
    """A figure and its axes for a report's plot (search.html draws its front with these too)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never try to open a window
    from matplotlib import pyplot

    return pyplot.subplots(figsize=(width, height), dpi=100)


def png_bytes(figure) -> bytes:
    """The figure as PNG bytes, for embedding; the figure is closed."""
    from matplotlib import pyplot

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    return buffer.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (energy, accuracy) no other point dominates, by increasing energy; equal points kept once."""
    kept = non_dominated(points, ("minimize", "maximize"))
    return sorted({tuple(points[index]) for index in kept})


def domain_bars(report: RunReport, batch_size: int) -> dict[str, dict[str, float]]:
    """Joules per inference by domain for each artifact at one batch size: each adds up to the table's figure."""
    return {r.artifact.name: dict(r.at_batch(batch_size).energy.joules_per_inference_by_domain)
            for r in report.artifacts if r.at_batch(batch_size)}


def accuracy_vs_energy(report: RunReport, batch_size: int) -> bytes | None:
    """Top-1 against joules per inference at one batch size, the Pareto front drawn; None without accuracy."""
    points = []
    for result in report.artifacts:
        bench = result.at_batch(batch_size)
        if result.accuracy and bench:
            points.append((result.artifact.name, bench.joules_per_inference, 100 * result.accuracy.top1, bench.energy))
    if not points:
        return None
    figure, axes = new_figure()
    for index, (name, joules, top1, energy) in enumerate(points):
        axes.errorbar(joules, top1, xerr=energy.ci95_j, fmt="o", color=_COLORS[index % len(_COLORS)], label=name)
    front = pareto_front([(joules, top1) for _, joules, top1, _ in points])
    # A staircase through the non-dominated points only: up to the next point's accuracy at its energy.
    axes.step(*zip(*front), where="post", linestyle="--", color="grey", linewidth=1, label="Pareto front")
    axes.plot(*zip(*front), "o", markersize=12, markerfacecolor="none", color="grey")
    axes.set_xlabel(f"J per inference (batch {batch_size}, {report.energy_meter.method})")
    axes.set_ylabel("top-1 accuracy (%)")
    axes.legend(fontsize=8)
    return png_bytes(figure)


def latency_distribution(report: RunReport) -> bytes | None:
    """Box plots of per-batch latency (whiskers p1-p99) for each artifact and batch size; None without percentiles."""
    stats, labels = [], []
    for result in report.artifacts:
        for bench in result.benchmarks:
            q = bench.latency.percentiles_ms
            if len(q) == 101:
                stats.append({"whislo": q[1], "q1": q[25], "med": q[50], "q3": q[75], "whishi": q[99], "fliers": []})
                labels.append(f"{result.artifact.name}\nbatch {bench.latency.batch_size}")
    if not stats:
        return None
    figure, axes = new_figure(width=max(6.4, 1.1 * len(stats)))
    axes.bxp(stats, showfliers=False)
    axes.set_xticks(range(1, len(labels) + 1), labels, fontsize=7)
    axes.set_ylabel("latency per batch (ms)")
    axes.set_yscale("log")
    return png_bytes(figure)


def energy_by_domain(report: RunReport, batch_size: int) -> bytes:
    """Stacked bars of joules per inference by domain (cpu, dram, gpu...) at one batch size."""
    figure, axes = new_figure()
    bars = domain_bars(report, batch_size)
    names = list(bars)
    domains = sorted({domain for by_domain in bars.values() for domain in by_domain})
    bottoms = [0.0] * len(names)
    for index, domain in enumerate(domains):
        values = [bars[name].get(domain, 0.0) for name in names]
        axes.bar(names, values, bottom=bottoms, color=_COLORS[index % len(_COLORS)], label=domain)
        bottoms = [b + v for b, v in zip(bottoms, values)]
    axes.set_ylabel(f"J per inference (batch {batch_size}, {report.energy_meter.method})")
    axes.tick_params(axis="x", labelsize=8)
    axes.legend(fontsize=8)
    return png_bytes(figure)


def power_timeline(report: RunReport) -> bytes | None:
    """Mean power of every benchmark window over time, one colour per artifact; None for an estimate."""
    if not report.energy_meter.measured:
        return None
    windows = [(result.artifact.name, start, duration, joules)
               for result in report.artifacts for bench in result.benchmarks
               for start, duration, joules in bench.energy.timeline]
    if not windows:
        return None
    origin = min(start for _, start, _, _ in windows)
    figure, axes = new_figure(width=8)
    colors = {name: _COLORS[i % len(_COLORS)] for i, name in enumerate(dict.fromkeys(w[0] for w in windows))}
    for name, start, duration, joules in windows:
        axes.hlines(joules / duration, start - origin, start - origin + duration, color=colors[name], linewidth=3)
    for name, color in colors.items():
        axes.plot([], [], color=color, linewidth=3, label=name)
    axes.axhline(report.idle.total_w, color="grey", linestyle=":", label="idle")
    axes.set_xlabel("time since the first window (s)")
    axes.set_ylabel(f"mean power per window (W, {report.energy_meter.method})")
    axes.legend(fontsize=8)
    return png_bytes(figure)

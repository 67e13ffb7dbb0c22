"""Plots for report.html, as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io

from greencompress.measure.latency import shape_words
from greencompress.report.pareto import non_dominated
from greencompress.report.schema import RunReport

_COLORS = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"]  # energy domains (few)
_MARKERS = "osD^vP*Xh<>p"
_ROW_INCHES = 0.32  # per bar or box in the horizontal plots: room for an 8-point label with no overlap


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
    figure.savefig(buffer, format="png", bbox_inches="tight")
    pyplot.close(figure)
    return buffer.getvalue()


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (energy, accuracy) no other point dominates, by increasing energy; equal points kept once."""
    kept = non_dominated(points, ("minimize", "maximize"))
    return sorted({tuple(points[index]) for index in kept})


def artifact_styles(names: list[str]) -> dict[str, tuple[str, str]]:
    """A colour and a marker for each name, no two names alike: 20 colours (tab20), then the markers vary too."""
    from matplotlib import colormaps

    palette = [colormaps["tab20"](index) for index in range(20)]
    # Ordered so that neighbours differ: the dark shade of each tab20 pair first, then the light ones.
    palette = palette[0::2] + palette[1::2]
    return {
        name: (palette[index % 20], _MARKERS[(index // 20 + index) % len(_MARKERS)]) for index, name in enumerate(names)
    }


def _rows_height(rows: int, minimum: float = 3.6) -> float:
    return max(minimum, _ROW_INCHES * rows + 1.2)


def domain_bars(report: RunReport, batch_size: int, sequence_length: int | None = None) -> dict[str, dict[str, float]]:
    """Joules per inference by domain for each artifact at one batch size: each adds up to the table's figure."""
    return {
        r.artifact.name: dict(r.at_batch(batch_size, sequence_length).energy.joules_per_inference_by_domain)
        for r in report.artifacts
        if r.at_batch(batch_size, sequence_length)
    }


LOG_SPAN = 10  # an axis whose values span more than this factor is drawn on a log scale


def accuracy_range(top1_percent: list[float]) -> tuple[float, float]:
    """The accuracy axis: the data's range with a margin, never below 0% or above 100%."""
    low, high = min(top1_percent), max(top1_percent)
    margin = max(0.5, 0.1 * (high - low))
    return max(0.0, low - margin), min(100.0, high + margin)


def accuracy_vs_energy_figure(report: RunReport, batch_size: int, sequence_length: int | None = None):
    """Top-1 against joules per inference at one batch size, the Pareto front drawn; None without accuracy."""
    points = []
    for result in report.artifacts:
        bench = result.at_batch(batch_size, sequence_length)
        if result.accuracy and bench:
            points.append((result.artifact.name, bench.joules_per_inference, 100 * result.accuracy.top1, bench.energy))
    if not points:
        return None
    styles = artifact_styles([name for name, *_ in points])
    figure, axes = new_figure(width=8.4, height=_rows_height(len(points) + 1, 4.0) * 0.75)
    for name, joules, top1, energy in points:
        colour, marker = styles[name]
        axes.errorbar(joules, top1, xerr=energy.ci95_j, fmt=marker, color=colour, label=name)
    front = pareto_front([(joules, top1) for _, joules, top1, _ in points])
    # A staircase through the non-dominated points only: up to the next point's accuracy at its energy.
    axes.step(*zip(*front), where="post", linestyle="--", color="grey", linewidth=1, label="Pareto front")
    axes.plot(*zip(*front), "o", markersize=12, markerfacecolor="none", color="grey")
    axes.set_ylim(*accuracy_range([top1 for _, _, top1, _ in points]))
    joules = [joules for _, joules, _, _ in points]
    spread = max(joules) / min(joules) > LOG_SPAN if min(joules) > 0 else False
    if spread:  # one PyTorch FP32 point at 1.6 J would push ONNX models at 0.01 J into the leftmost 5% of a linear axis
        axes.set_xscale("log")
    axes.set_xlabel(
        f"J per inference ({shape_words(batch_size, sequence_length)}, {report.energy_meter.method})"
        + (", log scale" if spread else "")
    )
    axes.set_ylabel("top-1 accuracy (%)")
    # Beside the axes, one entry per line: inside, 7-20 names would cover the points they label.
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.tight_layout()
    return figure


def accuracy_vs_energy(report: RunReport, batch_size: int, sequence_length: int | None = None) -> bytes | None:
    figure = accuracy_vs_energy_figure(report, batch_size, sequence_length)
    return png_bytes(figure) if figure is not None else None


def latency_distribution_figure(report: RunReport):
    """Horizontal box plots of per-batch latency (whiskers p1-p99), one row per artifact and batch size."""
    stats, labels = [], []
    for result in report.artifacts:
        for bench in result.benchmarks:
            q = bench.latency.percentiles_ms
            if len(q) == 101:
                stats.append({"whislo": q[1], "q1": q[25], "med": q[50], "q3": q[75], "whishi": q[99], "fliers": []})
                labels.append(f"{result.artifact.name}, {shape_words(*bench.latency.shape)}")
    if not stats:
        return None
    figure, axes = new_figure(width=8.4, height=_rows_height(len(stats)))
    axes.bxp(stats[::-1], showfliers=False, orientation="horizontal")  # the first artifact on top
    axes.set_yticks(range(1, len(labels) + 1), labels[::-1], fontsize=8)
    axes.set_xlabel("latency per batch (ms)")
    axes.set_xscale("log")
    figure.tight_layout()
    return figure


def latency_distribution(report: RunReport) -> bytes | None:
    figure = latency_distribution_figure(report)
    return png_bytes(figure) if figure is not None else None


def energy_by_domain_figure(report: RunReport, batch_size: int, sequence_length: int | None = None):
    """Stacked horizontal bars of joules per inference by domain (cpu, dram, gpu...) at one batch size."""
    bars = domain_bars(report, batch_size, sequence_length)
    names = list(bars)[::-1]  # the first artifact on top
    figure, axes = new_figure(width=8.4, height=_rows_height(len(names)))
    domains = sorted({domain for by_domain in bars.values() for domain in by_domain})
    lefts = [0.0] * len(names)
    for index, domain in enumerate(domains):
        values = [bars[name].get(domain, 0.0) for name in names]
        axes.barh(names, values, left=lefts, color=_COLORS[index % len(_COLORS)], label=domain)
        lefts = [left + value for left, value in zip(lefts, values)]
    axes.set_xlabel(f"J per inference ({shape_words(batch_size, sequence_length)}, {report.energy_meter.method})")
    axes.tick_params(axis="y", labelsize=8)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.tight_layout()
    return figure


def energy_by_domain(report: RunReport, batch_size: int, sequence_length: int | None = None) -> bytes:
    return png_bytes(energy_by_domain_figure(report, batch_size, sequence_length))


def power_timeline_figure(report: RunReport):
    """Mean power of every benchmark window over time, one colour per artifact; None for an estimate."""
    if not report.energy_meter.measured:
        return None
    windows = [
        (result.artifact.name, start, duration, joules)
        for result in report.artifacts
        for bench in result.benchmarks
        for start, duration, joules in bench.energy.timeline
    ]
    if not windows:
        return None
    origin = min(start for _, start, _, _ in windows)
    styles = artifact_styles(list(dict.fromkeys(w[0] for w in windows)))
    figure, axes = new_figure(width=8.4)
    for name, start, duration, joules in windows:
        axes.hlines(joules / duration, start - origin, start - origin + duration, color=styles[name][0], linewidth=3)
    for name, (colour, _) in styles.items():
        axes.plot([], [], color=colour, linewidth=3, label=name)
    axes.axhline(report.idle.total_w, color="grey", linestyle=":", label="idle")
    axes.set_xlabel("time since the first window (s)")
    axes.set_ylabel(f"mean power per window (W, {report.energy_meter.method})")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    figure.tight_layout()
    return figure


def power_timeline(report: RunReport) -> bytes | None:
    figure = power_timeline_figure(report)
    return png_bytes(figure) if figure is not None else None

"""Plots stay readable with 3 to 20 artifacts: no label over another, a style for each artifact, axes in range."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from greencompress.measure.energy import MeterDescription
from greencompress.report import plots
from tests.report.test_report import make_report, result

RUNTIMES = ("onnxruntime", "openvino", "torch")


def report_of(count: int, measured: bool = False):
    """`count` artifacts with long, similar names (as a run's are), accuracies 91-99%, on an estimate or a counter."""
    results = []
    for index in range(count):
        runtime, precision = RUNTIMES[index % 3], ("fp32", "int8", "bf16")[index // 3 % 3]
        name = f"{runtime}-pruned-finetuned-{precision}-{index}"
        results.append(
            result(
                name,
                runtime,
                precision,
                1.0 + index,
                0.01 * (1 + index),
                top1=0.91 + 0.004 * index,
                method="rapl" if measured else "estimate",
            )
        )
    report = make_report(results)
    if measured:
        report = dataclasses.replace(report, energy_meter=MeterDescription("rapl", True, ("cpu",)))
    for position, artifact in enumerate(report.artifacts):  # windows over time, for the power timeline
        bench = artifact.benchmarks[0]
        object.__setattr__(bench.energy, "timeline", tuple((position + 0.1 * w, 0.05, 1.0) for w in range(3)))
        object.__setattr__(bench.latency, "percentiles_ms", tuple(float(q) for q in range(101)))
    return report


def label_boxes(figure) -> list[tuple[str, object]]:
    """Every visible text of the figure's axes and legends, with its box on the canvas as drawn."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    texts = []
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):  # the locator also labels ticks beyond the limits, never drawn
            low, high = sorted(axis.get_view_interval())
            texts += [
                label
                for location, label in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
                if low <= location <= high
            ]
        if axes.get_legend() is not None:
            texts += axes.get_legend().get_texts()
    return [
        (text.get_text(), text.get_window_extent(renderer)) for text in texts if text.get_visible() and text.get_text()
    ]


def assert_no_overlap(figure) -> None:
    boxes = label_boxes(figure)
    clashes = [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    assert clashes == []


@pytest.mark.parametrize("count", [3, 10, 20])
def test_no_label_lies_over_another(count):
    report = report_of(count, measured=True)
    for figure in (
        plots.accuracy_vs_energy_figure(report, 1),
        plots.energy_by_domain_figure(report, 1),
        plots.latency_distribution_figure(report),
        plots.power_timeline_figure(report),
    ):
        assert figure is not None
        assert_no_overlap(figure)
        names = {text for text, _ in label_boxes(figure)}
        assert any(f"-{count - 1}" in name for name in names)  # the last artifact's full name is drawn, not cut


@pytest.mark.parametrize("count", [3, 10, 20, 27])
def test_every_artifact_has_a_style_of_its_own(count):
    report = report_of(count)
    styles = plots.artifact_styles([r.artifact.name for r in report.artifacts])
    assert len(set(styles.values())) == count
    if count <= 20:
        assert len({colour for colour, _ in styles.values()}) == count  # colours alone tell them apart
    figure = plots.accuracy_vs_energy_figure(report, 1)
    drawn = [
        (tuple(line.get_color()), line.get_marker())
        for container in figure.axes[0].containers
        for line in container.get_children()[:1]
    ]
    assert len(set(drawn)) == count


def test_the_accuracy_axis_holds_the_data_and_stays_within_0_and_100():
    report = report_of(10)  # 91.0% to 94.6%
    low, high = plots.accuracy_vs_energy_figure(report, 1).axes[0].get_ylim()
    assert 90 <= low < 91 and 94.6 < high <= 96
    assert plots.accuracy_range([99.4, 100.0]) == (98.9, 100.0)
    assert plots.accuracy_range([0.0, 2.0])[0] == 0.0


@pytest.mark.parametrize("spread, scale", [(1.5, "linear"), (160.0, "log")])
def test_energies_that_span_more_than_ten_times_are_drawn_on_a_log_axis(spread, scale):
    report = report_of(3)
    slowest = report.artifacts[0].benchmarks[0].energy
    object.__setattr__(slowest, "joules_per_inference", 0.01 * spread)
    figure = plots.accuracy_vs_energy_figure(report, 1)
    axes = figure.axes[0]
    assert axes.get_xscale() == scale and ("log scale" in axes.get_xlabel()) == (scale == "log")

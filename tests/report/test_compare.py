"""`compare`: deltas against the first run, refusal across hardware or meters unless forced."""

from __future__ import annotations

import dataclasses

import pytest

from greencompress.core.errors import GreencompressError
from greencompress.report.compare import compare_runs, render_comparison


@pytest.mark.slow
def test_two_runs_side_by_side_with_deltas(tiny_run):
    _, report = tiny_run
    comparison = compare_runs([report, report])
    assert comparison.mismatches == []
    assert len(comparison.rows) == 2 * 6  # 3 artifacts x 2 batch sizes, per run
    second = comparison.rows[6]
    assert second[0] == "#2 tiny"
    # The same windows on both sides: a ratio of exactly 1 with an interval around it, unpaired across runs.
    assert second[6].startswith("+0.0% [-") and second[6].endswith("within noise")
    assert second[8].startswith("+0.0% [-") and second[8].endswith("within noise")
    assert "| run | artifact |" in render_comparison(comparison, "markdown")
    assert "<table>" in render_comparison(comparison, "html")


def test_different_hardware_is_refused_unless_forced(tiny_run):
    _, report = tiny_run
    other_cpu = {**report.environment, "cpu": {**report.environment["cpu"], "model": "Another CPU"}}
    other = dataclasses.replace(report, environment=other_cpu)
    with pytest.raises(GreencompressError, match="hardware 'Another CPU x2' differs"):
        compare_runs([report, other])
    forced = compare_runs([report, other], force=True)
    assert all(row[-1] == "FORCED: different settings" for row in forced.rows[6:])
    assert forced.rows[0][-1] == ""


def test_runs_on_different_gpus_are_refused_though_their_hosts_match(tiny_run):
    _, report = tiny_run

    def on(gpu: str):
        return dataclasses.replace(
            report,
            environment={
                **report.environment,
                "device": "cuda:0",
                "gpu": {"gpu0": {"name": gpu, "uuid": f"GPU-{gpu}"}},
            },
        )

    assert compare_runs([on("NVIDIA H100"), on("NVIDIA H100")]).mismatches == []
    with pytest.raises(GreencompressError, match=r"hardware 'NVIDIA A100 \+ .*' differs"):
        compare_runs([on("NVIDIA H100"), on("NVIDIA A100")])
    with pytest.raises(GreencompressError, match="hardware 'NVIDIA H100 \\+ "):
        compare_runs([report, on("NVIDIA H100")])  # the same host, once on its CPU, once on a GPU


def test_different_meter_or_batch_sizes_are_refused(tiny_run):
    _, report = tiny_run
    other_meter = dataclasses.replace(report, energy_meter=dataclasses.replace(report.energy_meter, method="rapl"))
    with pytest.raises(GreencompressError, match="energy method 'rapl' differs"):
        compare_runs([report, other_meter])
    one_batch = dataclasses.replace(
        report, artifacts=[dataclasses.replace(result, benchmarks=result.benchmarks[:1]) for result in report.artifacts]
    )
    with pytest.raises(GreencompressError, match="has no counterpart"):
        compare_runs([one_batch, report])


def test_compare_needs_two_runs(tiny_run):
    with pytest.raises(GreencompressError, match="at least two"):
        compare_runs([tiny_run[1]])


def test_runs_whose_windows_differ_get_an_interval_that_holds_the_true_change(tiny_run):
    _, report = tiny_run

    def with_windows(run, factors, scale):  # every benchmark's windows set by hand: J/inf x scale x factor
        return dataclasses.replace(
            run,
            artifacts=[
                dataclasses.replace(
                    result,
                    benchmarks=tuple(
                        dataclasses.replace(
                            bench,
                            energy=dataclasses.replace(
                                bench.energy,
                                joules_per_inference=scale * bench.energy.joules_per_inference,
                                window_joules_per_inference=tuple(
                                    scale * bench.energy.joules_per_inference * f for f in factors
                                ),
                            ),
                        )
                        for bench in result.benchmarks
                    ),
                )
                for result in run.artifacts
            ],
        )

    before = with_windows(report, (1.0, 1.02, 0.98, 1.01, 0.99), 1.0)
    after = dataclasses.replace(with_windows(report, (0.99, 1.01, 1.0, 0.98, 1.02), 0.5), run_dir=report.run_dir / "b")
    row = compare_runs([before, after]).rows[6]
    low, high = (float(part.strip(" %")) for part in row[8].split("[")[1].split("]")[0].split(","))
    assert row[8].startswith("-50.0% [") and low < -50.0 < high and "within noise" not in row[8]

"""Comparisons only on the same runtime and batch size, and reports that say plainly when compression did not pay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greencompress.measure.accuracy import Accuracy
from greencompress.measure.benchmark import Benchmark, EnergyResult, IdleBaseline
from greencompress.measure.energy import MeterDescription, Uncertainty
from greencompress.measure.energy.carbon import carbon_settings
from greencompress.measure.latency import Latency
from greencompress.report.markdown import plain_findings, render_markdown
from greencompress.report.schema import (
    SCHEMA_VERSION,
    ArtifactResult,
    RunReport,
    StageRecord,
    compare_same_runtime,
)
from greencompress.runtimes.base import Artifact

BAND = Uncertainty(0.6, 2.0, "test band")


# Per-window spread shared by every hand-made artifact: round i scales all of them alike (a drift the
# interleaving cancels), so paired ratios are exact.
ROUNDS = (1.0, 1.03, 0.97, 1.01, 0.99)


def result(
    name,
    runtime,
    precision,
    p50_ms,
    joules,
    batch_size=1,
    top1=0.9,
    method="estimate",
    path=None,
    relative_ci=0.02,
    rounds=ROUNDS,
):
    latency = Latency(
        batch_size,
        100,
        p50_ms,
        p50_ms * 1.1,
        p50_ms * 1.2,
        p50_ms,
        batch_size * 1e3 / p50_ms,
        window_p50_ms=tuple(p50_ms * factor for factor in rounds),
    )
    energy = EnergyResult(
        joules_per_inference=joules,
        ci95_j=relative_ci * joules,
        active_joules_per_inference=joules * 0.8,
        active_ci95_j=relative_ci * joules,
        joules_per_inference_by_domain={"cpu": joules},
        idle_power_w={"cpu": 2.0},
        windows=5,
        window_s=1.0,
        inferences=100 * batch_size,
        method=method,
        measured=method != "estimate",
        uncertainty=BAND,
        noisy=relative_ci > 0.05,
        window_joules_per_inference=tuple(joules * factor for factor in rounds),
        window_active_joules_per_inference=tuple(0.8 * joules * factor for factor in rounds),
    )
    # Lineage as the pipeline records it: the model's techniques in the name's middle words, int8 from quantize.
    lineage = {
        "source": "torch" if runtime == "torch" else "onnx",
        "model_techniques": ("prune",) if "pruned" in name else (),
        "file_techniques": ("quantize",) if precision == "int8" else (),
    }
    return ArtifactResult(
        Artifact.of_file(name, runtime, precision, path, 1000, 5000, **lineage),
        Accuracy(top1, 0.99, 100) if top1 is not None else None,
        (Benchmark(latency, energy),),
    )


def make_report(results) -> RunReport:
    return RunReport(
        name="t",
        created_utc="2026-01-01 00:00:00 UTC",
        run_dir=Path("runs/t/x"),
        recipe={},
        environment={
            "cpu": {"model": "Test CPU", "logical_cores": 2, "flags": ["avx2"], "vnni": False},
            "threads": 2,
            "gpu": None,
            "os": "Linux",
            "python": "3.11",
            "versions": {"torch": "2", "onnxruntime": "1", "greencompress": "0"},
        },
        provenance={"source": "builtin", "description": "a test model"},
        data="test data",
        export={"exporter": "x", "opset": 18, "parity": {"samples": 8, "max_abs_diff": 1e-6, "top1_agreement": 1.0}},
        stages=[StageRecord("quantize", {"method": "static"})],
        energy_meter=MeterDescription("estimate", False, ("cpu",), ["an assumption"]),
        energy_meter_reason="because",
        idle=IdleBaseline({"cpu": 2.0}, 3.0, "estimate"),
        carbon=carbon_settings("FRA", None, 1.0, 0.25, "EUR"),
        artifacts=results,
        comparisons=compare_same_runtime(results),
    )


def test_int8_is_compared_with_fp32_of_its_own_runtime_only(tmp_path):
    fp32_file, int8_file = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    fp32_file.write_bytes(b"x" * 400)
    int8_file.write_bytes(b"x" * 100)
    results = [
        result("torch-fp32", "torch", "fp32", 10.0, 0.4),
        result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2, path=fp32_file),
        result("onnxruntime-int8", "onnxruntime", "int8", 1.0, 0.05, top1=0.89, path=int8_file),
    ]
    (comparison,) = compare_same_runtime(results)
    assert (comparison.candidate, comparison.baseline) == ("onnxruntime-int8", "onnxruntime-fp32")
    assert comparison.latency_p50_ratio == 0.25 and comparison.joules_per_inference_ratio == 0.25
    assert comparison.size_ratio == 0.25
    assert round(comparison.top1_delta_points, 6) == -1.0
    assert comparison.faster


def test_no_comparison_across_batch_sizes_or_energy_methods():
    results = [
        result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2, batch_size=1),
        result("onnxruntime-int8", "onnxruntime", "int8", 1.0, 0.05, batch_size=8),
    ]
    assert compare_same_runtime(results) == []
    results = [
        result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2, method="rapl"),
        result("onnxruntime-int8", "onnxruntime", "int8", 1.0, 0.05, method="estimate"),
    ]
    assert compare_same_runtime(results) == []


def test_a_slower_compressed_model_is_called_slower_in_words():
    report = make_report(
        [
            result("onnxruntime-fp32", "onnxruntime", "fp32", 1.0, 0.1),
            result("onnxruntime-int8", "onnxruntime", "int8", 1.5, 0.12),
        ]
    )
    markdown = render_markdown(report)
    assert "onnxruntime-int8 is SLOWER than onnxruntime-fp32 on onnxruntime at batch size 1" in markdown
    assert "1.50x [1.50, 1.50] (50% more)" in markdown
    assert "ESTIMATES" in markdown and "an assumption" in markdown
    assert "Test CPU" in markdown and "2 threads" in markdown


def test_every_energy_figure_carries_method_band_and_idle_power():
    report = make_report([result("onnxruntime-fp32", "onnxruntime", "fp32", 1.0, 0.1, relative_ci=0.2)])
    markdown = render_markdown(report)
    assert "J/inf (estimate)" in markdown and "+-20.0% noisy" in markdown
    assert "Energy method: estimate (ESTIMATED, not measured); systematic band -60%/+200%" in markdown
    assert "idle power before benchmarking 2 W" in markdown
    assert "idle power before benchmarking, measured for 3.0 s with the same meter: cpu 2.000 W" in markdown
    assert "NOISY" in markdown


def test_noisy_figures_are_named_in_one_line_with_what_stopped_the_measurement():
    import dataclasses

    results = [result(f"onnxruntime-{p}", "onnxruntime", p, 1.0, 0.1, relative_ci=0.09) for p in ("fp32", "int8")]
    report = make_report(results)
    (line,) = [finding for finding in plain_findings(report) if "NOISY" in finding]
    assert "for 2 of 2 figures: onnxruntime-fp32 at batch 1 (+-9.0% after 5 windows); onnxruntime-int8" in line
    assert "benchmark.max_time_s keeps measuring" in line
    timed = dataclasses.replace(report, recipe={"benchmark": {"max_time_s": 120}})
    assert "the benchmark.max_time_s budget (120 s per batch size) was spent" in " ".join(plain_findings(timed))


def test_active_energy_at_or_below_zero_is_called_idle_noise_not_printed_as_negative_joules():
    import dataclasses

    from greencompress.report.markdown import benchmark_cells

    (bench,) = result("onnxruntime-fp32", "onnxruntime", "fp32", 1.0, 0.1).benchmarks
    assert benchmark_cells(bench)[-1] == "0.08"
    negative = dataclasses.replace(bench, energy=dataclasses.replace(bench.energy, active_joules_per_inference=-8e-5))
    assert benchmark_cells(negative)[-1] == "below idle noise"


def test_no_accuracy_is_shown_as_not_available():
    report = make_report([result("onnxruntime-fp32", "onnxruntime", "fp32", 1.0, 0.1, top1=None)])
    assert "| onnxruntime-fp32 | 1 | n/a | n/a |" in render_markdown(report)
    assert report.to_dict()["artifacts"][0]["accuracy"] is None


def test_json_form_is_versioned_and_keyed_by_batch_size(tmp_path):
    report = make_report([result("onnxruntime-fp32", "onnxruntime", "fp32", 2.0, 0.1, batch_size=4)])
    report.write_json(tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    energy = data["artifacts"][0]["energy"]["4"]
    assert energy["method"] == "estimate" and energy["measured"] is False
    assert abs(energy["joules_per_inference"] - 0.1) < 1e-12
    assert energy["idle_power_w"] == {"cpu": 2.0} and energy["windows"] == 5
    assert abs(energy["relative_ci95"] - 0.02) < 1e-12
    assert data["energy_meter"]["idle"] == {
        "power_w": {"cpu": 2.0},
        "duration_s": 3.0,
        "method": "estimate",
        "ci95_w": 0.0,
        "when": "before benchmarking",
    }
    assert energy["uncertainty"] == {"low_fraction": 0.6, "high_fraction": 2.0, "basis": "test band"}
    assert data["artifacts"][0]["latency"]["4"]["p50_ms"] == 2.0
    assert not list(tmp_path.glob(".*.tmp"))


def test_carbon_section_names_intensity_source_year_and_pue():
    report = make_report([result("onnxruntime-int8", "onnxruntime", "int8", 1.0, 0.036)])
    markdown = render_markdown(report)
    # 0.036 J x 1e6 = 36 kJ = 0.01 kWh; x 56 g/kWh (France) = 0.56 g; x 0.25 EUR/kWh
    assert "| onnxruntime-int8 | 1 | 0.01 | 0.56 | 0.0025 |" in markdown
    assert "56 g CO2e/kWh for France (FRA, 2023" in markdown
    assert "PUE 1 (default: IT energy only" in markdown
    energy = report.to_dict()["artifacts"][0]["energy"]["1"]
    assert abs(energy["g_co2e_per_million_inferences"] - 0.56) < 1e-9


def test_pruning_without_speed_gets_a_warning_with_what_may_help():
    report = make_report(
        [
            result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2),
            result("onnxruntime-int8", "onnxruntime", "int8", 1.0, 0.05),
            result("onnxruntime-pruned-int8", "onnxruntime", "int8", 0.98, 0.05),
        ]
    )
    pairs = {(c.candidate, c.baseline) for c in report.comparisons}
    assert ("onnxruntime-pruned-int8", "onnxruntime-int8") in pairs
    assert ("onnxruntime-int8", "onnxruntime-pruned-int8") not in pairs
    markdown = render_markdown(report)
    assert "Pruning bought no real speed: onnxruntime-pruned-int8 runs at 0.98x" in markdown
    assert "round_to: auto" in markdown


def test_pruning_that_pays_is_stated_too():
    report = make_report(
        [
            result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2),
            result("onnxruntime-int8", "onnxruntime", "int8", 1.0, 0.05),
            result("onnxruntime-pruned-int8", "onnxruntime", "int8", 0.5, 0.025),
        ]
    )
    markdown = render_markdown(report)
    assert (
        "Pruning bought real speed: onnxruntime-pruned-int8 runs at 0.50x the p50 latency of onnxruntime-int8"
        in markdown
    )
    assert "no real speed" not in markdown


def test_power_timeline_is_drawn_for_a_measured_meter_only():
    import dataclasses

    from greencompress.report.plots import power_timeline

    measured = []
    for index, name in enumerate(("onnxruntime-fp32", "onnxruntime-int8")):
        item = result(name, "onnxruntime", name.rsplit("-", 1)[1], 2.0, 0.1, method="rapl")
        windows = tuple((10.0 + 2 * round_ + index, 1.0, 30.0 + 5 * index) for round_ in range(3))
        energy = dataclasses.replace(item.benchmarks[0].energy, timeline=windows)
        measured.append(dataclasses.replace(item, benchmarks=(dataclasses.replace(item.benchmarks[0], energy=energy),)))
    report = make_report(measured)
    assert power_timeline(report) is None  # the report's meter is the estimate: no power readings to plot
    rapl_report = dataclasses.replace(report, energy_meter=MeterDescription("rapl", True, ("cpu",), []))
    png = power_timeline(rapl_report)
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_runtime_table_ranks_runtimes_as_the_recommendation_does_and_says_when_it_is_within_noise(tmp_path):
    import dataclasses

    from greencompress.report.markdown import runtime_table

    fp32_file, int8_file = tmp_path / "model_fp32.onnx", tmp_path / "model_int8.onnx"
    fp32_file.write_bytes(b"x" * 400)
    int8_file.write_bytes(b"x" * 100)
    noisy = (1.0, 1.15, 0.88, 1.1, 0.9)  # rounds that do not follow the others: a 2% margin is not resolved
    results = [
        result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.20, path=fp32_file),
        result("onnxruntime-int8", "onnxruntime", "int8", 1.0, 0.050, path=int8_file),
        result("openvino-fp32", "openvino", "fp32", 3.0, 0.25, path=fp32_file),  # faster, but more joules
        result("openvino-int8", "openvino", "int8", 0.98, 0.049, path=int8_file, rounds=noisy),
    ]
    assert runtime_table(make_report(results[:2])) is None  # one runtime: nothing to choose
    # Energy only estimated: ranked by p50 latency, as the recommendation ranks.
    headers, rows = runtime_table(make_report(results))
    assert headers[-1] == "fastest (p50; energy estimated)"
    assert [row[-1] for row in rows] == ["openvino", "openvino (within noise)"]
    # Energy measured: ranked by joules, where ONNX Runtime's FP32 file is the cheaper one.
    measured = dataclasses.replace(make_report(results), energy_meter=MeterDescription("rapl", True, ("cpu",)))
    headers, rows = runtime_table(measured)
    assert headers == ["file", "batch", "p50 ms ORT", "p50 ms OV", "J/inf ORT", "J/inf OV", "cheapest (J/inf)"]
    assert rows[0] == ["model_fp32.onnx", "1", "4.000", "3.000", "0.2", "0.25", "onnxruntime"]
    assert rows[1][-1] == "openvino (within noise)"
    markdown = render_markdown(make_report(results))
    assert "## The same model on each runtime" in markdown
    pairs = {(c.candidate, c.baseline) for c in make_report(results).comparisons}
    assert pairs == {("onnxruntime-int8", "onnxruntime-fp32"), ("openvino-int8", "openvino-fp32")}


def test_every_comparison_carries_paired_intervals_and_whether_energy_was_measured(tmp_path):
    noisy = (1.0, 1.2, 0.85, 1.1, 0.9)  # the candidate's windows do not follow the baseline's rounds
    results = [
        result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2),
        result("onnxruntime-int8", "onnxruntime", "int8", 1.0, 0.05),
        result("onnxruntime-pruned-fp32", "onnxruntime", "fp32", 3.9, 0.198, rounds=noisy),
    ]
    report = make_report(results)
    report.write_json(tmp_path / "report.json")
    by_pair = {
        (c["candidate"], c["baseline"]): c for c in json.loads((tmp_path / "report.json").read_text())["comparisons"]
    }
    int8 = by_pair[("onnxruntime-int8", "onnxruntime-fp32")]
    assert int8["measured"] is False  # the estimate meter
    for key in ("latency_p50", "joules_per_inference", "active_joules_per_inference"):
        low, high = int8[key]["ci95"]
        assert low <= int8[key]["ratio"] <= high and int8[key]["rounds"] == 5 and not int8[key]["within_noise"]
    assert int8["joules_per_inference"]["ratio"] == pytest.approx(0.25)
    pruned = by_pair[("onnxruntime-pruned-fp32", "onnxruntime-fp32")]
    low, high = pruned["latency_p50"]["ci95"]
    assert low < 0.975 < high and pruned["latency_p50"]["within_noise"]  # the true ratio lies inside
    markdown = render_markdown(report)
    assert "within noise" in markdown
    assert (
        "Pruning bought no real speed: onnxruntime-pruned-fp32 runs at 0.98x the p50 latency of onnxruntime-fp32 "
        "on onnxruntime at batch size 1 (95% CI [" in markdown
    )


def test_with_an_estimate_no_output_says_energy_saved():
    from rich.console import Console

    from greencompress import cli
    from greencompress.report.html import render_html

    report = make_report(
        [
            result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2),
            result("onnxruntime-int8", "onnxruntime", "int8", 1.72, 0.086),
        ]
    )
    console = Console(record=True, width=200)
    original, cli.stdout = cli.stdout, console
    try:
        cli._print_summary(report)
    finally:
        cli.stdout = original
    outputs = {
        "report.md": render_markdown(report),
        "report.html": render_html(report),
        "terminal": console.export_text(),
    }
    for name, text in outputs.items():
        flat = " ".join(text.split())
        assert "energy saved" not in flat and "less energy" not in flat, name
        assert "57% less CPU time" in flat, name
        assert "energy was not measured on this machine" in flat, name
    assert "CPU time (energy estimate) [95% CI]" in outputs["report.md"]


def test_a_measured_report_headlines_energy():
    import dataclasses

    from greencompress.report.html import render_html

    results = [
        result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2, method="rapl"),
        result("onnxruntime-int8", "onnxruntime", "int8", 1.72, 0.086, method="rapl"),
    ]
    report = dataclasses.replace(make_report(results), energy_meter=MeterDescription("rapl", True, ("cpu",), []))
    assert "57% less energy" in render_html(report) and "active J/inference [95% CI]" in render_markdown(report)


def test_busy_windows_and_idle_drift_are_flagged_in_words():
    import dataclasses

    item = result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.2)
    energy = dataclasses.replace(item.benchmarks[0].energy, window_other_cpu_share=(0.02, 0.55, 0.6, 0.03, 0.01))
    busy = dataclasses.replace(item, benchmarks=(dataclasses.replace(item.benchmarks[0], energy=energy),))
    checks = (
        IdleBaseline({"cpu": 2.0}, 3.0, "rapl", 0.1, "before benchmarking"),
        IdleBaseline({"cpu": 3.5}, 3.0, "rapl", 0.2, "after the last round"),
    )
    report = dataclasses.replace(make_report([busy]), idle_checks=checks)
    markdown = render_markdown(report)
    assert "The machine was BUSY during 2 of 5 measurement windows: other processes used up to 60%" in markdown
    assert "busy 2/5" in markdown  # beside the figure in the results table
    assert "idle power drifted from 2 W (before benchmarking) to 3.5 W (after the last round)" in markdown
    data = report.to_dict()
    assert data["machine_load"]["busy_windows"] == 2 and data["energy_meter"]["idle_drift"]
    quiet = dataclasses.replace(report, idle_checks=(checks[0], dataclasses.replace(checks[1], power_w={"cpu": 2.1})))
    assert quiet.idle_drift is None  # 2.0 +-0.1 and 2.1 +-0.2 overlap: noise, not drift


def test_gpu_windows_report_clock_temperature_and_limits():
    import dataclasses

    item = result("torch-cuda-fp32", "torch-cuda", "fp32", 2.0, 0.5, method="nvml-counter")
    telemetry = tuple(
        {"gpu0": {"temperature_c": t, "sm_clock_mhz": c, "power_w": 300.0, "throttle_reasons": r}}
        for t, c, r in ((55, 1980, []), (71, 1755, ["sw_power_cap"]), (64, 1980, ["gpu_idle"]))
    )
    energy = dataclasses.replace(item.benchmarks[0].energy, window_telemetry=telemetry)
    gpu = dataclasses.replace(item, benchmarks=(dataclasses.replace(item.benchmarks[0], energy=energy),))
    report = dataclasses.replace(make_report([gpu]), energy_meter=MeterDescription("nvml-counter", True, ("gpu0",), []))
    markdown = render_markdown(report)
    assert (
        "gpu0 at the end of each window: SM clock 1755-1980 MHz, up to 71 C; clocks LIMITED in 1 of 3 windows "
        "(sw_power_cap)"
    ) in markdown
    assert report.to_dict()["artifacts"][0]["energy"]["1"]["window_telemetry"][1]["gpu0"]["sm_clock_mhz"] == 1755


def test_the_schema_doc_describes_the_version_reports_are_written_in():
    from greencompress.report.schema import SCHEMA_VERSION
    from tests.conftest import REPO

    doc = (REPO / "docs" / "report-schema.md").read_text()
    assert doc.splitlines()[0] == f"# `report.json`, schema version {SCHEMA_VERSION}"
    assert f'`"{SCHEMA_VERSION}"`' in doc  # the schema_version row names it too

"""The first line of every report: what to deploy, and what it saves against the model as the user gave it."""

from __future__ import annotations

import dataclasses
import io
import statistics

import pytest
from rich.console import Console

from greencompress.report.markdown import decision_lines, render_markdown
from greencompress.report.schema import load_report
from tests.report.test_report import make_report, result

DRIFT = (1.0, 1.03, 0.97, 1.01, 0.99)


def default_run(baseline: str | None = None):
    """The default recipe's shape: PyTorch FP32 as given, ONNX Runtime and OpenVINO at FP32 and int8."""
    report = make_report(
        [
            result("torch-fp32", "torch", "fp32", 9.213, 0.1341, top1=0.994),
            result("onnxruntime-fp32", "onnxruntime", "fp32", 1.2, 0.016, top1=0.994),
            result(
                "onnxruntime-int8",
                "onnxruntime",
                "int8",
                0.76,
                0.0101,
                top1=0.994,
                rounds=(1.0, 1.05, 0.95, 1.02, 0.98),
            ),
            result("openvino-fp32", "openvino", "fp32", 1.0, 0.014, top1=0.994),
            result("openvino-int8", "openvino", "int8", 0.52, 0.0069, top1=0.994, rounds=(1.0, 1.0, 0.98, 1.02, 0.99)),
        ]
    )
    return dataclasses.replace(report, recipe={"benchmark": {"baseline": baseline}})


def test_the_decision_sets_the_recommendation_against_pytorch_fp32_with_paired_intervals():
    report = default_run()
    (decision,) = report.decisions
    assert (decision.candidate, decision.baseline, decision.runtimes) == (
        "openvino-int8",
        "torch-fp32",
        ("torch", "openvino"),
    )
    per_round = [0.52 * a / (9.213 * b) for a, b in zip((1.0, 1.0, 0.98, 1.02, 0.99), DRIFT)]  # paired by round
    assert decision.latency_p50.ratio == pytest.approx(statistics.geometric_mean(per_round), rel=1e-6)
    assert decision.latency_p50.low < decision.latency_p50.ratio < decision.latency_p50.high
    assert decision.deployment and not decision.measured
    line = decision_lines(report)[0]
    assert line.startswith("Deploy openvino-int8 at batch 1: 0.06x [") and "the p50 latency" in line
    assert "the CPU time (energy estimate: not measured here) of your model as given (torch-fp32)" in line
    assert "+0.00 pt top-1" in line
    assert render_markdown(report).splitlines()[2] == f"**{line}.**  "


def test_report_json_carries_the_decision_once_with_both_runtimes(tmp_path):
    report = default_run()
    report.write_json(tmp_path / "report.json")
    data = __import__("json").loads((tmp_path / "report.json").read_text())
    (decision,) = [c for c in data["comparisons"] if c["deployment"]]
    assert (decision["runtime"], decision["baseline_runtime"]) == ("openvino", "torch")
    assert set(decision["joules_per_inference"]) >= {"ratio", "ci95"} and decision["measured"] is False
    loaded = load_report(tmp_path)
    assert not any(c.deployment for c in loaded.comparisons) and len(loaded.decisions) == 1
    assert [c for c in loaded.to_dict()["comparisons"] if c["deployment"]] == [decision]


def test_the_recipe_names_the_runtime_the_user_serves_on():
    (decision,) = default_run(baseline="onnxruntime").decisions
    assert (decision.baseline, decision.runtimes) == ("onnxruntime-fp32", ("onnxruntime", "openvino"))


def test_when_nothing_beats_the_model_as_given_the_line_says_keep_it():
    report = make_report(
        [
            result("torch-fp32", "torch", "fp32", 0.5, 0.001, top1=0.99),
            result("onnxruntime-int8", "onnxruntime", "int8", 0.9, 0.002, top1=0.90),
        ]
    )
    assert decision_lines(report) == [
        "Keep your model as given (torch-fp32) at batch 1: nothing within the budget ranks above it"
    ]


def test_with_nothing_within_the_budget_the_first_line_says_to_keep_the_model():
    report = dataclasses.replace(default_run(), recipe={"gates": {"max_accuracy_drop": -1.0}})
    assert report.recommendations == [] and decision_lines(report) == [
        "Keep your model as given: no artifact is within the budget (top-1 within -1 point(s) of the original model's)"
    ]
    assert render_markdown(report).splitlines()[2].startswith("**Keep your model as given")


def test_the_terminal_summary_starts_with_the_decision_and_cuts_no_name():
    from greencompress import cli

    report = default_run()
    for console, details in (
        (Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None), False),
        (Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None), True),
        (Console(file=io.StringIO(), width=cli.PLAIN_WIDTH), False),
    ):
        original, cli.stdout = cli.stdout, console
        try:
            cli._print_summary(report, details)
        finally:
            cli.stdout = original
        printed = console.file.getvalue()
        assert printed.splitlines()[0].startswith("Deploy openvino-int8 at batch 1")
        assert "…" not in printed
        tables_shown = "Carbon" in printed
        assert tables_shown == (details or console.width == cli.PLAIN_WIDTH)  # too wide for 80 columns otherwise


def test_compare_in_a_narrow_terminal_prints_one_block_per_artifact(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from greencompress import cli

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        dataclasses.replace(default_run(), run_dir=tmp_path / name).write_json(tmp_path / name / "report.json")
    narrow = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    monkeypatch.setattr(cli, "stdout", narrow)
    outcome = CliRunner().invoke(cli.cli, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert outcome.exit_code == 0, outcome.output
    printed = narrow.file.getvalue()
    assert "openvino-int8 (run #2 t, batch 1)" in printed and "  Δ p50 [95% CI]: " in printed
    assert "…" not in printed and max(len(line) for line in printed.splitlines()) <= 80

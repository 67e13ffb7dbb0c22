"""The report-facing commands: gates and exit 3, --json and --quiet, `report` and `compare`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.test_cli import greencompress

pytestmark = pytest.mark.slow  # end-to-end: runs the pipeline or the command line


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GREENCOMPRESS_CACHE", str(tmp_path / "cache"))
    return os.environ


def run_dir_under(output: Path) -> Path:
    (run_dir,) = [path for path in output.glob("*/*") if path.is_dir()]
    return run_dir


def test_an_impossible_accuracy_budget_exits_3_with_reports_written(tiny_recipe, tmp_path, cache_env):
    result = greencompress(
        "run",
        str(tiny_recipe),
        "--output",
        str(tmp_path / "runs"),
        "--quiet",
        "--set",
        "gates.max_accuracy_drop=-0.0",
        "--set",
        "gates.min_energy_saving=1.0",
        "--set",
        "gates.allow_estimated_energy=true",
    )
    assert result.returncode == 3, result.stderr[-2000:]
    assert "quality gate failed" in result.stderr and "min_energy_saving" in result.stderr
    run_dir = run_dir_under(tmp_path / "runs")
    assert result.stdout.strip() == str(run_dir)  # --quiet: the run folder only
    report = json.loads((run_dir / "report.json").read_text())
    assert any(not gate["passed"] for gate in report["gates"])
    assert "FAIL min_energy_saving" in (run_dir / "report.md").read_text()


def test_an_energy_gate_on_an_estimate_exits_2_before_any_work(tiny_recipe, tmp_path, cache_env):
    result = greencompress(
        "run",
        str(tiny_recipe),
        "--output",
        str(tmp_path / "runs"),
        "--quiet",
        "--set",
        "gates.min_energy_saving=0.3",
        "--set",
        "energy.meter=estimate",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    message = " ".join(result.stderr.split())
    assert "gates.min_energy_saving: energy cannot be measured on this machine (meter: estimate)" in message
    assert "gates.allow_estimated_energy: true" in message and "Traceback" not in result.stderr
    assert not (tmp_path / "cache" / "stages").exists()  # stopped before export or quantization


def test_json_mode_prints_the_report_and_report_command_re_renders(tiny_recipe, tmp_path, cache_env):
    result = greencompress("run", str(tiny_recipe), "--output", str(tmp_path / "runs"), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout)
    run_dir = run_dir_under(tmp_path / "runs")
    assert printed == json.loads((run_dir / "report.json").read_text())

    (run_dir / "report.html").unlink()
    rendered = greencompress("report", str(run_dir))
    assert rendered.returncode == 0 and (run_dir / "report.html").is_file()

    compared = greencompress("compare", str(run_dir), str(run_dir), "--format", "markdown")
    assert compared.returncode == 0 and "| #2 tiny | onnxruntime-int8 |" in compared.stdout

    data = json.loads((run_dir / "report.json").read_text())
    data["environment"]["cpu"]["model"] = "Some Other CPU"
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.json").write_text(json.dumps(data))
    refused = greencompress("compare", str(run_dir), str(other))
    assert refused.returncode == 2 and "refusing to compare" in refused.stderr and "Traceback" not in refused.stderr
    forced = greencompress("compare", str(run_dir), str(other), "--force")
    assert forced.returncode == 0 and "Forced:" in forced.stdout and "Some Other CPU" in forced.stdout
    piped = greencompress("compare", str(run_dir), str(run_dir))  # no terminal, COLUMNS=80 (the helper's)
    assert piped.returncode == 0 and "…" not in piped.stdout
    assert all(f" {artifact['name']} " in piped.stdout for artifact in data["artifacts"])


def test_a_named_meter_that_is_missing_stops_before_any_work(tiny_recipe, tmp_path, cache_env, monkeypatch):
    import greencompress.measure.energy.rapl as rapl

    if rapl.POWERCAP_ROOT.is_dir() and any(rapl.POWERCAP_ROOT.glob("intel-rapl:*")):
        pytest.skip("this machine has RAPL zones")
    result = greencompress("run", str(tiny_recipe), "--output", str(tmp_path / "runs"), "--set", "energy.meter=rapl")
    assert result.returncode == 2 and "energy.meter: rapl is not available here" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "runs").glob("*/*/model_fp32.onnx"))  # nothing was exported

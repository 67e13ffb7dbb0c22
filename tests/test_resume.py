"""Runs that survive: interrupted stages leave whole files, --resume reuses what finished, caches a recipe prefix."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys

import pytest

from greencompress.compress import quantize
from greencompress.pipeline import measurement
from greencompress.pipeline.execute import run
from greencompress.pipeline.folder import create_run_dir
from greencompress.pipeline.recipe import load_recipe

pytestmark = pytest.mark.slow  # end-to-end: runs the pipeline or the command line


@pytest.fixture
def fresh(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe)
    return recipe, create_run_dir(recipe, tmp_path / "runs"), tmp_path / "stage-cache"


def test_interrupt_during_calibration_then_resume(fresh, monkeypatch, caplog):
    recipe, run_dir, cache = fresh

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize, "quantize_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, run_dir, shared_cache=cache)
    note = (run_dir / "report.md").read_text()
    assert "INCOMPLETE" in note and "Finished stages: load, export" in note and "--resume" in note
    assert (run_dir / "model_fp32.onnx").is_file() and not (run_dir / "model_int8.onnx").exists()
    assert not list(run_dir.glob(".*.tmp"))

    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="greencompress"):
        report = run(recipe, run_dir, shared_cache=cache)
    assert "export: reusing the finished stage in this run folder" in caplog.text
    assert "stage quantize" in caplog.text and report.complete
    assert json.loads((run_dir / "report.json").read_text())["complete"] is True

    # The resumed run's results equal a straight run's: same int8 file, same accuracy (latency is noise).
    straight_dir = create_run_dir(recipe, run_dir.parent.parent / "straight")
    straight = run(recipe, straight_dir, shared_cache=run_dir.parent / "separate-cache")
    assert (straight_dir / "model_int8.onnx").read_bytes() == (run_dir / "model_int8.onnx").read_bytes()
    assert [r.accuracy for r in straight.artifacts] == [r.accuracy for r in report.artifacts]


def test_interrupt_during_benchmarking_writes_an_incomplete_report_then_resume(fresh, monkeypatch, caplog):
    recipe, run_dir, cache = fresh
    real = measurement.benchmark_interleaved
    calls = []

    def second_batch_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(measurement, "benchmark_interleaved", second_batch_interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, run_dir, shared_cache=cache)
    partial = json.loads((run_dir / "report.json").read_text())
    assert partial["complete"] is False
    assert all(list(artifact["latency"]) == ["1"] for artifact in partial["artifacts"])
    assert "(INCOMPLETE)" in (run_dir / "report.md").read_text()

    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="greencompress"):
        report = run(recipe, run_dir, shared_cache=cache)
    for stage in ("export", "quantize", "accuracy", "idle", "benchmark-batch1"):
        assert f"{stage}: reusing the finished stage" in caplog.text
    assert "benchmarking batch size 2" in caplog.text and report.complete
    final = json.loads((run_dir / "report.json").read_text())
    for before, after in zip(partial["artifacts"], final["artifacts"]):
        assert after["energy"]["1"]["joules_per_inference"] == before["energy"]["1"]["joules_per_inference"]
        assert set(after["latency"]) == {"1", "2"}


def test_an_unchanged_recipe_prefix_reuses_export_and_quantization(fresh, tmp_path, caplog):
    recipe, run_dir, cache = fresh
    run(recipe, run_dir, shared_cache=cache)
    changed = recipe.model_copy(update={"benchmark": recipe.benchmark.model_copy(update={"batch_sizes": [1]})})
    second_dir = create_run_dir(changed, tmp_path / "other-runs")
    with caplog.at_level(logging.INFO, logger="greencompress"):
        run(changed, second_dir, shared_cache=cache)
    assert "export: reusing the output of an earlier run" in caplog.text
    assert "quantize: reusing the output of an earlier run" in caplog.text
    assert (second_dir / "model_int8.onnx").read_bytes() == (run_dir / "model_int8.onnx").read_bytes()
    assert "benchmarking batch size 1" in caplog.text  # measurements are never taken from another run


@pytest.mark.slow
def test_ctrl_c_from_the_command_line_then_resume(tiny_recipe, tmp_path):
    import os
    import time

    env = {**os.environ, "GREENCOMPRESS_CACHE": str(tmp_path / "cache")}
    # Windows of 0.8 s: batch size 2 takes 3 artifacts x 3 windows x 0.8 s, time enough to press Ctrl-C inside it.
    command = [
        sys.executable,
        "-m",
        "greencompress",
        "run",
        str(tiny_recipe),
        "--output",
        str(tmp_path / "runs"),
        "--set",
        "benchmark.windows=3",
        "--set",
        "benchmark.max_windows=3",
        "--set",
        "benchmark.window_s=0.8",
    ]
    # A shell that starts jobs in the background makes them ignore SIGINT, and Python keeps it ignored:
    # give the child the default disposition, as a terminal would.
    process = subprocess.Popen(
        command,
        stderr=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not list((tmp_path / "runs").glob("tiny/*/stages/benchmark-batch1.json")):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before batch size 1 finished"
        time.sleep(0.2)
    time.sleep(1.0)  # well inside batch size 2's 7 s
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert json.loads((run_dir / "report.json").read_text())["complete"] is False

    resumed = subprocess.run(
        [sys.executable, "-m", "greencompress", "run", "--resume", str(run_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    log = (run_dir / "run.log").read_text()
    assert "benchmark-batch1: reusing the finished stage" in log
    assert json.loads((run_dir / "report.json").read_text())["complete"] is True


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(tiny_recipe, tmp_path):
    import os
    import time

    env = {**os.environ, "GREENCOMPRESS_CACHE": str(tmp_path / "cache")}
    command = [
        sys.executable,
        "-m",
        "greencompress",
        "run",
        str(tiny_recipe),
        "--output",
        str(tmp_path / "runs"),
        "--set",
        "benchmark.windows=3",
        "--set",
        "benchmark.max_windows=3",
        "--set",
        "benchmark.window_s=0.8",
    ]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 240
    while not list((tmp_path / "runs").glob("tiny/*/stages/benchmark-batch1.json")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    process.terminate()
    assert process.wait(timeout=120) == 130
    (run_dir,) = (tmp_path / "runs" / "tiny").iterdir()
    assert json.loads((run_dir / "report.json").read_text())["complete"] is False

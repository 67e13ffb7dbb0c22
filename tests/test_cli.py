"""The command line end to end: real runs asserted on real numbers, and bad input that exits 2 without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from greencompress.measure.accuracy import evaluate
from greencompress.models.data import load_data
from greencompress.pipeline.recipe import load_recipe
from greencompress.report.schema import SCHEMA_VERSION
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner
from tests.conftest import RECIPES

QUICK_BENCHMARK = [
    "--set",
    "benchmark.batch_sizes=[1]",
    "--set",
    "benchmark.window_s=0.2",
    "--set",
    "benchmark.windows=3",
    "--set",
    "benchmark.max_windows=3",
    "--set",
    "energy.idle_s=0.5",
]


def greencompress(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The command as a user pipes it (`| cat`, a CI log): no terminal, COLUMNS=80."""
    import os

    return subprocess.run(
        [sys.executable, "-m", "greencompress", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=600,
        env={**os.environ, "COLUMNS": "80"},
    )


def only_run_dir(output: Path) -> Path:
    (run_dir,) = [path for path in output.glob("*/*") if path.is_dir()]
    return run_dir


@pytest.mark.slow
def test_default_recipe_end_to_end(tmp_path):
    result = greencompress("run", str(RECIPES / "resnet_int8.yaml"), "--output", str(tmp_path), *QUICK_BENCHMARK)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path)
    assert run_dir.parent.name == "resnet18-digits-int8"
    for name in (
        "report.json",
        "report.md",
        "model_fp32.onnx",
        "model_int8.onnx",
        "recipe.yaml",
        "recipe.resolved.yaml",
        "run.log",
    ):
        assert (run_dir / name).is_file(), name
    assert str(run_dir) in result.stdout and "Results" in result.stdout

    report = json.loads((run_dir / "report.json").read_text())
    assert report["schema_version"] == SCHEMA_VERSION
    artifacts = {artifact["name"]: artifact for artifact in report["artifacts"]}
    torch_fp32, ort_fp32, ort_int8 = (
        artifacts["torch-fp32"],
        artifacts["onnxruntime-fp32"],
        artifacts["onnxruntime-int8"],
    )
    assert torch_fp32["accuracy"]["top1"] >= 0.98 and torch_fp32["accuracy"]["samples"] == 360
    assert abs(ort_int8["accuracy"]["top1"] - ort_fp32["accuracy"]["top1"]) <= 0.01
    assert ort_int8["size_bytes"] <= 0.30 * ort_fp32["size_bytes"]
    assert report["export"]["parity"]["max_abs_diff"] < 1e-3 and report["export"]["parity"]["top1_agreement"] == 1.0
    assert report["provenance"]["source"] == "builtin" and len(report["provenance"]["sha256"]) == 64
    assert ort_int8["energy"]["1"]["method"] == "estimate" and ort_int8["energy"]["1"]["measured"] is False
    assert ort_int8["latency"]["1"]["iterations"] >= 30  # 3 windows of >= 10 runs
    assert ort_int8["energy"]["1"]["windows"] == 3 and ort_int8["energy"]["1"]["idle_power_w"]["cpu"] >= 0
    assert "Energy method: estimate (ESTIMATED, not measured)" in result.stdout
    (comparison,) = [c for c in report["comparisons"] if c["runtime"] == "onnxruntime" and not c["deployment"]]
    assert (comparison["candidate"], comparison["baseline"], comparison["batch_size"]) == (
        "onnxruntime-int8",
        "onnxruntime-fp32",
        1,
    )
    assert "## Compressed vs baseline" in (run_dir / "report.md").read_text()

    # The default measures every installed runtime (OpenVINO is in the main install), bf16 where the CPU has it,
    # and names what to deploy.
    assert {"openvino-fp32", "openvino-int8"} <= set(artifacts)
    assert report["environment"]["runtimes"]["openvino"] != "not installed"
    has_bf16 = (
        report["environment"]["cpu"]["matrix_units"]["amx_bf16"]
        or report["environment"]["cpu"]["matrix_units"]["avx512_bf16"]
    )
    if has_bf16:
        for name in ("torch-bf16", "openvino-bf16"):
            assert artifacts[name]["precision"] == "bf16" and artifacts[name]["accuracy"]["top1"] >= 0.97
        assert any(note.startswith("bf16 measured") for note in report["notes"])
    else:
        assert not any(name.endswith("bf16") for name in artifacts)
        assert any("bf16 not measured: this CPU has neither" in note for note in report["notes"])
    (recommendation,) = report["recommendations"]
    assert recommendation["artifact"] in artifacts and recommendation["ranked_by"].startswith("p50 latency")
    assert "Deployment recommendation" in result.stdout
    # The first line printed is the decision against the model as given, with its intervals; report.json holds it.
    (decision,) = [c for c in report["comparisons"] if c["deployment"]]
    assert (decision["baseline"], decision["baseline_runtime"]) == ("torch-fp32", "torch")
    assert decision["candidate"] == recommendation["artifact"] and decision["latency_p50"]["ci95"][0] > 0
    first = result.stdout.strip().splitlines()[0]
    folder = report["deploy_folders"].get(Path(artifacts[decision["candidate"]]["path"] or "").name)
    where = f" (`{folder}/`)" if folder else ""
    assert first.startswith(f"Deploy {decision['candidate']}{where} at batch 1: ") or first.startswith(
        "Keep your model"
    )
    assert (run_dir / "deploy" / "model_int8" / "onnx" / "model.onnx").is_file()
    if folder:
        assert f"To deploy: {run_dir / folder} (its README.md shows how to load it)" in result.stdout
    assert (run_dir / "report.md").read_text().splitlines()[2].startswith(f"**{first[:-1]}")
    assert "…" not in result.stdout  # piped at COLUMNS=80: plain text at full width, no name cut
    assert all(f" {name} " in result.stdout for name in artifacts)

    # The int8 file on disk is the one the report describes: its accuracy, recomputed here, matches.
    recipe = load_recipe(run_dir / "recipe.resolved.yaml")
    accuracy = evaluate(OnnxRuntimeRunner(run_dir / "model_int8.onnx", 2), load_data(recipe.data, recipe.seed).eval, 64)
    assert accuracy.top1 == pytest.approx(ort_int8["accuracy"]["top1"])


@pytest.mark.slow
def test_bring_your_own_model_resnet20_on_cifar10(shared_assets, tmp_path):
    result = greencompress(
        "run", str(RECIPES / "resnet20_cifar10_int8.yaml"), "--output", str(tmp_path), *QUICK_BENCHMARK
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((only_run_dir(tmp_path) / "report.json").read_text())
    artifacts = {artifact["name"]: artifact for artifact in report["artifacts"]}
    fp32_top1 = artifacts["torch-fp32"]["accuracy"]["top1"]
    assert fp32_top1 == pytest.approx(0.914, abs=0.0015)  # the checkpoint README's 91.4% on these 1,000 images
    assert artifacts["onnxruntime-fp32"]["accuracy"]["top1"] == pytest.approx(fp32_top1, abs=0.0015)
    assert abs(artifacts["onnxruntime-int8"]["accuracy"]["top1"] - fp32_top1) <= 0.01
    assert report["provenance"]["sha256"].startswith("12fca82f")


@pytest.mark.slow
def test_synthetic_data_reports_no_accuracy(write_recipe, tmp_path):
    path = write_recipe("""
        name: synthetic-latency
        model: {source: torchvision, name: resnet18, num_classes: 10}
        data: {kind: synthetic, image_size: 32, synthetic_samples: 16, batch_size: 8}
        stages:
          - quantize: {calibration_samples: 16}
        benchmark: {batch_sizes: [2], window_s: 0.05, min_iterations: 2, windows: 2, max_windows: 2,
                    warmup_iterations: 1}
        energy: {idle_s: 0}
    """)
    result = greencompress("run", str(path), "--output", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "runs")
    report = json.loads((run_dir / "report.json").read_text())
    assert all(artifact["accuracy"] is None for artifact in report["artifacts"])
    assert "no accuracy" in " ".join(report["notes"])
    assert "n/a" in (run_dir / "report.md").read_text()


@pytest.mark.slow
def test_validate_accepts_the_default_recipe():
    result = greencompress("validate", str(RECIPES / "resnet_int8.yaml"))
    assert result.returncode == 0 and "valid recipe 'resnet18-digits-int8'" in result.stdout


BASE = """
name: bad
model: {source: builtin, name: resnet18-digits-64}
data: {kind: digits, image_size: 64}
stages:
  - quantize: {}
"""


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            ("benchmark:", "benchmark:\n  batch_sizes: [1]\n  windowz: 3"),
            "benchmark.windowz: unknown field; did you mean 'windows'?",
        ),
        (
            ("{source: builtin, name: resnet18-digits-64}", "{source: torchvision, name: resnet1}"),
            "unknown torchvision classification model 'resnet1'",
        ),
        (
            (
                "{source: builtin, name: resnet18-digits-64}",
                "{source: checkpoint, name: resnet18, checkpoint: gone.pt}",
            ),
            "gone.pt",
        ),
        (
            ("{kind: digits, image_size: 64}", "{kind: imagefolder, root: /nonexistent/images}"),
            "data.root: folder not found: /nonexistent/images",
        ),
        (("benchmark:", "benchmark:\n  batch_sizes: [0]"), "benchmark.batch_sizes: batch size must be >= 1, got 0"),
    ],
)
@pytest.mark.slow
def test_bad_input_exits_2_with_a_message_and_no_traceback(change, expected, tmp_path):
    old, new = change
    text = BASE + "benchmark:\n  threads: 1\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text.replace(old, new, 1))
    result = greencompress("run", str(path), "--output", str(tmp_path / "runs"))
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "bad.yaml" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing started


@pytest.mark.slow
def test_unreadable_image_folder_exits_2_without_traceback(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)  # no class folders, no images
    path = tmp_path / "r.yaml"
    path.write_text(BASE.replace("{kind: digits, image_size: 64}", "{kind: imagefolder, root: images, image_size: 32}"))
    result = greencompress("run", str(path), "--output", str(tmp_path / "runs"))
    assert result.returncode == 2  # refused before any work, by the layout check
    assert "data.eval_split:" in result.stderr and "has no class folders" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "runs").exists()

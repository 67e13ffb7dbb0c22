"""Plugins: a package outside greencompress registers a technique, a runtime and a meter through entry points.

The package is the worked example of docs/extending.md, built from that page's code blocks, so the
documentation is what is tested. It is put on the path with its own `.dist-info` (entry points
included), as `pip install` would leave it, and run in a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, make_image_folder, write_tiny_recipe

EXTENDING = REPO / "docs" / "extending.md"


def install_toys(site: Path) -> dict:
    """Write the example package and its entry points under `site`; returns the environment that sees it."""
    text = EXTENDING.read_text()
    module = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    entry_points = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    (site / "greencompress_toys").mkdir(parents=True)
    (site / "greencompress_toys" / "__init__.py").write_text(module)
    info = site / "greencompress_toys-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: greencompress-toys\nVersion: 0.1\n")
    # pyproject's [project.entry-points."group"] tables are entry_points.txt's [group] sections, values unquoted.
    sections = re.sub(r'\[project\.entry-points\."([^"]+)"\]', r"[\1]", entry_points)
    (info / "entry_points.txt").write_text(re.sub(r'= "([^"]+)"', r"= \1", sections))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def greencompress(environment: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "greencompress", *args],
        capture_output=True,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=600,
    )


@pytest.mark.slow
def test_plugins_lists_what_an_installed_package_registers(tmp_path):
    result = greencompress(install_toys(tmp_path / "site"), "plugins")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if len(line.split()) > 2}
    for name, reference in (
        ("round_weights", "greencompress_toys:RoundWeights"),
        ("onnxruntime-unoptimized", "greencompress_toys:UNOPTIMIZED"),
        ("wall-clock", "greencompress_toys:WALL_CLOCK"),
    ):
        assert "greencompress-toys" in lines[name] and reference in lines[name], lines.get(name)
    assert (
        "greencompress" in lines["prune"] and "greencompress" in lines["openvino"] and "greencompress" in lines["rapl"]
    )


@pytest.mark.slow
def test_a_recipe_uses_a_plugin_technique_runtime_and_meter_end_to_end(tmp_path):
    environment = install_toys(tmp_path / "site")
    recipe = write_tiny_recipe(tmp_path, make_image_folder(tmp_path / "images"))
    text = recipe.read_text().replace(
        "  - quantize: {calibration_samples: 12}",
        "  - round_weights: {decimals: 2}\n  - quantize: {calibration_samples: 12}",
    )
    text = text.replace("runtimes: [onnxruntime]", "runtimes: [onnxruntime, onnxruntime-unoptimized]")
    recipe.write_text(text.replace("energy: {idle_s: 0}", "energy: {idle_s: 0, meter: wall-clock}"))
    environment["GREENCOMPRESS_CACHE"] = str(tmp_path / "cache")
    result = greencompress(environment, "run", str(recipe), "--output", str(tmp_path / "runs"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    artifacts = {artifact["name"]: artifact for artifact in report["artifacts"]}
    rounded = artifacts["onnxruntime-unoptimized-rounded-int8"]
    assert rounded["model_techniques"] == ["round_weights"] and rounded["file_techniques"] == ["quantize"]
    assert rounded["runtime"] == "onnxruntime-unoptimized" and rounded["accuracy"]["samples"] == 12
    assert {"onnxruntime-rounded-fp32", "onnxruntime-rounded-int8", "onnxruntime-unoptimized-fp32"} <= set(artifacts)
    assert rounded["energy"]["1"]["method"] == "wall-clock" and rounded["energy"]["1"]["measured"] is False
    pairs = {(c["candidate"], c["baseline"], c["runtime"]) for c in report["comparisons"] if c["batch_size"] == 1}
    assert ("onnxruntime-unoptimized-rounded-int8", "onnxruntime-unoptimized-fp32", "onnxruntime-unoptimized") in pairs
    (stage, _) = report["stages"]
    assert stage["technique"] == "round_weights" and stage["settings"] == {"decimals": 2}
    assert 0 < stage["metrics"]["weights_changed"] <= 1 and "top1" in stage["metrics"]

    markdown = (Path(report["run_dir"]) / "report.md").read_text()
    assert "`round_weights` (decimals=2)" in markdown and "of the weights changed" in markdown
    assert "less wall time" in markdown or "MORE wall time" in markdown or "no wall time difference" in markdown
    assert "energy saved" not in markdown


MLP = """
from torch import nn


def mlp(num_classes=3):
    return nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, num_classes))
"""


def write_wine_table(folder: Path) -> Path:
    """scikit-learn's bundled wine data (178 rows, 13 features, 3 cultivars), standardised, a third held out as
    `test`; a small MLP trained on the rest (a second of full-batch Adam) saved beside it."""
    import torch
    from sklearn.datasets import load_wine

    wine = load_wine()
    features = (wine.data - wine.data.mean(axis=0)) / wine.data.std(axis=0)
    split = ["test" if index % 3 == 0 else "train" for index in range(len(features))]
    columns = [name.replace("/", "_") for name in wine.feature_names]
    lines = [",".join([*columns, "label", "split"])]
    lines += [
        ",".join([*(f"{value:.6f}" for value in row), str(wine.target_names[label]), part])
        for row, label, part in zip(features, wine.target, split)
    ]
    (folder / "wine.csv").write_text("\n".join(lines) + "\n")
    (folder / "mlp.py").write_text(MLP)
    namespace = {}
    exec(MLP, namespace)
    torch.manual_seed(0)
    model = namespace["mlp"]()
    train = torch.tensor(features[[part == "train" for part in split]], dtype=torch.float32)
    labels = torch.tensor(wine.target[[part == "train" for part in split]])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(train), labels).backward()
        optimizer.step()
    torch.save(model.state_dict(), folder / "mlp.pt")
    recipe = folder / "wine.yaml"
    recipe.write_text(
        "name: wine\n"
        "model: {source: callable, architecture: mlp.py:mlp, checkpoint: mlp.pt, "
        "task: tabular-classification}\n"
        "data: {kind: table, path: wine.csv, eval_split: test, batch_size: 32}\n"
        "stages:\n  - quantize: {calibration_samples: 64}\n"
        "benchmark: {batch_sizes: [1], window_s: 0.05, min_iterations: 3, windows: 2, max_windows: 2, "
        "warmup_iterations: 1, threads: 1, runtimes: [onnxruntime], bf16: false}\n"
        "energy: {idle_s: 0}\n"
    )
    return recipe


@pytest.mark.slow
def test_a_plugin_task_compresses_a_table_classifier_end_to_end(tmp_path):
    environment = install_toys(tmp_path / "site")
    recipe = write_wine_table(tmp_path)
    environment["GREENCOMPRESS_CACHE"] = str(tmp_path / "cache")
    listed = greencompress(environment, "plugins")
    assert "tabular-classification" in listed.stdout and "greencompress_toys:TabularClassification" in listed.stdout
    result = greencompress(environment, "run", str(recipe), "--output", str(tmp_path / "runs"), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)

    assert report["provenance"]["task"] == "tabular-classification"
    assert "table wine.csv: 178 rows, 13 features, 3 classes" in report["data"]
    artifacts = {artifact["name"]: artifact for artifact in report["artifacts"]}
    assert {"torch-fp32", "onnxruntime-fp32", "onnxruntime-int8"} <= set(artifacts)
    fp32, int8 = artifacts["onnxruntime-fp32"]["accuracy"], artifacts["onnxruntime-int8"]["accuracy"]
    assert fp32["samples"] == 60 and fp32["top1"] > 0.9  # a real classifier of real wines, on rows it never saw
    assert abs(int8["top1"] - fp32["top1"]) <= 0.05
    # Its deploy folders hold what the task writes, not an image model's preprocessing.
    deployed = Path(report["run_dir"]) / report["deploy_folders"]["model_int8.onnx"]
    assert json.loads((deployed / "features.json").read_text())["features"][0] == "alcohol"
    assert not (deployed / "preprocessing.json").exists() and "features.json" in (deployed / "README.md").read_text()
    # A data kind no task reads is named with the kinds that are read.
    recipe.write_text(recipe.read_text().replace("kind: table", "kind: tabel"))
    refused = greencompress(environment, "validate", str(recipe))
    assert refused.returncode == 2 and "data.kind" in refused.stderr and "'table'" in refused.stderr


@pytest.mark.slow
def test_a_plugin_that_fails_to_load_is_named_and_the_rest_still_work(tmp_path):
    environment = install_toys(tmp_path / "site")
    (tmp_path / "site" / "greencompress_toys" / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    result = greencompress(environment, "plugins")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "could not be loaded" in result.stderr and "broken on purpose" in result.stderr
    assert "prune" in result.stdout and "round_weights" not in result.stdout

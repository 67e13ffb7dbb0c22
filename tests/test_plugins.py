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
    return subprocess.run([sys.executable, "-m", "greencompress", *args], capture_output=True, text=True,
                          env=environment, stdin=subprocess.DEVNULL, timeout=600)


@pytest.mark.slow
def test_plugins_lists_what_an_installed_package_registers(tmp_path):
    result = greencompress(install_toys(tmp_path / "site"), "plugins")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if len(line.split()) > 2}
    for name, reference in (("round_weights", "greencompress_toys:RoundWeights"),
                            ("onnxruntime-unoptimized", "greencompress_toys:UNOPTIMIZED"),
                            ("wall-clock", "greencompress_toys:WALL_CLOCK")):
        assert "greencompress-toys" in lines[name] and reference in lines[name], lines.get(name)
    assert "greencompress" in lines["prune"] and "greencompress" in lines["openvino"] and "greencompress" in lines["rapl"]


@pytest.mark.slow
def test_a_recipe_uses_a_plugin_technique_runtime_and_meter_end_to_end(tmp_path):
    environment = install_toys(tmp_path / "site")
    recipe = write_tiny_recipe(tmp_path, make_image_folder(tmp_path / "images"))
    text = recipe.read_text().replace("  - quantize: {calibration_samples: 12}",
                                      "  - round_weights: {decimals: 2}\n  - quantize: {calibration_samples: 12}")
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


@pytest.mark.slow
def test_a_plugin_that_fails_to_load_is_named_and_the_rest_still_work(tmp_path):
    environment = install_toys(tmp_path / "site")
    (tmp_path / "site" / "greencompress_toys" / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    result = greencompress(environment, "plugins")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "could not be loaded" in result.stderr and "broken on purpose" in result.stderr
    assert "prune" in result.stdout and "round_weights" not in result.stdout

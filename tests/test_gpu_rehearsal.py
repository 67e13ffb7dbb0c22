"""The GPU path rehearsed end to end on the CPU, with the GPU faked at its lowest boundaries (tests/fake_gpu.py).

No GPU has been lent to this project's CI, and a lent one comes with minutes of time: what runs there
must run the first time. These run the same code (`greencompress run` on `benchmark.device: cuda`,
and scripts/gpu_check.py whole) with pynvml, torch.cuda and the CUDA kernels faked, so that everything
but the hardware is checked here.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import REPO, write_tiny_recipe
from tests.fake_gpu import CpuStandIn, pretend_a_gpu
from tests.test_gpu import gpu_check_module

pytestmark = pytest.mark.slow  # end-to-end: runs the pipeline or the command line


class SleepingLoad:
    """The matrix-multiply load's interface: `seconds` of 'work', one operation per millisecond."""

    def __init__(self, torch):
        pass

    def __call__(self, seconds: float, pulse_s: float | None = None) -> int:
        import time

        time.sleep(seconds)
        return max(1, int(seconds * 1e3))


def test_the_gpu_check_runs_whole_on_a_fake_gpu(tmp_path, monkeypatch):
    check = gpu_check_module()
    gpu = pretend_a_gpu(monkeypatch, bf16=False)
    durations = replace(
        check.Durations().scaled(0.02),
        counter_load_s=0.5,
        update_period_probe_s=0.3,
        power_reading_s=0.1,
        rest_s=0.3,
        after_load_s=0.5,
        model_windows=2,
        model_reserve_s=0.0,
    )
    monkeypatch.setattr(check, "DURATIONS", durations)
    monkeypatch.setattr(check, "MODELS", (("resnet18", 10, 32),))
    monkeypatch.setattr(check, "BATCH_SIZES", (1,))
    monkeypatch.setattr(check, "MatmulLoad", SleepingLoad)

    assert check.main(["--out", str(tmp_path), "--budget-s", "600"]) == 0

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["gpu"].startswith(f"NVIDIA H100 80GB HBM3 ({gpu.uuid}), driver 560.35.03")
    assert report["meter"] == "nvml-counter"
    failed = {name: part for name, part in report.items() if isinstance(part, dict) and "failed" in part}
    assert not failed
    steady = report["counter_vs_sampled"]["steady"]
    assert steady["sampled_over_counter"] == pytest.approx(1.0, abs=0.15)  # constant 300 W: both see it
    windows = report["window_lengths"]
    assert 0.0015 <= windows["counter_update_period_s"] <= 0.02  # the fake's 2 ms (longer if polling was late)
    assert windows["0.1s"]["mean_w"] == pytest.approx(300, rel=0.1)
    assert report["idle"]["rest_w"] == pytest.approx(300, rel=0.1) and report["idle"]["settle_s"] == 0.0
    rows = report["models"]
    assert [row["variant"] for row in rows] == ["fp32", "fp16", "fp32-compiled"]  # this GPU has no BF16
    assert CpuStandIn.made == [("fp32", False), ("fp16", False), ("fp32", True)]  # the runners the GPU would build
    assert all(row["method"] == "nvml-counter" and row["j_ratio"] for row in rows)
    assert rows[0]["j_ratio"] == [1.0, 1.0, 1.0] and rows[0]["telemetry_last_window"]["gpu0"]["sm_clock_mhz"] == 1755
    limits = report["power_limits"]
    assert [row["limit_w"] for row in limits["limits"]] == [200, 365, 530, 700]
    assert gpu.limit_mw == 700_000 and gpu.history[-1] == 700_000  # the original limit restored
    assert "onnxruntime-gpu" in report["onnxruntime_gpu"]["skipped"]  # ONNX Runtime's CPU build, as on the GPU image
    assert not list(tmp_path.glob("*.onnx"))  # only the two report files come back from a lent machine's $OUT
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| resnet18 | 32 | 1 | fp16 |" in table and "restored to 700 W" in table


def test_without_root_the_check_s_power_limits_say_why_and_change_nothing():
    from tests.fake_gpu import FakeGpu, fake_pynvml, with_power_limits

    check = gpu_check_module()
    fake = FakeGpu("H100", 300_000, True)
    nvml = with_power_limits(fake_pynvml([fake]), allowed=False)
    gpu = check.Gpu(nvml, fake, SleepingLoad(None), meter=None, bf16=False)
    result = check.check_power_limits(gpu, check.Durations().scaled(0.01))
    assert result == {
        "skipped": "changing the power limit needs root; measured at the current 700 W",
        "current_limit_w": 700.0,
    }
    assert fake.history == [] and fake.limit_mw == 700_000


def test_a_gpu_run_reports_measured_joules_the_gpu_and_each_window_s_clock(image_folder, tmp_path, monkeypatch):
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.folder import create_run_dir
    from greencompress.pipeline.recipe import load_recipe

    gpu = pretend_a_gpu(monkeypatch, bf16=False)
    path = write_tiny_recipe(tmp_path, image_folder)
    text = path.read_text().replace(
        "  - quantize: {calibration_samples: 12}", "  - prune: {method: structured, ratio: 0.5}"
    )
    text = text.replace(
        "runtimes: [onnxruntime], bf16: false",
        "device: cuda, runtimes: auto, batch_sizes: [2], cooldown_s: 0.01, gpu_power_limits: [300]",
    )
    path.write_text(text.replace("batch_sizes: [1, 2], ", ""))
    recipe = load_recipe(path)
    assert recipe.benchmark.runtimes == ["torch-cuda"]  # ONNX Runtime's CPU build has no GPU provider

    report = run(
        recipe, create_run_dir(recipe, tmp_path / "runs"), recipe_path=path, shared_cache=tmp_path / "stage-cache"
    )
    saved = json.loads((report.run_dir / "report.json").read_text())

    assert saved["energy_meter"]["method"] == "nvml-counter" and saved["energy_meter"]["measured"] is True
    assert saved["environment"]["device"] == "cuda:0"
    identity = saved["environment"]["gpu"]["gpu0"]
    assert identity["uuid"] == gpu.uuid and identity["name"] == "NVIDIA H100 80GB HBM3"
    assert identity["driver"] == "560.35.03" and identity["power_limit_w"] == 700.0
    artifacts = {artifact["name"]: artifact for artifact in saved["artifacts"]}
    assert set(artifacts) == {"torch-cuda-fp32", "torch-cuda-fp16", "torch-cuda-pruned-fp32", "torch-cuda-pruned-fp16"}
    for artifact in artifacts.values():
        energy = artifact["energy"]["2"]
        assert energy["method"] == "nvml-counter" and energy["measured"] is True
        assert energy["window_telemetry"] and all(
            window["gpu0"]["sm_clock_mhz"] == 1755 and window["gpu0"]["temperature_c"] == 71
            for window in energy["window_telemetry"]
        )
    # The same-runtime rule: PyTorch on the GPU is compared with itself only.
    pairs = {(c["baseline"], c["candidate"]) for c in saved["comparisons"]}
    assert ("torch-cuda-fp32", "torch-cuda-pruned-fp32") in pairs and ("torch-cuda-fp32", "torch-cuda-fp16") in pairs
    assert all(name.startswith("torch-cuda-") for pair in pairs for name in pair)
    assert {row["limit_w"] for row in saved["power_limit_sweep"]} == {300}
    assert gpu.history == [300_000, 700_000]  # the sweep's limit, then the original restored
    markdown = (report.run_dir / "report.md").read_text()
    assert (
        f"Models ran on **NVIDIA H100 80GB HBM3** (gpu0, cuda:0: {gpu.uuid}, driver 560.35.03, 80 GiB, "
        "power limit 700 W, SM clock up to 1980 MHz)"
    ) in markdown
    assert "clocks LIMITED in 8 of 8 windows (sw_power_cap, sw_thermal_slowdown)" in markdown
    figures = markdown.split("## Results")[1].split("## Energy")[0]
    assert "J/inf (nvml-counter)" in figures and "estimate" not in figures.lower()  # measured, and said so
    html = (report.run_dir / "report.html").read_text()
    assert "Models ran on <b>NVIDIA H100 80GB HBM3</b>" in html


def test_bench_and_measure_on_a_gpu_read_nvml_and_sweep_power_limits(monkeypatch):
    import greencompress
    from greencompress.bench import bench
    from greencompress.measure.benchmark import BenchmarkSpec
    from greencompress.measure.energy import EnergySpec

    gpu = pretend_a_gpu(monkeypatch)
    spec = BenchmarkSpec(
        device="cuda", batch_sizes=[2], window_s=0.05, windows=2, max_windows=2, warmup_iterations=1, threads=1
    )
    result = bench("resnet18", 32, spec, EnergySpec(idle_s=0), power_limits_w=[300, 500])
    assert result.runtime == "torch-cuda" and result.meter.method == "nvml-counter"
    assert [(limit.asked_w, limit.applied) for limit, _ in result.by_power_limit] == [(300, True), (500, True)]
    assert gpu.history == [300_000, 700_000, 500_000, 700_000]  # each limit, then the original again
    assert all(b.energy.measured and b.energy.window_telemetry for b in result.benchmarks)
    with greencompress.energy.measure(device="cuda") as measured:
        sum(range(10**5))
    assert measured.method == "nvml-counter" and measured.measured and "gpu0" in measured.by_domain


# Packages greencompress depends on that the lent GPU machines' image lacks and scripts/gpu_wheels.py does not carry.
NOT_ON_THE_GPU_IMAGE = ("openvino", "optuna", "sqlalchemy", "alembic", "colorlog", "psycopg")

BLOCKER = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {absent!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on the GPU image)")
sys.meta_path.insert(0, Absent())
"""


def test_the_gpu_session_s_commands_need_nothing_the_lent_machines_lack(tmp_path):
    """Without a GPU both stop with exit 2 and the reason; a missing import would stop them with a traceback."""
    import os
    import subprocess
    import sys

    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(absent=set(NOT_ON_THE_GPU_IMAGE)))
    environment = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    for command in (
        ["scripts/gpu_check.py", "--out", str(tmp_path)],
        ["-m", "greencompress", "run", "recipes/resnet_prune_gpu.yaml", "--output", str(tmp_path)],
    ):
        done = subprocess.run(
            [sys.executable, *command], cwd=REPO, env=environment, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert "no CUDA GPU" in done.stderr or "no runtime can run on cuda" in done.stderr


def test_the_gpu_session_script_names_only_files_that_exist():
    script = (REPO / "scripts" / "gpu_session.sh").read_text()
    for relative in re.findall(r"(?:scripts|tests|recipes)/[\w./-]+\.(?:py|yaml)", script):
        assert (REPO / relative).is_file(), relative
    assert Path(REPO / ".gitignore").read_text().count(".whl/") == 1

"""run(recipe) -> RunReport: load, export, compress, measure, report. Owns the run folder.

Order: the model and data are loaded; the FP32 model is exported to ONNX and checked for parity;
the recipe's stages run on that export; then every artifact (PyTorch eager FP32 as the as-trained
reference, ONNX Runtime FP32, the compressed ones) is evaluated and benchmarked the same way.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

from greencompress.compress.quantize import quantize_onnx
from greencompress.data import DataSplits, batches, load_data
from greencompress.environment import environment
from greencompress.export import EXPORTER, check_parity, export_onnx
from greencompress.measure.accuracy import evaluate
from greencompress.measure.energy import select_meter
from greencompress.measure.energy.carbon import carbon_settings
from greencompress.measure.benchmark import IdleBaseline, benchmark_interleaved, measure_idle, window_duration_s
from greencompress.models import load_model
from greencompress.recipe import QuantizeConfig, Recipe, recipe_to_dict
from greencompress.report.markdown import render_markdown
from greencompress.report.schema import ArtifactResult, RunReport, compare_same_runtime
from greencompress.runtime import Artifact, OnnxRuntimeRunner, TorchRunner, set_threads

log = logging.getLogger(__name__)


def create_run_dir(recipe: Recipe, output_dir: Path | None = None) -> Path:
    """A new, empty `<output>/<recipe name>/<UTC timestamp>` folder."""
    base = Path(output_dir or recipe.output.dir) / recipe.name
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir, attempt = base / stamp, 1
    while run_dir.exists():  # two runs in the same second
        attempt += 1
        run_dir = base / f"{stamp}-{attempt}"
    run_dir.mkdir(parents=True)
    return run_dir


def run(recipe: Recipe, run_dir: Path, recipe_path: Path | None = None, progress=None) -> RunReport:
    """Execute a validated recipe into `run_dir` and return the report (also written as report.json/.md)."""
    _save_recipe(recipe, run_dir, recipe_path)
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    set_threads(recipe.benchmark.threads)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")

    log.info("stage load: data (%s) and model (%s)", recipe.data.kind, recipe.model.source)
    data = load_data(recipe.data, recipe.seed)
    loaded = load_model(recipe.model, progress)
    model = loaded.module
    macs, params = _macs_and_params(model, recipe.input_shape)

    log.info("stage export: FP32 model to ONNX (%s, opset %d)", EXPORTER, recipe.export.opset)
    fp32_path = export_onnx(model, recipe.input_shape, run_dir / "model_fp32.onnx", recipe.export.opset)
    parity = check_parity(
        TorchRunner(model), OnnxRuntimeRunner(fp32_path, recipe.benchmark.threads),
        batches(data.eval, recipe.data.batch_size, limit=recipe.export.parity_samples),
        recipe.export.parity_max_abs_diff, recipe.export.parity_min_top1_agreement,
    )
    log.info("parity: max |diff| %.3g, top-1 agreement %.2f%% on %d inputs",
             parity.max_abs_diff, 100 * parity.top1_agreement, parity.samples)

    checkpoint = loaded.provenance.get("path") or loaded.provenance.get("checkpoint")
    artifacts = [
        Artifact("torch-fp32", "torch", "fp32", Path(checkpoint) if checkpoint else None, params, macs),
        Artifact("onnxruntime-fp32", "onnxruntime", "fp32", fp32_path, params, macs),
    ]
    stage_records = []
    for stage in recipe.stages:
        log.info("stage %s", stage.technique)
        artifact, record = _STAGES[stage.technique](stage.config, artifacts[1], run_dir, data, recipe, progress)
        artifacts.append(artifact)
        stage_records.append(record)

    meter, meter_reason = select_meter(recipe.energy)
    runners = {artifact.name: _runner(artifact, model, recipe) for artifact in artifacts}
    accuracies = {name: _accuracy(name, runner, data, recipe, progress) for name, runner in runners.items()}
    log.info("measuring idle power for %.0f s (meter: %s)", max(recipe.energy.idle_s, meter.min_window_s), meter.method)
    idle = measure_idle(meter, recipe.energy.idle_s)
    benchmarks = _benchmark(runners, data, recipe, meter, idle, progress)
    results = [ArtifactResult(artifact, accuracies[artifact.name], tuple(benchmarks[artifact.name]))
               for artifact in artifacts]
    report = RunReport(
        name=recipe.name,
        created_utc=created,
        run_dir=run_dir,
        recipe=recipe_to_dict(recipe),
        environment=environment(recipe.benchmark.threads),
        provenance=loaded.provenance,
        data=data.description,
        export={"exporter": EXPORTER, "opset": recipe.export.opset, "torch_version": torch.__version__,
                "parity": asdict(parity)},
        stages=stage_records,
        energy_meter=meter.describe(),
        energy_meter_reason=meter_reason,
        idle=idle,
        carbon=carbon_settings(recipe.energy.region, recipe.energy.carbon_intensity, recipe.energy.pue,
                               recipe.energy.electricity_price_per_kwh, recipe.energy.currency),
        artifacts=results,
        comparisons=compare_same_runtime(results),
        notes=[] if data.labelled else ["Synthetic inputs: no accuracy is reported, only latency and energy."],
    )
    report.write_json(run_dir / "report.json")
    (run_dir / "report.md").write_text(render_markdown(report))
    log.info("report written to %s", run_dir)
    return report


def _quantize_stage(config: QuantizeConfig, fp32: Artifact, run_dir: Path, data: DataSplits, recipe: Recipe,
                    progress) -> tuple[Artifact, dict]:
    result = quantize_onnx(fp32.path, run_dir / "model_int8.onnx", config, data.calibration,
                           recipe.data.batch_size, progress)
    # Quantization keeps the graph: same parameters and MACs, now in int8.
    artifact = replace(fp32, name="onnxruntime-int8", precision="int8", path=result.path)
    settings = {key: value for key, value in asdict(result).items() if key != "path"}
    return artifact, {"technique": "quantize", "settings": settings}


# Techniques that operate on the exported FP32 ONNX model. Pruning and fine-tuning, which act on
# the PyTorch model before export, will run before this point.
_STAGES = {"quantize": _quantize_stage}


def _runner(artifact: Artifact, model, recipe: Recipe):
    if artifact.runtime == "torch":
        return TorchRunner(model)
    return OnnxRuntimeRunner(artifact.path, recipe.benchmark.threads)


def _accuracy(name: str, runner, data: DataSplits, recipe: Recipe, progress):
    if not data.labelled:
        return None
    accuracy = evaluate(runner, data.eval, recipe.data.batch_size, progress, f"evaluating {name}")
    log.info("%s: top-1 %.2f%%, top-5 %.2f%% on %d samples", name, 100 * accuracy.top1, 100 * accuracy.top5,
             accuracy.samples)
    return accuracy


def _benchmark(runners: dict, data: DataSplits, recipe: Recipe, meter, idle: IdleBaseline, progress) -> dict:
    """Every runner at every batch size, on the same real inputs, interleaved (measure/benchmark.py)."""
    sample = next(batches(data.eval, max(recipe.benchmark.batch_sizes)))[0]
    results: dict[str, list] = {name: [] for name in runners}
    for batch_size in recipe.benchmark.batch_sizes:
        # Real evaluation images, repeated when the split is smaller than the batch.
        inputs = np.ascontiguousarray(np.resize(sample, (batch_size, *sample.shape[1:])))
        log.info("benchmarking batch size %d: %d-%d windows of %.1f s per artifact, interleaved", batch_size,
                 recipe.benchmark.windows, recipe.benchmark.max_windows, window_duration_s(recipe.benchmark, meter))
        for name, bench in benchmark_interleaved(runners, inputs, recipe.benchmark, meter, idle, progress).items():
            results[name].append(bench)
            if bench.energy.noisy:
                log.warning("%s at batch size %d: energy still varies by +-%.1f%% after %d windows (noisy)",
                            name, batch_size, 100 * bench.energy.relative_ci95, bench.energy.windows)
    return results


def _macs_and_params(model, input_shape) -> tuple[int, int]:
    import torch_pruning

    macs, params = torch_pruning.utils.count_ops_and_params(model, torch.zeros(1, *input_shape))
    return int(macs), int(params)


def _save_recipe(recipe: Recipe, run_dir: Path, recipe_path: Path | None) -> None:
    if recipe_path is not None:
        shutil.copyfile(recipe_path, run_dir / "recipe.yaml")
    # The validated recipe with every default filled in and overrides applied: enough to reproduce the run.
    (run_dir / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))

"""run(recipe) -> RunReport: load, export, compress, measure, report. Owns the run folder.

Order: the model and data are loaded; the FP32 model is exported to ONNX and checked for parity;
the recipe's stages run on that export; then every artifact (PyTorch eager FP32 as the as-trained
reference, ONNX Runtime FP32, the compressed ones) is evaluated and benchmarked the same way.
Every finished stage is recorded (stages.py), so `run --resume` continues where a run stopped; a
Ctrl-C during measurement still writes a report of what finished, marked incomplete.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

from greencompress.compress.quantize import quantize_onnx
from greencompress.data import DataSplits, batches, load_data
from greencompress.environment import environment
from greencompress.export import EXPORTER, check_parity, export_onnx
from greencompress.files import write_text_atomic
from greencompress.gates import evaluate_gates
from greencompress.measure.accuracy import Accuracy, evaluate
from greencompress.measure.benchmark import IdleBaseline, benchmark_interleaved, measure_idle, window_duration_s
from greencompress.measure.energy import select_meter
from greencompress.measure.energy.carbon import carbon_settings
from greencompress.models import load_model
from greencompress.recipe import QuantizeConfig, Recipe, recipe_to_dict
from greencompress.report import write_reports
from greencompress.report.schema import (
    ArtifactResult,
    RunReport,
    benchmark_from_dict,
    benchmark_to_dict,
    compare_same_runtime,
)
from greencompress.runtime import Artifact, OnnxRuntimeRunner, TorchRunner, set_threads
from greencompress.stages import StageStore, stage_key
from greencompress.zoo import cache_dir

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


def run(recipe: Recipe, run_dir: Path, recipe_path: Path | None = None, progress=None,
        shared_cache: Path | None = None) -> RunReport:
    """Execute a validated recipe into `run_dir` (new, or one to resume) and return the report.

    The report is also written as report.json, report.md and report.html. `shared_cache` (default:
    `<cache>/stages`) holds export and quantization outputs that later runs with the same inputs reuse.
    """
    store = StageStore(run_dir, shared_cache or cache_dir() / "stages")
    started = store.finished("run", stage_key(recipe_to_dict(recipe)))
    if started is None:
        _save_recipe(recipe, run_dir, recipe_path)
        started = {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        store.save("run", stage_key(recipe_to_dict(recipe)), started)
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    set_threads(recipe.benchmark.threads)
    finished_stages: list[str] = []
    try:
        return _run_stages(recipe, run_dir, store, started["created_utc"], finished_stages, progress)
    except KeyboardInterrupt:
        if not (run_dir / "report.json").exists():
            write_text_atomic(run_dir / "report.md", _interrupted_note(recipe, run_dir, finished_stages))
        raise


def _run_stages(recipe: Recipe, run_dir: Path, store: StageStore, created: str, finished: list[str],
                progress) -> RunReport:
    meter, meter_reason = select_meter(recipe.energy)  # first: a meter the recipe names but lacks stops here
    log.info("energy meter: %s (%s)", meter.method, meter_reason)
    log.info("stage load: data (%s) and model (%s)", recipe.data.kind, recipe.model.source)
    data = load_data(recipe.data, recipe.seed)
    loaded = load_model(recipe.model, progress)
    model = loaded.module
    macs, params = _macs_and_params(model, recipe.input_shape)
    finished.append("load")

    export_key = stage_key("export", recipe.model.model_dump(mode="json"), loaded.provenance.get("sha256"),
                           recipe.input_shape, recipe.export.model_dump(), torch.__version__)
    export = store.finished("export", export_key, files=("model_fp32.onnx",))
    if export is None:
        export = _export_stage(model, data, recipe, run_dir)
        store.save("export", export_key, export, files=("model_fp32.onnx",), share=True)
    finished.append("export")

    checkpoint = loaded.provenance.get("path") or loaded.provenance.get("checkpoint")
    artifacts = [
        Artifact.of_file("torch-fp32", "torch", "fp32", Path(checkpoint) if checkpoint else None, params, macs),
        Artifact.of_file("onnxruntime-fp32", "onnxruntime", "fp32", run_dir / "model_fp32.onnx", params, macs),
    ]
    stage_records, upstream_key = [], export_key
    for stage in recipe.stages:
        handler, output = _STAGES[stage.technique]
        key = stage_key(stage.technique, upstream_key, stage.config.model_dump(), recipe.data.model_dump(mode="json"),
                        recipe.seed)
        record = store.finished(stage.technique, key, files=(output,))
        if record is None:
            log.info("stage %s", stage.technique)
            record = handler(stage.config, artifacts[1], run_dir / output, data, recipe, progress)
            store.save(stage.technique, key, record, files=(output,), share=True)
        artifacts.append(Artifact.of_file(record["artifact"], "onnxruntime", record["precision"], run_dir / output,
                                          params, macs))  # quantization keeps the graph's parameters and MACs
        stage_records.append({"technique": stage.technique, "settings": record["settings"]})
        finished.append(stage.technique)
        upstream_key = key

    measure_key = stage_key("measure", upstream_key, recipe.data.model_dump(mode="json"), recipe.seed,
                            recipe.benchmark.model_dump(), recipe.energy.model_dump())
    runners = {artifact.name: _runner(artifact, model, recipe) for artifact in artifacts}
    accuracies = store.finished("accuracy", measure_key)
    if accuracies is None:
        accuracies = {name: _accuracy(name, runner, data, recipe, progress) for name, runner in runners.items()}
        accuracies = {name: asdict(value) if value else None for name, value in accuracies.items()}
        store.save("accuracy", measure_key, accuracies)
    finished.append("accuracy")

    idle_record = store.finished("idle", measure_key)
    if idle_record is None:
        log.info("measuring idle power for %.0f s (meter: %s)", max(recipe.energy.idle_s, meter.min_window_s),
                 meter.method)
        idle_record = asdict(measure_idle(meter, recipe.energy.idle_s))
        store.save("idle", measure_key, idle_record)
    idle = IdleBaseline(**idle_record)

    def build_report(benchmarks: dict[str, list], complete: bool) -> RunReport:
        results = [ArtifactResult(a, Accuracy(**accuracies[a.name]) if accuracies[a.name] else None,
                                  tuple(benchmarks[a.name])) for a in artifacts]
        comparisons = compare_same_runtime(results)
        notes = [] if data.labelled else ["Synthetic inputs: no accuracy is reported, only latency and energy."]
        if not complete:
            notes.append(f"INCOMPLETE: interrupted during benchmarking; resume with: greencompress run --resume {run_dir}")
        return RunReport(
            name=recipe.name, created_utc=created, run_dir=run_dir, recipe=recipe_to_dict(recipe),
            environment=environment(recipe.benchmark.threads), provenance=loaded.provenance, data=data.description,
            export={"exporter": EXPORTER, "opset": recipe.export.opset, "torch_version": torch.__version__,
                    "parity": export["parity"]},
            stages=stage_records, energy_meter=meter.describe(), energy_meter_reason=meter_reason, idle=idle,
            carbon=carbon_settings(recipe.energy.region, recipe.energy.carbon_intensity, recipe.energy.pue,
                                   recipe.energy.electricity_price_per_kwh, recipe.energy.currency),
            artifacts=results, comparisons=comparisons, notes=notes,
            gates=tuple(evaluate_gates(recipe.gates, comparisons)), complete=complete,
        )

    benchmarks: dict[str, list] = {artifact.name: [] for artifact in artifacts}
    try:
        _benchmark(runners, data, recipe, meter, idle, store, measure_key, benchmarks, progress)
    except KeyboardInterrupt:
        if any(benchmarks.values()):
            write_reports(build_report(benchmarks, complete=False), run_dir)
            log.warning("interrupted: report of the finished batch sizes written to %s, marked incomplete", run_dir)
        raise
    report = build_report(benchmarks, complete=True)
    write_reports(report, run_dir)
    log.info("report written to %s", run_dir)
    return report


def _export_stage(model, data: DataSplits, recipe: Recipe, run_dir: Path) -> dict:
    log.info("stage export: FP32 model to ONNX (%s, opset %d)", EXPORTER, recipe.export.opset)
    temporary = run_dir / ".model_fp32.onnx.tmp"
    export_onnx(model, recipe.input_shape, temporary, recipe.export.opset)
    parity = check_parity(
        TorchRunner(model), OnnxRuntimeRunner(temporary, recipe.benchmark.threads),
        batches(data.eval, recipe.data.batch_size, limit=recipe.export.parity_samples),
        recipe.export.parity_max_abs_diff, recipe.export.parity_min_top1_agreement,
    )
    temporary.replace(run_dir / "model_fp32.onnx")  # only a model that passed parity gets its real name
    log.info("parity: max |diff| %.3g, top-1 agreement %.2f%% on %d inputs",
             parity.max_abs_diff, 100 * parity.top1_agreement, parity.samples)
    return {"parity": asdict(parity)}


def _quantize_stage(config: QuantizeConfig, fp32: Artifact, output: Path, data: DataSplits, recipe: Recipe,
                    progress) -> dict:
    temporary = output.with_name(f".{output.name}.tmp")
    result = quantize_onnx(fp32.path, temporary, config, data.calibration, recipe.data.batch_size, progress)
    temporary.replace(output)
    settings = {key: value for key, value in asdict(result).items() if key != "path"}
    return {"artifact": "onnxruntime-int8", "precision": "int8", "settings": settings}


# Techniques that operate on the exported FP32 ONNX model, with the file each writes. Pruning and
# fine-tuning, which act on the PyTorch model before export, will run before the export stage.
_STAGES = {"quantize": (_quantize_stage, "model_int8.onnx")}


def _runner(artifact: Artifact, model, recipe: Recipe):
    if artifact.runtime == "torch":
        return TorchRunner(model)
    return OnnxRuntimeRunner(artifact.path, recipe.benchmark.threads)


def _accuracy(name: str, runner, data: DataSplits, recipe: Recipe, progress) -> Accuracy | None:
    if not data.labelled:
        return None
    accuracy = evaluate(runner, data.eval, recipe.data.batch_size, progress, f"evaluating {name}")
    log.info("%s: top-1 %.2f%%, top-5 %.2f%% on %d samples", name, 100 * accuracy.top1, 100 * accuracy.top5,
             accuracy.samples)
    return accuracy


def _benchmark(runners: dict, data: DataSplits, recipe: Recipe, meter, idle: IdleBaseline, store: StageStore,
               measure_key: str, results: dict[str, list], progress) -> None:
    """Every runner at every batch size, on the same real inputs, interleaved; appends to `results` as it goes."""
    sample = next(batches(data.eval, max(recipe.benchmark.batch_sizes)))[0]
    for batch_size in recipe.benchmark.batch_sizes:
        stage = f"benchmark-batch{batch_size}"
        record = store.finished(stage, measure_key)
        if record is None:
            # Real evaluation images, repeated when the split is smaller than the batch.
            inputs = np.ascontiguousarray(np.resize(sample, (batch_size, *sample.shape[1:])))
            log.info("benchmarking batch size %d: %d-%d windows of %.1f s per artifact, interleaved", batch_size,
                     recipe.benchmark.windows, recipe.benchmark.max_windows, window_duration_s(recipe.benchmark, meter))
            measured = benchmark_interleaved(runners, inputs, recipe.benchmark, meter, idle, progress)
            record = {name: benchmark_to_dict(bench) for name, bench in measured.items()}
            store.save(stage, measure_key, record)
        for name, bench in record.items():
            bench = benchmark_from_dict(bench)
            results[name].append(bench)
            if bench.energy.noisy:
                log.warning("%s at batch size %d: energy still varies by +-%.1f%% after %d windows (noisy)",
                            name, batch_size, 100 * bench.energy.relative_ci95, bench.energy.windows)


def _macs_and_params(model, input_shape) -> tuple[int, int]:
    import torch_pruning

    macs, params = torch_pruning.utils.count_ops_and_params(model, torch.zeros(1, *input_shape))
    return int(macs), int(params)


def _save_recipe(recipe: Recipe, run_dir: Path, recipe_path: Path | None) -> None:
    if recipe_path is not None:
        shutil.copyfile(recipe_path, run_dir / "recipe.yaml")
    # The validated recipe with every default filled in and overrides applied: enough to reproduce the run.
    write_text_atomic(run_dir / "recipe.resolved.yaml", yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))


def _interrupted_note(recipe: Recipe, run_dir: Path, finished: list[str]) -> str:
    done = ", ".join(finished) or "none"
    return (f"# greencompress report: {recipe.name} (INCOMPLETE)\n\nInterrupted before any measurement finished. "
            f"Finished stages: {done}.\n\nResume with: `greencompress run --resume {run_dir}`\n")

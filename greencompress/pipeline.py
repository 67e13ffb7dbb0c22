"""run(recipe) -> RunReport: load, export, compress, measure, report. Owns the run folder.

Order: the model and data are loaded; the FP32 model is exported to ONNX and checked for parity;
the recipe's stages run on that export; then every artifact (PyTorch eager FP32 as the as-trained
reference, ONNX Runtime FP32, the compressed ones) is evaluated and benchmarked the same way.
Every finished stage is recorded (stages.py), so `run --resume` continues where a run stopped; a
Ctrl-C during measurement still writes a report of what finished, marked incomplete.
"""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

from greencompress import distributed
from greencompress.cache import cache_dir
from greencompress.compress.finetune import finetune
from greencompress.compress.prune import prune_structured, prune_unstructured, replay_pruning
from greencompress.compress.qat import quantization_aware_finetune
from greencompress.compress.quantize import quantize_onnx, resolve_reduce_range
from greencompress.data import DataSplits, batches, load_data
from greencompress.environment import environment
from greencompress.export import EXPORTER, check_parity, export_onnx
from greencompress.files import write_bytes_atomic, write_text_atomic
from greencompress.gates import check_energy_gate_is_measurable, evaluate_gates
from greencompress.measure.accuracy import Accuracy, evaluate
from greencompress.measure.benchmark import IdleBaseline, benchmark_interleaved, measure_idle, window_duration_s
from greencompress.measure.energy import select_meter
from greencompress.measure.energy.carbon import carbon_settings
from greencompress.measure.load import BUSY_SHARE
from greencompress.models import load_model
from greencompress.recipe import FinetuneConfig, PruneConfig, QuantizeConfig, Recipe, recipe_to_dict
from greencompress.report import write_reports
from greencompress.report.schema import (
    ArtifactResult,
    RunReport,
    benchmark_from_dict,
    benchmark_to_dict,
    compare_same_runtime,
)
from greencompress.runtime import Artifact, OnnxRuntimeRunner, OpenVinoRunner, TorchRunner, set_threads
from greencompress.stages import StageStore, stage_key

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
    finally:
        distributed.share({"kind": "done"})  # under torchrun, the other ranks may stop waiting


def _run_stages(recipe: Recipe, run_dir: Path, store: StageStore, created: str, finished: list[str],
                progress) -> RunReport:
    meter, meter_reason = select_meter(recipe.energy)  # first: a meter the recipe names but lacks stops here
    log.info("energy meter: %s (%s)", meter.method, meter_reason)
    check_energy_gate_is_measurable(recipe.gates, meter.describe().measured, meter.method)
    log.info("stage load: data (%s) and model (%s)", recipe.data.kind, recipe.model.source)
    data = load_data(recipe.data, recipe.seed)
    loaded = load_model(recipe.model, progress)
    model = loaded.module
    macs, params = _macs_and_params(model, recipe.input_shape)
    finished.append("load")

    load_key = stage_key("load", recipe.model.model_dump(mode="json"), loaded.provenance.get("sha256"))
    export_key = export_key_original = stage_key("export", load_key, recipe.input_shape, recipe.export.model_dump())
    export = store.finished("export", export_key, files=("model_fp32.onnx",))
    if export is None:
        export = _export_stage(model, data, recipe, run_dir / "model_fp32.onnx")
        store.save("export", export_key, export, files=("model_fp32.onnx",), share=True)
    finished.append("export")

    checkpoint = loaded.provenance.get("path") or loaded.provenance.get("checkpoint")
    artifacts = [
        Artifact.of_file("torch-fp32", "torch", "fp32", Path(checkpoint) if checkpoint else None, params, macs),
        Artifact.of_file("onnxruntime-fp32", "onnxruntime", "fp32", run_dir / "model_fp32.onnx", params, macs),
    ]
    stage_records: list[dict] = []

    # Stages on the PyTorch model (prune, finetune), each from the last one's output.
    compressed, upstream_key, tags = model, load_key, []
    torch_stages = [stage for stage in recipe.stages if stage.technique in _TORCH_STAGES]
    for index, stage in enumerate(torch_stages, start=1):
        name, output = f"{index}-{stage.technique}", f"model_{index}_{stage.technique}.pt"
        # Training on N processes shuffles differently from one: the process count is part of the key.
        key = stage_key(name, upstream_key, stage.config.model_dump(mode="json"), recipe.data.model_dump(mode="json"),
                        recipe.seed, distributed.world_size())
        record = store.finished(name, key, files=(output,))
        if record is None:
            log.info("stage %s", stage.technique)
            compressed, record = _TORCH_STAGES[stage.technique](
                stage.config, compressed, model, data, recipe, run_dir / "stages" / name, progress)
            record["metrics"].update(_torch_metrics(compressed, data, recipe, progress, f"evaluating after {name}"))
            _save_torch_model(compressed, run_dir / output)
            store.save(name, key, record, files=(output,), share=True)
        else:
            compressed = _load_torch_model(recipe, run_dir / output)
        stage_records.append({"technique": stage.technique, "settings": stage.config.model_dump(mode="json"),
                              "metrics": record["metrics"]})
        finished.append(name)
        upstream_key = key
        tags.append(_TAGS[stage.technique])

    onnx_input = artifacts[1]
    if torch_stages:
        tag = "-".join(dict.fromkeys(tags))
        export_key = stage_key("export-compressed", upstream_key, recipe.input_shape, recipe.export.model_dump())
        if store.finished("export-compressed", export_key, files=("model_compressed_fp32.onnx",)) is None:
            compressed_export = _export_stage(compressed, data, recipe, run_dir / "model_compressed_fp32.onnx")
            store.save("export-compressed", export_key, compressed_export, files=("model_compressed_fp32.onnx",),
                       share=True)
        compressed_macs, compressed_params = _macs_and_params(compressed, recipe.input_shape)
        onnx_input = Artifact.of_file(f"onnxruntime-{tag}-fp32", "onnxruntime", "fp32",
                                      run_dir / "model_compressed_fp32.onnx", compressed_params, compressed_macs)
        artifacts.append(onnx_input)
        upstream_key = export_key
    else:
        tag = ""

    # Stages on the exported model (quantize). After prune/finetune they run on the original export too,
    # so the report shows what pruning buys on top of them at the same precision.
    inputs = [(artifacts[1], "", export_key_original, model)]
    if torch_stages:
        inputs.append((onnx_input, tag, upstream_key, compressed))
    for stage in recipe.stages:
        if stage.technique in _TORCH_STAGES:
            continue
        handler, output = _STAGES[stage.technique]
        stage_metrics = {}
        for source, source_tag, source_key, source_model in inputs:
            stage_name = f"{stage.technique}-{source_tag}" if source_tag else stage.technique
            file_name = output.replace("model_", "model_compressed_") if source_tag else output
            key = stage_key(stage.technique, source_key, _resolved(stage.config), recipe.data.model_dump(mode="json"),
                            recipe.seed)
            record = store.finished(stage_name, key, files=(file_name,))
            if record is None:
                log.info("stage %s (%s)", stage.technique, source.name)
                record = handler(stage.config, source, source_model, run_dir / file_name, data, recipe,
                                 run_dir / "stages" / stage_name, progress)
                store.save(stage_name, key, record, files=(file_name,), share=True)
            if record.get("metrics"):
                stage_metrics[source.name] = record["metrics"]
            name = f"onnxruntime-{source_tag}-{record['precision']}" if source_tag else record["artifact"]
            # Quantization keeps the graph: the parameters and MACs of the model it was made from.
            artifacts.append(Artifact.of_file(name, "onnxruntime", record["precision"], run_dir / file_name,
                                              source.params, source.macs))
            upstream_key = stage_key(upstream_key, key)
        stage_records.append({"technique": stage.technique, "settings": record["settings"],
                              **({"metrics": {"by_source": stage_metrics}} if stage_metrics else {})})
        finished.append(stage.technique)

    # The same ONNX files on every other runtime the recipe lists, named after it: openvino-int8, ...
    for other in recipe.benchmark.runtimes[1:]:
        artifacts += [Artifact(a.name.replace("onnxruntime", other, 1), other, a.precision, a.path, a.size_bytes,
                               a.params, a.macs) for a in artifacts if a.runtime == "onnxruntime"]

    measure_key = stage_key("measure", upstream_key, recipe.data.model_dump(mode="json"), recipe.seed,
                            recipe.benchmark.model_dump(), recipe.energy.model_dump())
    runners = {artifact.name: _runner(artifact, model, recipe) for artifact in artifacts}
    accuracies = store.finished("accuracy", measure_key)
    if accuracies is None:
        accuracies = {name: _accuracy(name, runner, data, recipe, progress) for name, runner in runners.items()}
        accuracies = {name: asdict(value) if value else None for name, value in accuracies.items()}
        store.save("accuracy", measure_key, accuracies)
    finished.append("accuracy")

    # Idle power is measured before benchmarking (again on resume) and after it: drift shows in the report.
    idle_checks = [IdleBaseline(**check) for check in (store.finished("idle", measure_key) or {}).get("checks", [])]

    def build_report(benchmarks: dict[str, list], complete: bool) -> RunReport:
        results = [ArtifactResult(a, Accuracy(**accuracies[a.name]) if accuracies[a.name] else None,
                                  tuple(benchmarks[a.name])) for a in artifacts]
        comparisons = compare_same_runtime(results)
        notes = [] if data.labelled else ["Synthetic inputs: no accuracy is reported, only latency and energy."]
        if not complete:
            notes.append(f"INCOMPLETE: interrupted during benchmarking; resume with: greencompress run --resume {run_dir}")
        return RunReport(
            name=recipe.name, created_utc=created, run_dir=run_dir, recipe=recipe_to_dict(recipe),
            environment=environment(recipe.benchmark.threads, recipe.benchmark.allow_spinning),
            provenance=loaded.provenance, data=data.description,
            export={"exporter": EXPORTER, "opset": recipe.export.opset, "torch_version": torch.__version__,
                    "parity": export["parity"]},
            stages=stage_records, energy_meter=meter.describe(), energy_meter_reason=meter_reason,
            idle=idle_checks[0], idle_checks=tuple(idle_checks),
            carbon=carbon_settings(recipe.energy.region, recipe.energy.carbon_intensity, recipe.energy.pue,
                                   recipe.energy.electricity_price_per_kwh, recipe.energy.currency),
            artifacts=results, comparisons=comparisons, notes=notes,
            gates=tuple(evaluate_gates(recipe.gates, comparisons)), complete=complete,
        )

    benchmarks: dict[str, list] = {artifact.name: [] for artifact in artifacts}
    try:
        _benchmark(runners, data, recipe, meter, idle_checks, store, measure_key, benchmarks, progress)
    except KeyboardInterrupt:
        if any(benchmarks.values()):
            write_reports(build_report(benchmarks, complete=False), run_dir)
            log.warning("interrupted: report of the finished batch sizes written to %s, marked incomplete", run_dir)
        raise
    report = build_report(benchmarks, complete=True)
    write_reports(report, run_dir)
    log.info("report written to %s", run_dir)
    return report


def _resolved(config) -> dict:
    """A stage's settings as this machine will apply them: `auto` values decided, so a cache key cannot outlive them."""
    settings = config.model_dump(mode="json")
    if isinstance(config, QuantizeConfig):
        settings["reduce_range"] = resolve_reduce_range(config.reduce_range)[0]
    return settings


def _export_stage(model, data: DataSplits, recipe: Recipe, output: Path) -> dict:
    log.info("stage export: %s to ONNX (%s, opset %d)", output.name, EXPORTER, recipe.export.opset)
    temporary = output.with_name(f".{output.name}.tmp")
    export_onnx(model, recipe.input_shape, temporary, recipe.export.opset)
    parity = check_parity(
        TorchRunner(model), OnnxRuntimeRunner(temporary, recipe.benchmark.threads),
        batches(data.eval, recipe.data.batch_size, limit=recipe.export.parity_samples),
        recipe.export.parity_max_abs_diff, recipe.export.parity_min_top1_agreement,
    )
    temporary.replace(output)  # only a model that passed parity gets its real name
    log.info("parity: max |diff| %.3g, top-1 agreement %.2f%% on %d inputs",
             parity.max_abs_diff, 100 * parity.top1_agreement, parity.samples)
    return {"parity": asdict(parity)}


def _quantize_stage(config: QuantizeConfig, fp32: Artifact, source_model, output: Path, data: DataSplits,
                    recipe: Recipe, work_dir: Path, progress) -> dict:
    temporary = output.with_name(f".{output.name}.tmp")
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path, metrics, input_ranges = fp32.path, {}, None
        if config.qat is not None:
            # Same export, parity check and ONNX Runtime quantization as post-training int8, on weights
            # fine-tuned under int8 rounding: the graph, and so the speed, is the same.
            reduce_range, _ = resolve_reduce_range(config.reduce_range)
            log.info("quantization-aware fine-tuning of %s (%d epochs)", fp32.name, config.qat.epochs)
            trained = _fine_tune("qat", source_model, config.qat, None, data, recipe, work_dir, progress, reduce_range)
            fp32_path = Path(scratch) / "qat_fp32.onnx"
            exported = _export_stage(trained.model, data, recipe, fp32_path)
            metrics = {"qat_history": trained.history, "qat_best_epoch": trained.best_epoch,
                       "qat_resumed_from_epoch": trained.resumed_from_epoch, "qat_export_parity": exported["parity"]}
            input_ranges = trained.input_ranges
        result = quantize_onnx(fp32_path, temporary, config, data.calibration, recipe.data.batch_size, progress,
                               input_ranges)
    temporary.replace(output)
    settings = {key: value for key, value in asdict(result).items() if key != "path"}
    settings["quantization_aware_finetuning"] = config.qat is not None
    return {"artifact": "onnxruntime-int8", "precision": "int8", "settings": settings, "metrics": metrics}


# Techniques that operate on the exported FP32 ONNX model, with the file each writes.
_STAGES = {"quantize": (_quantize_stage, "model_int8.onnx")}


def _prune_stage(config: PruneConfig, model, original, data: DataSplits, recipe: Recipe, work_dir: Path,
                 progress) -> tuple[object, dict]:
    train_between = _trainer_between_steps(config.finetune_between, original, data, recipe, work_dir, progress)
    if config.method == "unstructured":
        result = prune_unstructured(model, config, train_between)
        return result.model, {"metrics": {
            "total_sparsity": result.total_sparsity, "layer_sparsity": result.layer_sparsity,
            "zipped_bytes_before": result.zipped_bytes_before, "zipped_bytes_after": result.zipped_bytes_after,
            "note": "zeros are not skipped by dense runtimes: expect a smaller compressed file, not lower latency",
        }}
    result = prune_structured(model, recipe.input_shape, config,
                              batches(data.calibration, recipe.data.batch_size, limit=recipe.data.batch_size),
                              train_between)
    # Saved with the weights, so the pruned architecture can be rebuilt from the original one.
    result.model._greencompress_pruning_history = [*getattr(model, "_greencompress_pruning_history", []),
                                                   *result.pruning_history]
    return result.model, {"metrics": {
        "ratio": result.ratio, "macs_before": result.macs_before, "macs_after": result.macs_after,
        "params_before": result.params_before, "params_after": result.params_after,
        "untouched_layers": result.untouched_layers,
    }}


def _trainer_between_steps(config: FinetuneConfig | None, original, data: DataSplits, recipe: Recipe,
                           work_dir: Path, progress):
    """`train(model, step) -> model` for fine-tuning between iterative pruning steps, or None."""
    if config is None:
        return None

    def train(pruned, step: int):
        log.info("prune: fine-tuning after step %d (%d epochs)", step, config.epochs)
        return _fine_tune("finetune", pruned, config, original, data, recipe, work_dir / f"after-step-{step}",
                          progress).model

    return train


def _finetune_stage(config: FinetuneConfig, model, original, data: DataSplits, recipe: Recipe, work_dir: Path,
                    progress) -> tuple[object, dict]:
    result = _fine_tune("finetune", model, config, original, data, recipe, work_dir, progress)
    return result.model, {"metrics": {"history": result.history, "best_epoch": result.best_epoch,
                                      "resumed_from_epoch": result.resumed_from_epoch,
                                      "processes": distributed.world_size()}}


def _fine_tune(kind: str, model, config: FinetuneConfig, original, data: DataSplits, recipe: Recipe, work_dir: Path,
               progress, reduce_range: bool = False):
    """Fine-tuning (`finetune`) or quantization-aware fine-tuning (`qat`); under torchrun, with every rank.

    The other ranks wait in `serve_fine_tuning`: they are sent the model (pruning history and weights)
    and the settings, then train alongside this process.
    """
    distributed.share({"kind": kind, "pruning_history": getattr(model, "_greencompress_pruning_history", []),
                       "state_dict": model.state_dict(), "config": config.model_dump(mode="json"),
                       "reduce_range": reduce_range})
    return _train(kind, model, config, original, data, recipe, work_dir, progress, reduce_range)


def _train(kind: str, model, config: FinetuneConfig, original, data: DataSplits, recipe: Recipe, work_dir: Path,
           progress, reduce_range: bool):
    # Fine-tuning distils from the original model; QAT from the float model it starts from. Decided here, so
    # every torchrun rank picks the same teacher.
    teacher = None
    if config.distillation is not None:
        teacher = model if kind == "qat" else original
    with distributed.threads_per_process():
        if kind == "qat":
            return quantization_aware_finetune(model, data.train, config, reduce_range, recipe.seed, work_dir,
                                               teacher=teacher, progress=progress)
        return finetune(model, data.train, config, recipe.seed, work_dir, teacher=teacher, progress=progress)


def serve_fine_tuning(recipe: Recipe) -> None:
    """The loop of a torchrun rank other than 0: train along with rank 0 whenever it fine-tunes, write nothing."""
    torch.manual_seed(recipe.seed)
    set_threads(recipe.benchmark.threads)
    data, original = load_data(recipe.data, recipe.seed), None
    while (command := distributed.share(None))["kind"] != "done":
        original = original if original is not None else load_model(recipe.model).module
        model = _rebuild(copy.deepcopy(original), recipe, command["pruning_history"], command["state_dict"])
        with tempfile.TemporaryDirectory() as scratch:  # checkpoints are rank 0's to keep
            _train(command["kind"], model, FinetuneConfig(**command["config"]), original, data, recipe,
                   Path(scratch), None, command["reduce_range"])


# Techniques that change the PyTorch model before export, and the word an artifact's name takes from each.
_TORCH_STAGES = {"prune": _prune_stage, "finetune": _finetune_stage}
_TAGS = {"prune": "pruned", "finetune": "finetuned"}


def _torch_metrics(model, data: DataSplits, recipe: Recipe, progress, label: str) -> dict:
    """What a PyTorch-level stage left: accuracy on the evaluation split, MACs, parameters, weights size."""
    macs, params = _macs_and_params(model, recipe.input_shape)
    metrics = {"macs": macs, "params": params,
               "state_dict_bytes": sum(t.numel() * t.element_size() for t in model.state_dict().values())}
    if data.labelled:
        accuracy = evaluate(TorchRunner(model), data.eval, recipe.data.batch_size, progress, label)
        metrics.update(top1=accuracy.top1, top5=accuracy.top5)
    return metrics


def _save_torch_model(model, path: Path) -> None:
    """The model as its pruning history plus weights: reloadable with weights_only=True (no pickled code)."""
    import io

    history = getattr(model, "_greencompress_pruning_history", [])
    buffer = io.BytesIO()
    torch.save({"pruning_history": history, "state_dict": model.state_dict()}, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def _load_torch_model(recipe: Recipe, path: Path):
    """Rebuild a saved stage output: the original architecture, the pruning replayed, then the weights."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return _rebuild(load_model(recipe.model).module, recipe, state["pruning_history"], state["state_dict"])


def _rebuild(model, recipe: Recipe, pruning_history: list, state_dict: dict):
    """`model` (the original architecture, changed in place) pruned as recorded and given these weights."""
    if pruning_history:
        replay_pruning(model, recipe.input_shape, pruning_history)
    model.load_state_dict(state_dict)
    model._greencompress_pruning_history = pruning_history
    return model.eval()


def _runner(artifact: Artifact, model, recipe: Recipe):
    if artifact.runtime == "torch":
        return TorchRunner(model)
    if artifact.runtime == "openvino":
        return OpenVinoRunner(artifact.path, recipe.benchmark.threads)
    return OnnxRuntimeRunner(artifact.path, recipe.benchmark.threads, recipe.benchmark.allow_spinning)


def _accuracy(name: str, runner, data: DataSplits, recipe: Recipe, progress) -> Accuracy | None:
    if not data.labelled:
        return None
    accuracy = evaluate(runner, data.eval, recipe.data.batch_size, progress, f"evaluating {name}")
    log.info("%s: top-1 %.2f%%, top-5 %.2f%% on %d samples", name, 100 * accuracy.top1, 100 * accuracy.top5,
             accuracy.samples)
    return accuracy


def _benchmark(runners: dict, data: DataSplits, recipe: Recipe, meter, idle_checks: list[IdleBaseline],
               store: StageStore, measure_key: str, results: dict[str, list], progress) -> None:
    """Every runner at every batch size, on the same real inputs, interleaved; appends to `results` as it goes.

    Batch sizes finished by an interrupted run are read back; the rest are measured between an idle
    check before them and one after them, both appended to `idle_checks` (and saved).
    """
    sample = next(batches(data.eval, max(recipe.benchmark.batch_sizes)))[0]
    records = {size: store.finished(f"benchmark-batch{size}", measure_key) for size in recipe.benchmark.batch_sizes}
    remaining = [size for size, record in records.items() if record is None]

    def check_idle(when: str) -> IdleBaseline:
        log.info("measuring idle power %s for %.0f s (meter: %s)", when, max(recipe.energy.idle_s, meter.min_window_s),
                 meter.method)
        idle_checks.append(measure_idle(meter, recipe.energy.idle_s, when))
        store.save("idle", measure_key, {"checks": [asdict(check) for check in idle_checks]})
        return idle_checks[-1]

    idle = check_idle("before benchmarking" if not idle_checks else "on resume") if remaining else None
    for batch_size, record in records.items():
        if record is None:
            # Real evaluation images, repeated when the split is smaller than the batch.
            inputs = np.ascontiguousarray(np.resize(sample, (batch_size, *sample.shape[1:])))
            log.info("benchmarking batch size %d: %d-%d windows of %.1f s per artifact, interleaved", batch_size,
                     recipe.benchmark.windows, recipe.benchmark.max_windows, window_duration_s(recipe.benchmark, meter))
            measured = benchmark_interleaved(runners, inputs, recipe.benchmark, meter, idle, progress)
            record = {name: benchmark_to_dict(bench) for name, bench in measured.items()}
            store.save(f"benchmark-batch{batch_size}", measure_key, record)
        for name, bench in record.items():
            bench = benchmark_from_dict(bench)
            results[name].append(bench)
            if bench.energy.noisy:
                log.warning("%s at batch size %d: energy still varies by +-%.1f%% after %d windows (noisy)",
                            name, batch_size, 100 * bench.energy.relative_ci95, bench.energy.windows)
            if bench.energy.busy_windows:
                log.warning("%s at batch size %d: %d of %d windows ran while other processes used over %.0f%% of "
                            "the machine", name, batch_size, bench.energy.busy_windows, bench.energy.windows,
                            100 * BUSY_SHARE)
    if remaining:
        check_idle("after the last round")


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

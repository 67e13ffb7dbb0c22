"""run(recipe) -> RunReport: prepare, make, measure, report. Owns the run folder.

Order: the recipe is prepared (pipeline/prepare.py: device, meter, model, data); the FP32 model is
exported and checked for parity, the techniques on the PyTorch model run in order and their result is
exported too, the techniques on ONNX files run on each export (pipeline/produce.py); then every artifact
(PyTorch eager FP32 as the as-trained reference, and every file on every runtime the recipe lists) is
evaluated and benchmarked the same way (pipeline/measurement.py). Every finished stage is recorded
(stages.py), so `run --resume` continues where a run stopped; a Ctrl-C during measurement still writes a
report of what finished, marked incomplete.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from greencompress.compress import distributed
from greencompress.compress.training import serve
from greencompress.core.cache import cache_dir
from greencompress.core.files import write_text_atomic
from greencompress.measure.lock import measurement_lock
from greencompress.pipeline.artifacts import Made, plan_artifacts, reduced_precisions
from greencompress.pipeline.folder import create_run_dir, interrupted_note, save_recipe
from greencompress.pipeline.measurement import accuracies, benchmark_all, saved_idle_checks, sweep_power_limits
from greencompress.pipeline.prepare import prepare
from greencompress.pipeline.produce import Producer
from greencompress.pipeline.recipe import Recipe, recipe_to_dict
from greencompress.pipeline.reporting import build_report
from greencompress.pipeline.stages import StageStore, stage_key
from greencompress.report import write_reports
from greencompress.report.schema import ArtifactResult, RunReport
from greencompress.runtimes import RUNTIMES
from greencompress.runtimes.pytorch import set_threads

__all__ = ["create_run_dir", "run", "serve_fine_tuning"]

log = logging.getLogger(__name__)


def run(
    recipe: Recipe, run_dir: Path, recipe_path: Path | None = None, progress=None, shared_cache: Path | None = None
) -> RunReport:
    """Execute a validated recipe into `run_dir` (new, or one to resume) and return the report.

    The report is also written as report.json, report.md and report.html. `shared_cache` (default:
    `<cache>/stages`) holds export and quantization outputs that later runs with the same inputs reuse.
    """
    store = StageStore(run_dir, shared_cache or cache_dir() / "stages")
    started = store.finished("run", stage_key(recipe_to_dict(recipe)))
    if started is None:
        save_recipe(recipe, run_dir, recipe_path)
        started = {"created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}
        store.save("run", stage_key(recipe_to_dict(recipe)), started)
    _seed(recipe)
    finished: list[str] = []
    try:
        producer = Producer(prepare(recipe, progress), run_dir, store, progress)
        finished = producer.finished
        made, hugging_face_folder = producer.made()
        return _measure(producer, made, hugging_face_folder, started["created_utc"])
    except KeyboardInterrupt:
        if not (run_dir / "report.json").exists():
            write_text_atomic(run_dir / "report.md", interrupted_note(recipe, run_dir, finished))
        raise
    finally:
        distributed.share({"kind": "done"})  # under torchrun, the other ranks may stop waiting


def serve_fine_tuning(recipe: Recipe) -> None:
    """The loop of a torchrun rank other than 0: train along with rank 0 whenever it fine-tunes, write nothing."""
    _seed(recipe)
    prepared = prepare(recipe)
    serve(prepared.loaded.module, prepared.data, recipe.seed, prepared.inputs)


def _seed(recipe: Recipe) -> None:
    torch.manual_seed(recipe.seed)
    np.random.seed(recipe.seed)
    set_threads(recipe.benchmark.threads)


def _measure(producer: Producer, made: list[Made], hugging_face_folder: str | None, created: str) -> RunReport:
    """Every artifact's accuracy, then its benchmarks in interleaved rounds; the reports written."""
    prepared, store, progress, run_dir = producer.prepared, producer.store, producer.progress, producer.run_dir
    recipe, meter = prepared.recipe, prepared.meter
    reduced, precision_reason = reduced_precisions(recipe.benchmark, prepared.device)
    checkpoint = prepared.loaded.provenance.get("path") or prepared.loaded.provenance.get("checkpoint")
    artifacts = plan_artifacts(
        made,
        recipe.benchmark.runtimes,
        reduced,
        Path(checkpoint) if checkpoint else None,
        "torch" if prepared.device.kind == "cpu" else "torch-cuda",
    )
    key = stage_key(
        "measure",
        [item.key for item in made],
        recipe.data.model_dump(mode="json"),
        recipe.seed,
        recipe.benchmark.model_dump(),
        recipe.energy.model_dump(),
    )
    settings = replace(recipe.benchmark.runner_settings, device_index=prepared.device.index or 0)
    runners = {
        name: RUNTIMES.get(artifact.runtime).runner(source, replace(settings, precision=artifact.precision))
        for name, (artifact, source) in artifacts.items()
    }
    accuracy = accuracies(runners, prepared.data, recipe.data.batch_size, store, key, progress, _reference(artifacts))
    producer.finished.append("accuracy")
    idle_checks = saved_idle_checks(store, key)
    benchmarks: dict[str, list] = {name: [] for name in artifacts}

    def report(lock, sweep=(), complete: bool = True) -> RunReport:
        results = [
            ArtifactResult(artifact, accuracy[name], tuple(benchmarks[name]))
            for name, (artifact, _) in artifacts.items()
        ]
        return build_report(
            prepared,
            run_dir,
            created,
            producer.records,
            producer.parity,
            results,
            idle_checks,
            precision_reason,
            hugging_face_folder,
            lock,
            sweep,
            complete,
        )

    shapes = prepared.task.workload(recipe.benchmark.batch_sizes, recipe.benchmark.sequence_lengths)
    with contextlib.ExitStack() as held:
        lock = held.enter_context(measurement_lock(f"run {recipe.name}"))  # never beside another process's windows
        try:
            benchmark_all(
                runners,
                prepared.data,
                recipe.benchmark,
                meter,
                recipe.energy.idle_s,
                store,
                key,
                benchmarks,
                idle_checks,
                progress,
                shapes,
            )
            sweep = ()
            if recipe.benchmark.gpu_power_limits:
                sweep = sweep_power_limits(
                    runners,
                    prepared.data,
                    recipe.benchmark,
                    meter,
                    recipe.energy.idle_s,
                    store,
                    key,
                    prepared.device.uuid,
                    progress,
                )
        except KeyboardInterrupt:
            if any(benchmarks.values()):
                write_reports(report(lock, complete=False), run_dir)
                log.warning("interrupted: report of the finished batch sizes written to %s, marked incomplete", run_dir)
            raise
    final = report(lock, sweep)
    write_reports(final, run_dir)
    log.info("report written to %s", run_dir)
    return final


def _reference(artifacts: dict) -> str | None:
    """The original FP32 model as trained (PyTorch): what every artifact's embeddings must agree with."""
    return next(
        (
            name
            for name, (artifact, _) in artifacts.items()
            if artifact.is_original_model and artifact.precision == "fp32" and artifact.source == "torch"
        ),
        None,
    )

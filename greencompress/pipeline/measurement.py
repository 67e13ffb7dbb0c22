"""Measuring every artifact of a run (`measure_run`): accuracy, then idle checks around interleaved benchmarks per
batch size (and sequence length).

Each finished part is recorded in the run's StageStore under the measurement key, so an
interrupted run measures only what is missing; a measurement is never taken from the shared
cache of another run.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, replace
from pathlib import Path

from greencompress.measure.accuracy import Accuracy, embedding_agreement, evaluate_with_embeddings
from greencompress.measure.benchmark import (
    Benchmark,
    BenchmarkSpec,
    IdleBaseline,
    benchmark_interleaved,
    measure_idle,
    window_duration_s,
)
from greencompress.measure.latency import shape_key, shape_words
from greencompress.measure.load import BUSY_SHARE
from greencompress.measure.lock import measurement_lock
from greencompress.models.data import DataSplits, fixed_batch
from greencompress.models.serving import Scorer, logits_only
from greencompress.pipeline.artifacts import Made, plan_artifacts, reduced_precisions
from greencompress.pipeline.produce import Producer
from greencompress.pipeline.reporting import build_report
from greencompress.pipeline.stages import StageStore, stage_key
from greencompress.report import write_reports
from greencompress.report.schema import ArtifactResult, RunReport, benchmark_from_dict, benchmark_to_dict
from greencompress.runtimes import RUNTIMES

log = logging.getLogger(__name__)


def accuracies(
    runners: dict,
    data: DataSplits,
    batch_size: int,
    store: StageStore,
    key: str,
    progress=None,
    reference: str | None = None,
    scorer: Scorer = logits_only,
) -> dict[str, Accuracy | None]:
    """Top-1/top-5 of every runner on the evaluation split (None for all without labels), its outputs scored by
    `scorer` (the task's).

    A sentence embedder's embeddings are also compared with those of `reference` (the original FP32 model as
    trained; by default the first runner), which is evaluated first.
    """
    record = store.finished("accuracy", key)
    if record is None:
        order = sorted(runners, key=lambda name: name != reference) if reference in runners else list(runners)
        record, reference = {}, None
        for name in order:
            record[name], embeddings = _accuracy(name, runners[name], data, batch_size, progress, scorer)
            if embeddings is not None:
                reference = embeddings if reference is None else reference
                cosine, neighbours, recall = embedding_agreement(embeddings, reference)
                record[name] = replace(
                    record[name], embedding_cosine=cosine, neighbour_agreement=neighbours, recall_at_10=recall
                )
                log.info(
                    "%s: embeddings agree with the FP32 model's: mean cosine %.4f, nearest neighbour kept for "
                    "%.1f%% of texts, recall@10 %.1f%%",
                    name,
                    cosine,
                    100 * neighbours,
                    100 * recall,
                )
        record = {name: asdict(record[name]) if record[name] else None for name in runners}
        store.save("accuracy", key, record)
    return {name: Accuracy(**value) if value else None for name, value in record.items()}


def _accuracy(
    name: str, runner, data: DataSplits, batch_size: int, progress, scorer: Scorer
) -> tuple[Accuracy | None, object]:
    if not data.labelled:
        return None, None
    accuracy, embeddings = evaluate_with_embeddings(
        runner, data.eval, batch_size, progress, f"evaluating {name}", scorer
    )
    log.info(
        "%s: top-1 %.2f%%, top-5 %.2f%% on %d samples", name, 100 * accuracy.top1, 100 * accuracy.top5, accuracy.samples
    )
    return accuracy, embeddings


def benchmark_all(
    runners: dict,
    data: DataSplits,
    spec: BenchmarkSpec,
    meter,
    idle_s: float,
    store: StageStore,
    key: str,
    results: dict[str, list[Benchmark]],
    idle_checks: list[IdleBaseline],
    progress=None,
    shapes: list[tuple[int, int | None]] | None = None,
) -> None:
    """Every runner at every shape of the task's workload (batch size, and sequence length for token models; by
    default every batch size), on the same real inputs, interleaved; appends to `results` as it goes.

    Shapes finished by an interrupted run are read back; the rest are measured between an idle
    check before them and one after them, both appended to `idle_checks` (and saved).
    """
    shapes = shapes or [(size, None) for size in spec.batch_sizes]
    records = {shape: store.finished("benchmark-batch{}".format(shape_key(*shape)), key) for shape in shapes}
    remaining = [size for size, record in records.items() if record is None]

    def check_idle(when: str) -> IdleBaseline:
        log.info("measuring idle power %s for %.0f s (meter: %s)", when, max(idle_s, meter.min_window_s), meter.method)
        idle_checks.append(measure_idle(meter, idle_s, when))
        store.save("idle", key, {"checks": [asdict(check) for check in idle_checks]})
        return idle_checks[-1]

    idle = check_idle("before benchmarking" if not idle_checks else "on resume") if remaining else None
    for (batch_size, length), record in records.items():
        if record is None:
            # Real evaluation samples, repeated when the split is smaller than the batch; text padded to the length.
            inputs = fixed_batch(data.eval, batch_size, length)
            log.info(
                "benchmarking batch size %d%s: %d-%d windows of %.1f s per artifact, interleaved",
                batch_size,
                f", sequence {length}" if length is not None else "",
                spec.windows,
                spec.max_windows,
                window_duration_s(spec, meter),
            )
            measured = benchmark_interleaved(runners, inputs, spec, meter, idle, progress)
            record = {
                name: benchmark_to_dict(replace(bench, latency=replace(bench.latency, sequence_length=length)))
                for name, bench in measured.items()
            }
            store.save("benchmark-batch{}".format(shape_key(batch_size, length)), key, record)
        for name, bench in record.items():
            bench = benchmark_from_dict(bench)
            results[name].append(bench)
            _warn_if_unsettled(name, shape_words(batch_size, length), bench)
    if remaining:
        check_idle("after the last round")


def saved_idle_checks(store: StageStore, key: str) -> list[IdleBaseline]:
    """The idle checks an earlier, interrupted attempt of this run measured."""
    return [IdleBaseline(**check) for check in (store.finished("idle", key) or {}).get("checks", [])]


def _warn_if_unsettled(name: str, shape: str, bench: Benchmark) -> None:
    if bench.energy.noisy:
        log.warning(
            "%s at %s: energy still varies by +-%.1f%% after %d windows (noisy)",
            name,
            shape,
            100 * bench.energy.relative_ci95,
            bench.energy.windows,
        )
    if bench.energy.busy_windows:
        log.warning(
            "%s at %s: %d of %d windows ran while other processes used over %.0f%% of the machine",
            name,
            shape,
            bench.energy.busy_windows,
            bench.energy.windows,
            100 * BUSY_SHARE,
        )


def sweep_power_limits(
    runners: dict,
    data: DataSplits,
    spec: BenchmarkSpec,
    meter,
    idle_s: float,
    store: StageStore,
    key: str,
    gpu_uuid: str,
    progress=None,
    nvml=None,
) -> tuple[dict, ...]:
    """Every runner at every batch size again under each of `spec.gpu_power_limits`, the original limit restored.

    One row per limit, artifact and batch size: the limit asked for, whether it was applied (and why
    not), and J/inference with its interval and latency p50 measured under it.
    """
    from greencompress.measure.energy.power_limits import gpu_power_limit
    from greencompress.pipeline.stages import stage_key

    if nvml is None:
        import pynvml as nvml

        nvml.nvmlInit()
    handle = nvml.nvmlDeviceGetHandleByUUID(gpu_uuid.encode() if isinstance(gpu_uuid, str) else gpu_uuid)
    rows = []
    for watts in spec.gpu_power_limits:
        results: dict[str, list[Benchmark]] = {name: [] for name in runners}
        with gpu_power_limit(nvml, handle, watts) as limit:
            log.info("GPU power limit %g W: %s", watts, "applied" if limit.applied else f"not applied ({limit.reason})")
            benchmark_all(
                runners, data, spec, meter, idle_s, store, stage_key(key, "power-limit", watts), results, [], progress
            )
        rows += [
            {
                "limit_w": watts,
                "applied": limit.applied,
                "in_force_w": limit.in_force_w,
                "reason": limit.reason,
                "artifact": name,
                "batch_size": bench.latency.batch_size,
                "j_per_inference": bench.joules_per_inference,
                "ci95_j": bench.energy.ci95_j,
                "p50_ms": bench.latency.p50_ms,
                "method": bench.energy.method,
            }
            for name, benches in results.items()
            for bench in benches
        ]
    return tuple(rows)


def measure_run(producer: Producer, made: list[Made], hugging_face_folder: str | None, created: str) -> RunReport:
    """Every artifact the producer made on every runtime that runs it: accuracy, then benchmarks in interleaved rounds
    under the machine's measurement lock; the reports written into the run folder and returned."""
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
    accuracy = accuracies(
        runners, prepared.data, recipe.data.batch_size, store, key, progress, _reference(artifacts), prepared.scorer
    )
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
            producer.deploy_folders,
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

"""The RunReport of a run, built from explicit values: the prepared run, what it made and what it measured."""

from __future__ import annotations

from pathlib import Path

import torch

from greencompress.measure.energy.carbon import carbon_settings
from greencompress.measure.environment import environment
from greencompress.pipeline.gates import evaluate_gates
from greencompress.pipeline.prepare import Prepared
from greencompress.pipeline.recipe import recipe_to_dict
from greencompress.report.schema import ArtifactResult, RunReport, StageRecord, compare_same_runtime
from greencompress.runtimes.export import exporter_of


def build_report(
    prepared: Prepared,
    run_dir: Path,
    created: str,
    records: list[StageRecord],
    parity: dict,
    results: list[ArtifactResult],
    idle_checks: list,
    precision_reason: str,
    hugging_face_folder: str | None = None,
    lock=None,
    sweep: tuple[dict, ...] = (),
    complete: bool = True,
    deploy_folders: dict[str, str] | None = None,
) -> RunReport:
    """Everything one run measured. `precision_reason`: why these precisions were measured; `hugging_face_folder`:
    where the compressed transformer was saved, or why not; `lock`: the measurement lock held while benchmarking;
    `sweep`: rows of a GPU power-limit sweep; `deploy_folders`: each ONNX file's deployable folder."""
    recipe, meter = prepared.recipe, prepared.meter
    comparisons = compare_same_runtime(results)
    notes = [] if prepared.data.labelled else ["Synthetic inputs: no accuracy is reported, only latency and energy."]
    notes.append(precision_reason + ".")
    if workload := prepared.task.workload_note(recipe.benchmark.sequence_lengths):
        notes.append(workload)
    if hugging_face_folder:
        notes.append(f"Compressed transformer: {hugging_face_folder}.")
    if not complete:
        notes.append(f"INCOMPLETE: interrupted during benchmarking; resume with: greencompress run --resume {run_dir}")
    return RunReport(
        name=recipe.name,
        created_utc=created,
        run_dir=run_dir,
        recipe=recipe_to_dict(recipe),
        environment={
            **environment(
                recipe.benchmark.threads,
                recipe.benchmark.allow_spinning,
                prepared.device.torch_name,
                meter.identity() if hasattr(meter, "identity") else None,
            ),
            **({"measurement_lock": lock.to_dict()} if lock else {}),
        },
        provenance={**prepared.loaded.provenance, **({"head": prepared.head} if prepared.head else {})},
        data=prepared.data.description,
        export={
            **dict(zip(("exporter", "opset"), exporter_of(prepared.inputs, recipe.export.opset))),
            "torch_version": torch.__version__,
            "parity": parity,
        },
        stages=records,
        energy_meter=meter.describe(),
        energy_meter_reason=prepared.meter_reason,
        idle=idle_checks[0],
        idle_checks=tuple(idle_checks),
        carbon=carbon_settings(
            recipe.energy.region,
            recipe.energy.carbon_intensity,
            recipe.energy.pue,
            recipe.energy.electricity_price_per_kwh,
            recipe.energy.currency,
        ),
        artifacts=results,
        comparisons=comparisons,
        notes=notes,
        gates=tuple(evaluate_gates(recipe.gates, comparisons, results)),
        complete=complete,
        power_limit_sweep=sweep,
        deploy_folders=dict(deploy_folders or {}),
    )

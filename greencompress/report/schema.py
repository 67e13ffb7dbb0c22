"""RunReport: everything a run measured, and its JSON form (`report.json`, documented in docs/report-schema.md).

Bump SCHEMA_VERSION's major number when a field changes meaning or disappears; add fields freely.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from greencompress.files import write_text_atomic
from greencompress.measure.accuracy import Accuracy
from greencompress.measure.energy import MeterDescription
from greencompress.measure.energy.carbon import CarbonSettings, carbon_per_million
from greencompress.measure.benchmark import Benchmark, IdleBaseline
from greencompress.runtime import Artifact

SCHEMA_VERSION = "1.0"


@dataclass(frozen=True)
class ArtifactResult:
    """One artifact and what was measured on it: accuracy (None without labels) and one benchmark per batch size."""

    artifact: Artifact
    accuracy: Accuracy | None
    benchmarks: tuple[Benchmark, ...]

    def at_batch(self, batch_size: int) -> Benchmark | None:
        return next((b for b in self.benchmarks if b.latency.batch_size == batch_size), None)


@dataclass(frozen=True)
class Comparison:
    """A compressed artifact against its baseline on the same runtime, hardware and batch size."""

    baseline: str
    candidate: str
    runtime: str
    batch_size: int
    latency_p50_ratio: float  # candidate / baseline: below 1 is faster
    joules_per_inference_ratio: float
    energy_method: str
    size_ratio: float | None
    top1_delta_points: float | None  # candidate - baseline, in percentage points

    @property
    def faster(self) -> bool:
        return self.latency_p50_ratio < 1.0


def compare_same_runtime(results: list[ArtifactResult], baseline_precision: str = "fp32") -> list[Comparison]:
    """Every non-baseline artifact against the fp32 artifact of its own runtime, at each shared batch size."""
    comparisons = []
    for baseline in results:
        if baseline.artifact.precision != baseline_precision:
            continue
        for candidate in results:
            if candidate is baseline or candidate.artifact.runtime != baseline.artifact.runtime:
                continue
            for bench in candidate.benchmarks:
                reference = baseline.at_batch(bench.latency.batch_size)
                if reference is None or reference.energy.method != bench.energy.method:
                    continue
                sizes = baseline.artifact.size_bytes, candidate.artifact.size_bytes
                accuracies = baseline.accuracy, candidate.accuracy
                comparisons.append(Comparison(
                    baseline=baseline.artifact.name,
                    candidate=candidate.artifact.name,
                    runtime=candidate.artifact.runtime,
                    batch_size=bench.latency.batch_size,
                    latency_p50_ratio=bench.latency.p50_ms / reference.latency.p50_ms,
                    joules_per_inference_ratio=bench.joules_per_inference / reference.joules_per_inference,
                    energy_method=bench.energy.method,
                    size_ratio=sizes[1] / sizes[0] if all(sizes) else None,
                    top1_delta_points=(100 * (accuracies[1].top1 - accuracies[0].top1)) if all(accuracies) else None,
                ))
    return comparisons


@dataclass(frozen=True)
class RunReport:
    """The outcome of `greencompress run`: inputs, environment, stages, artifacts and comparisons."""

    name: str
    created_utc: str
    run_dir: Path
    recipe: dict
    environment: dict
    provenance: dict
    data: str
    export: dict
    stages: list[dict]
    energy_meter: MeterDescription
    energy_meter_reason: str
    idle: IdleBaseline
    carbon: CarbonSettings
    artifacts: list[ArtifactResult]
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON form: one key per section, per-batch-size figures keyed by the batch size as a string."""
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "created_utc": self.created_utc,
            "run_dir": str(self.run_dir),
            "environment": self.environment,
            "recipe": self.recipe,
            "provenance": self.provenance,
            "data": self.data,
            "export": self.export,
            "stages": self.stages,
            "energy_meter": {**asdict(self.energy_meter), "reason": self.energy_meter_reason,
                             "idle": asdict(self.idle)},
            "carbon": {**asdict(self.carbon), "basis": "total joules per inference x PUE x grid intensity"},
            "artifacts": [_artifact_dict(result, self.carbon) for result in self.artifacts],
            "comparisons": [{**asdict(c), "faster": c.faster} for c in self.comparisons],
            "notes": self.notes,
        }

    def write_json(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")


def _artifact_dict(result: ArtifactResult, carbon: CarbonSettings) -> dict:
    artifact = result.artifact
    return {
        "name": artifact.name,
        "runtime": artifact.runtime,
        "precision": artifact.precision,
        "path": str(artifact.path) if artifact.path else None,
        "size_bytes": artifact.size_bytes,
        "params": artifact.params,
        "macs": artifact.macs,
        "accuracy": asdict(result.accuracy) if result.accuracy else None,
        "latency": {str(b.latency.batch_size): asdict(b.latency) for b in result.benchmarks},
        "energy": {str(b.latency.batch_size): _energy_dict(b, carbon) for b in result.benchmarks},
    }


def _energy_dict(bench: Benchmark, carbon: CarbonSettings) -> dict:
    energy = bench.energy
    per_million = carbon_per_million(energy.joules_per_inference, carbon)
    return {
        "joules_per_inference": energy.joules_per_inference,
        "ci95_j": energy.ci95_j,
        "relative_ci95": energy.relative_ci95,
        "active_joules_per_inference": energy.active_joules_per_inference,
        "active_ci95_j": energy.active_ci95_j,
        "joules_per_inference_by_domain": energy.joules_per_inference_by_domain,
        "idle_power_w": energy.idle_power_w,
        "method": energy.method,
        "measured": energy.measured,
        "uncertainty": asdict(energy.uncertainty),
        "noisy": energy.noisy,
        "windows": energy.windows,
        "window_s": energy.window_s,
        "inferences": energy.inferences,
        "kwh_per_million_inferences": per_million.kwh_per_million,
        "g_co2e_per_million_inferences": per_million.g_co2e_per_million,
        "cost_per_million_inferences": per_million.cost_per_million,
    }

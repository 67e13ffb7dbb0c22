"""RunReport: everything a run measured, and its JSON form (`report.json`, documented in docs/report-schema.md).

Bump SCHEMA_VERSION's major number when a field changes meaning or disappears; add fields freely.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from greencompress.core.files import read_utf8, write_text_atomic
from greencompress.measure.accuracy import Accuracy
from greencompress.measure.benchmark import Benchmark, IdleBaseline, idle_drift
from greencompress.measure.energy import MeterDescription
from greencompress.measure.energy.carbon import CarbonSettings, carbon_per_million
from greencompress.measure.latency import shape_key
from greencompress.measure.load import BUSY_SHARE
from greencompress.measure.quality import QualityBudget, quality_budget
from greencompress.measure.stats import RatioInterval, paired_ratio_interval
from greencompress.runtimes.base import Artifact

SCHEMA_VERSION = "1.5"


@dataclass(frozen=True)
class GateResult:
    """One quality gate on one comparison: the budget, the value found, and whether it holds."""

    gate: str
    comparison: str
    threshold: float
    value: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class StageRecord:
    """One recipe stage as it ran: the technique, the settings it used and what it measured (technique-specific)."""

    technique: str
    settings: dict
    metrics: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ArtifactResult:
    """One artifact and what was measured on it: accuracy (None without labels) and one benchmark per batch size."""

    artifact: Artifact
    accuracy: Accuracy | None
    benchmarks: tuple[Benchmark, ...]

    def at_batch(self, batch_size: int, sequence_length: int | None = None) -> Benchmark | None:
        """The benchmark at one shape: a batch size (and, for a transformer, a sequence length)."""
        return next((b for b in self.benchmarks if b.latency.shape == (batch_size, sequence_length)), None)


@dataclass(frozen=True)
class Comparison:
    """A compressed artifact against its baseline on the same hardware and batch size.

    The `*_ratio` floats are ratios of the overall figures; the intervals pair window i of the
    candidate with window i of the baseline (the same interleaved round) and are what reports print.
    Comparisons that judge a technique stay on one runtime; a `deployment` comparison sets the
    recommended artifact against the model as the user gave it, so its runtimes may differ (both named).
    """

    baseline: str
    candidate: str
    runtime: str
    batch_size: int
    latency_p50_ratio: float  # candidate / baseline: below 1 is faster
    joules_per_inference_ratio: float
    energy_method: str
    size_ratio: float | None
    top1_delta_points: float | None  # candidate - baseline, in percentage points
    measured: bool = False  # both energy figures come from a meter; False when either is an estimate
    latency_p50: RatioInterval | None = None  # per-round ratio of window medians
    joules_per_inference: RatioInterval | None = None
    active_joules_per_inference: RatioInterval | None = None  # None where active energy was not above 0 in a window
    baseline_runtime: str | None = None  # None in reports from before it was recorded: the same as `runtime`
    deployment: bool = False  # the recommended artifact against the user's model (RunReport.decisions)
    sequence_length: int | None = None  # transformers: tokens per input; None for image models

    @property
    def faster(self) -> bool:
        return self.latency_p50_ratio < 1.0

    @property
    def runtimes(self) -> tuple[str, str]:
        """(baseline's runtime, candidate's runtime)."""
        return self.baseline_runtime or self.runtime, self.runtime


def compare_same_runtime(results: list[ArtifactResult]) -> list[Comparison]:
    """Compressed artifacts against the original model on their own runtime, at each shared batch size.

    Every artifact is compared with the original FP32 model on its runtime; an artifact of a changed
    model (pruned, fine-tuned) is also compared with the original model at its own precision (int8
    against int8), which is what pruning buys on top of quantization. Read from lineage fields.
    """
    comparisons = []
    for baseline in results:
        for candidate in results:
            if candidate is baseline or candidate.artifact.runtime != baseline.artifact.runtime:
                continue
            if not _is_baseline_for(baseline.artifact, candidate.artifact):
                continue
            for bench in candidate.benchmarks:
                reference = baseline.at_batch(*bench.latency.shape)
                if reference is not None and reference.energy.method == bench.energy.method:
                    comparisons.append(compare_pair(baseline, candidate, *bench.latency.shape))
    return comparisons


def compare_pair(
    baseline: ArtifactResult,
    candidate: ArtifactResult,
    batch_size: int,
    sequence_length: int | None = None,
    deployment: bool = False,
) -> Comparison:
    """`candidate` over `baseline` at one shape: overall ratios and intervals paired over the shared rounds."""
    bench, reference = candidate.at_batch(batch_size, sequence_length), baseline.at_batch(batch_size, sequence_length)
    sizes = baseline.artifact.size_bytes, candidate.artifact.size_bytes
    accuracies = baseline.accuracy, candidate.accuracy
    return Comparison(
        **paired_intervals(bench, reference),
        baseline=baseline.artifact.name,
        candidate=candidate.artifact.name,
        runtime=candidate.artifact.runtime,
        baseline_runtime=baseline.artifact.runtime,
        batch_size=batch_size,
        sequence_length=sequence_length,
        latency_p50_ratio=bench.latency.p50_ms / reference.latency.p50_ms,
        joules_per_inference_ratio=bench.joules_per_inference / reference.joules_per_inference,
        energy_method=bench.energy.method,
        size_ratio=sizes[1] / sizes[0] if all(sizes) else None,
        top1_delta_points=(100 * (accuracies[1].top1 - accuracies[0].top1)) if all(accuracies) else None,
        measured=bench.energy.measured and reference.energy.measured,
        deployment=deployment,
    )


def users_model(results: list[ArtifactResult], runtime: str | None) -> ArtifactResult | None:
    """The model as the user gave it: the original FP32 model on `runtime` (None: the PyTorch reference, first)."""
    originals = [
        result
        for result in results
        if result.artifact.is_original_model
        and result.artifact.precision == "fp32"
        and not result.artifact.file_techniques
    ]
    named = [result for result in originals if runtime is None or result.artifact.runtime == runtime]
    return named[0] if named else None


def _is_baseline_for(baseline: Artifact, candidate: Artifact) -> bool:
    if not baseline.is_original_model:
        return False
    if baseline.precision == "fp32" and not baseline.file_techniques:
        return True  # the original FP32 model: every other artifact on the runtime is compared with it
    return baseline.precision == candidate.precision and not candidate.is_original_model


def paired_intervals(candidate: Benchmark, baseline: Benchmark) -> dict[str, RatioInterval | None]:
    """Per-round ratios of latency p50, J/inference and active J/inference with 95% intervals (stats.py)."""
    return {
        "latency_p50": paired_ratio_interval(candidate.latency.window_p50_ms, baseline.latency.window_p50_ms),
        "joules_per_inference": paired_ratio_interval(
            candidate.energy.window_joules_per_inference, baseline.energy.window_joules_per_inference
        ),
        "active_joules_per_inference": paired_ratio_interval(
            candidate.energy.window_active_joules_per_inference, baseline.energy.window_active_joules_per_inference
        ),
    }


def interval_to_dict(interval: RatioInterval | None) -> dict | None:
    """`{ratio, ci95: [low, high], rounds, within_noise, method}`, or None where no interval exists."""
    if interval is None:
        return None
    return {
        "ratio": interval.ratio,
        "ci95": [interval.low, interval.high],
        "rounds": interval.rounds,
        "within_noise": interval.within_noise,
        "method": interval.method,
    }


def interval_from_dict(data: dict | None) -> RatioInterval | None:
    if data is None:
        return None
    return RatioInterval(
        data["ratio"], data["ci95"][0], data["ci95"][1], data["rounds"], paired=data["method"].startswith("paired")
    )


_INTERVAL_FIELDS = ("latency_p50", "joules_per_inference", "active_joules_per_inference")


def _comparison_dict(comparison: Comparison) -> dict:
    data = {key: value for key, value in asdict(comparison).items() if key not in _INTERVAL_FIELDS}
    data.update({key: interval_to_dict(getattr(comparison, key)) for key in _INTERVAL_FIELDS})
    return {**data, "faster": comparison.faster}


def _comparison_from_dict(data: dict) -> Comparison:
    plain = {key: value for key, value in data.items() if key != "faster" and key not in _INTERVAL_FIELDS}
    return Comparison(**plain, **{key: interval_from_dict(data.get(key)) for key in _INTERVAL_FIELDS})


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
    stages: list[StageRecord]
    energy_meter: MeterDescription
    energy_meter_reason: str
    idle: IdleBaseline
    carbon: CarbonSettings
    artifacts: list[ArtifactResult]
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)
    gates: tuple[GateResult, ...] = ()
    complete: bool = True  # False when the run was interrupted: what finished is reported, marked incomplete
    idle_checks: tuple[IdleBaseline, ...] = ()  # idle power before benchmarking (and on resume) and after it
    # benchmark.gpu_power_limits: per limit, artifact and batch size, what ran (measurement.sweep_power_limits)
    power_limit_sweep: tuple[dict, ...] = ()
    # Each measured ONNX file's deployable folder, relative to the run folder (pipeline/deploy.py): file -> folder
    deploy_folders: dict[str, str] = field(default_factory=dict)

    @property
    def gates_passed(self) -> bool:
        return all(gate.passed for gate in self.gates)

    @property
    def recommendations(self) -> list:
        """Where to deploy, per batch size (report/recommend.py), within the budget of the task's primary metric."""
        from greencompress.report.recommend import recommend

        return recommend(self.artifacts, self.energy_meter.measured, self.energy_meter.method, self.quality_budget)

    @property
    def quality_budget(self) -> QualityBudget:
        """What kept an artifact eligible: the task's primary metric and the recipe's limits (reports from before
        tasks were recorded are image or text classifiers, judged by top-1)."""
        from greencompress.models.tasks import task_named, task_names

        gates = self.recipe.get("gates") or {}
        task = (self.recipe.get("model") or {}).get("task") or "image-classification"
        metric = task_named(task).primary_metric if task in task_names() else "top1"
        return quality_budget(
            metric,
            gates.get("max_accuracy_drop"),
            gates.get("min_embedding_cosine"),
            gates.get("min_neighbour_agreement"),
        )

    @property
    def decisions(self) -> list[Comparison]:
        """Per batch size: the recommended deployment against the model as the user gave it, paired over rounds."""
        # benchmark.baseline: the runtime the user serves their model on today (None: PyTorch, the reference).
        user = users_model(self.artifacts, (self.recipe.get("benchmark") or {}).get("baseline"))
        by_name = {result.artifact.name: result for result in self.artifacts}
        return [
            compare_pair(user, by_name[r.artifact], r.batch_size, r.sequence_length, deployment=True)
            for r in self.recommendations
            if user is not None and user.at_batch(r.batch_size, r.sequence_length) is not None
        ]

    @property
    def idle_drift(self) -> str | None:
        return idle_drift(list(self.idle_checks))

    @property
    def busy_windows(self) -> tuple[int, int, float]:
        """(windows taken while the machine was busy, windows with a load reading, the largest other-process share)."""
        shares = [
            share
            for result in self.artifacts
            for bench in result.benchmarks
            for share in bench.energy.window_other_cpu_share
        ]
        return sum(share > BUSY_SHARE for share in shares), len(shares), max(shares, default=0.0)

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
            "stages": [asdict(stage) for stage in self.stages],
            "energy_meter": {
                **asdict(self.energy_meter),
                "reason": self.energy_meter_reason,
                "idle": asdict(self.idle),
                "idle_checks": [asdict(check) for check in self.idle_checks],
                "idle_drift": self.idle_drift,
            },
            "machine_load": dict(
                zip(("busy_windows", "windows", "max_other_cpu_share"), self.busy_windows),
                busy_share_threshold=BUSY_SHARE,
            ),
            "carbon": {**asdict(self.carbon), "basis": "total joules per inference x PUE x grid intensity"},
            "artifacts": [_artifact_dict(result, self.carbon) for result in self.artifacts],
            # The technique comparisons (same runtime), then the deployment decisions (`deployment`: true).
            "comparisons": [_comparison_dict(c) for c in (*self.comparisons, *self.decisions)],
            "recommendations": [
                {
                    **{k: v for k, v in asdict(r).items() if k != "versus_runner_up"},
                    "versus_runner_up": interval_to_dict(r.versus_runner_up),
                    "within_noise": r.within_noise,
                }
                for r in self.recommendations
            ],
            "notes": self.notes,
            "gates": [asdict(gate) for gate in self.gates],
            "complete": self.complete,
            "power_limit_sweep": list(self.power_limit_sweep),
            "deploy_folders": self.deploy_folders,
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
        "source": artifact.source,
        "model_techniques": list(artifact.model_techniques),
        "file_techniques": list(artifact.file_techniques),
        "accuracy": asdict(result.accuracy) if result.accuracy else None,
        "latency": {shape_key(*b.latency.shape): asdict(b.latency) for b in result.benchmarks},
        "energy": {shape_key(*b.latency.shape): _energy_dict(b, carbon) for b in result.benchmarks},
    }


def benchmark_to_dict(bench: Benchmark) -> dict:
    """A Benchmark as JSON-ready data (used by stage records; `benchmark_from_dict` reads it back)."""
    return {"latency": asdict(bench.latency), "energy": _energy_dict(bench)}


def benchmark_from_dict(data: dict) -> Benchmark:
    return _benchmark_from(data["latency"], data["energy"])


def _energy_dict(bench: Benchmark, carbon: CarbonSettings | None = None) -> dict:
    energy = bench.energy
    return {
        "joules_per_inference": energy.joules_per_inference,
        "wh_per_1000_inferences": energy.joules_per_inference / 3.6,  # AI Energy Score's unit (per 1,000 queries)
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
        "timeline": [list(window) for window in energy.timeline],
        "window_s": energy.window_s,
        "inferences": energy.inferences,
        "window_joules_per_inference": list(energy.window_joules_per_inference),
        "window_active_joules_per_inference": list(energy.window_active_joules_per_inference),
        "window_other_cpu_share": list(energy.window_other_cpu_share),
        "window_telemetry": list(energy.window_telemetry),
        "busy_windows": energy.busy_windows,
        **(_carbon_fields(energy.joules_per_inference, carbon) if carbon else {}),
    }


def _carbon_fields(joules_per_inference: float, carbon: CarbonSettings) -> dict:
    per_million = carbon_per_million(joules_per_inference, carbon)
    return {
        "kwh_per_million_inferences": per_million.kwh_per_million,
        "g_co2e_per_million_inferences": per_million.g_co2e_per_million,
        "cost_per_million_inferences": per_million.cost_per_million,
    }


def load_report(path: Path) -> RunReport:
    """Read a run folder's report.json (or the file itself) back into a RunReport.

    Any 1.x report loads; another major version fails with a message saying which versions this
    greencompress reads, never with a KeyError.
    """
    from greencompress.core.errors import GreencompressError

    file = path / "report.json" if path.is_dir() else path
    try:
        data = json.loads(read_utf8(file, "report", GreencompressError))
    except json.JSONDecodeError as error:
        raise GreencompressError(f"{file}: not valid JSON: {error}") from None
    version = str(data.get("schema_version", "missing"))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise GreencompressError(
            f"{file}: report schema version {version} is not readable by this greencompress, which reads "
            f"{SCHEMA_VERSION.split('.')[0]}.x; re-run the recipe (its copy is in the run folder) for a current report"
        )
    try:
        return _report_from_dict(data)
    except (KeyError, TypeError, ValueError) as error:
        raise GreencompressError(f"{file}: schema {version} report is incomplete or damaged: {error!r}") from None


def _lineage(item: dict) -> dict:
    """An artifact's lineage fields; for a 1.1 report, read from its name, the one place it was kept then."""
    if "model_techniques" in item:
        return {
            "source": item["source"],
            "model_techniques": tuple(item["model_techniques"]),
            "file_techniques": tuple(item["file_techniques"]),
        }
    words = item["name"].split("-")[1:-1]  # <runtime>-<tags...>-<precision>
    tags = {"pruned": "prune", "finetuned": "finetune"}
    return {
        "source": "torch" if item["runtime"] == "torch" else "onnx",
        "model_techniques": tuple(tags.get(word, word) for word in words),
        "file_techniques": ("quantize",) if item["precision"] == "int8" else (),
    }


def _benchmark_from(latency: dict, energy: dict) -> Benchmark:
    from greencompress.measure.benchmark import EnergyResult
    from greencompress.measure.energy import Uncertainty
    from greencompress.measure.latency import Latency

    return Benchmark(
        latency=Latency(
            **{
                **latency,
                "percentiles_ms": tuple(latency.get("percentiles_ms", ())),
                "window_p50_ms": tuple(latency.get("window_p50_ms", ())),
            }
        ),
        energy=EnergyResult(
            joules_per_inference=energy["joules_per_inference"],
            ci95_j=energy["ci95_j"],
            active_joules_per_inference=energy["active_joules_per_inference"],
            active_ci95_j=energy["active_ci95_j"],
            joules_per_inference_by_domain=energy["joules_per_inference_by_domain"],
            idle_power_w=energy["idle_power_w"],
            windows=energy["windows"],
            window_s=energy["window_s"],
            inferences=energy["inferences"],
            method=energy["method"],
            measured=energy["measured"],
            uncertainty=Uncertainty(**energy["uncertainty"]),
            noisy=energy["noisy"],
            timeline=tuple(tuple(window) for window in energy.get("timeline", ())),
            window_joules_per_inference=tuple(energy.get("window_joules_per_inference", ())),
            window_active_joules_per_inference=tuple(energy.get("window_active_joules_per_inference", ())),
            window_other_cpu_share=tuple(energy.get("window_other_cpu_share", ())),
            window_telemetry=tuple(energy.get("window_telemetry", ())),
        ),
    )


def _report_from_dict(data: dict) -> RunReport:
    from greencompress.measure.energy.carbon import GridIntensity

    carbon = data["carbon"]
    carbon_settings = CarbonSettings(
        GridIntensity(**carbon["intensity"]), carbon["pue"], carbon["price_per_kwh"], carbon["currency"]
    )
    meter = data["energy_meter"]
    results = []
    for item in data["artifacts"]:
        artifact = Artifact(
            item["name"],
            item["runtime"],
            item["precision"],
            Path(item["path"]) if item["path"] else None,
            item["size_bytes"],
            item["params"],
            item["macs"],
            **_lineage(item),
        )
        benchmarks = [_benchmark_from(latency, item["energy"][batch]) for batch, latency in item["latency"].items()]
        accuracy = Accuracy(**item["accuracy"]) if item["accuracy"] else None
        results.append(ArtifactResult(artifact, accuracy, tuple(benchmarks)))
    return RunReport(
        name=data["name"],
        created_utc=data["created_utc"],
        run_dir=Path(data["run_dir"]),
        recipe=data["recipe"],
        environment=data["environment"],
        provenance=data["provenance"],
        data=data["data"],
        export=data["export"],
        stages=[
            StageRecord(stage["technique"], stage["settings"], stage.get("metrics", {})) for stage in data["stages"]
        ],
        energy_meter=MeterDescription(
            meter["method"],
            meter["measured"],
            tuple(meter["domains"]),
            meter["assumptions"],
            meter.get("estimated_from"),
        ),
        energy_meter_reason=meter["reason"],
        idle=IdleBaseline(**meter["idle"]),
        idle_checks=tuple(IdleBaseline(**check) for check in meter.get("idle_checks", ())),
        carbon=carbon_settings,
        artifacts=results,
        # Decisions are derived from the artifacts again (RunReport.decisions), not read twice.
        comparisons=[_comparison_from_dict(c) for c in data["comparisons"] if not c.get("deployment")],
        notes=data["notes"],
        gates=tuple(GateResult(**gate) for gate in data.get("gates", ())),
        complete=data.get("complete", True),
        power_limit_sweep=tuple(data.get("power_limit_sweep", ())),
        deploy_folders=dict(data.get("deploy_folders", {})),
    )

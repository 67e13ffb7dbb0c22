"""Where to deploy: per batch size, the cheapest artifact within the accuracy budget, against the next best.

Cheapest means the lowest joules per inference where energy was measured, and the lowest p50
latency where it was only estimated (an estimate ranks by CPU time, which is not what a user pays
for; latency is at least measured). Every artifact of a batch size ran in the same interleaved
rounds, so the winner's ratio to the runner-up is paired like any comparison; when its interval
holds 1, the ranking is "within noise". Artifacts beyond the task's quality budget (measure/quality.py:
top-1 more than the budget below the original model's, the PyTorch FP32 reference; for a sentence embedder,
embeddings that drifted from the original model's) are left out, and named.
"""

from __future__ import annotations

from dataclasses import dataclass

from greencompress.measure.quality import QualityBudget
from greencompress.measure.stats import RatioInterval, paired_ratio_interval


@dataclass(frozen=True)
class Recommendation:
    """The artifact to deploy at one batch size (and sequence length), what ranked it, and how sure the ranking is."""

    batch_size: int
    artifact: str
    runtime: str
    precision: str
    ranked_by: str  # "J/inference (rapl)" or "p50 latency (energy is an estimate)"
    value: float  # in the unit of `ranked_by`: J or ms
    top1_drop_points: float | None  # below the original model's top-1; None without accuracy
    runner_up: str | None
    versus_runner_up: RatioInterval | None  # the winner's figure over the runner-up's, paired over rounds
    over_budget: tuple[str, ...]  # artifacts left out: beyond the quality budget
    budget_points: float  # the top-1 budget (what decides for classifiers)
    sequence_length: int | None = None  # transformers: tokens per input
    decided_by: str = ""  # the quality budget in words, naming the metric that decided eligibility

    @property
    def within_noise(self) -> bool:
        return self.versus_runner_up is not None and self.versus_runner_up.within_noise


def recommend(
    results, energy_measured: bool, energy_method: str, budget: QualityBudget | None = None
) -> list[Recommendation]:
    """One recommendation per shape measured (batch size, and sequence length for a transformer), among the artifacts
    within `budget` (default: top-1 within 1 point)."""
    budget = budget or QualityBudget()
    reference = _original_accuracy(results)
    shapes = sorted(
        {bench.latency.shape for result in results for bench in result.benchmarks},
        key=lambda shape: (shape[0], shape[1] or 0),
    )
    recommendations = []
    for shape in shapes:
        measured = [result for result in results if result.at_batch(*shape) is not None]
        drops = {result.artifact.name: _drop(result, reference) for result in measured}
        excess = {result.artifact.name: budget.excess_of(result.accuracy, reference) for result in measured}
        within = [
            result
            for result in measured
            if excess[result.artifact.name] is None or excess[result.artifact.name] <= 1e-9
        ]
        if not within:
            continue
        ranked = sorted(within, key=lambda result: ranking_figure(result.at_batch(*shape), energy_measured))
        best, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        interval = versus(best.at_batch(*shape), runner_up.at_batch(*shape), energy_measured) if runner_up else None
        recommendations.append(
            Recommendation(
                shape[0],
                best.artifact.name,
                best.artifact.runtime,
                best.artifact.precision,
                f"J/inference ({energy_method})" if energy_measured else f"p50 latency (energy is an {energy_method})",
                ranking_figure(best.at_batch(*shape), energy_measured),
                drops[best.artifact.name],
                runner_up.artifact.name if runner_up else None,
                interval,
                tuple(result.artifact.name for result in measured if result not in within),
                budget.max_drop_points,
                shape[1],
                budget.describe(),
            )
        )
    return recommendations


def _original_accuracy(results):
    """The original model's accuracy: the PyTorch FP32 reference's, else any original FP32 artifact's."""
    originals = [
        result
        for result in results
        if result.accuracy is not None
        and result.artifact.is_original_model
        and result.artifact.precision == "fp32"
        and not result.artifact.file_techniques
    ]
    torch_first = sorted(originals, key=lambda result: result.artifact.runtime != "torch")
    return torch_first[0].accuracy if torch_first else None


def _drop(result, reference) -> float | None:
    if result.accuracy is None or reference is None:
        return None
    return 100 * (reference.top1 - result.accuracy.top1)


def ranking_figure(bench, energy_measured: bool) -> float:
    """What ranks artifacts: J/inference where energy was measured, else p50 latency in ms."""
    return bench.joules_per_inference if energy_measured else bench.latency.p50_ms


def versus(best, runner_up, energy_measured: bool) -> RatioInterval | None:
    """`best`'s ranking figure over `runner_up`'s, paired over their shared rounds."""
    if energy_measured:
        return paired_ratio_interval(
            best.energy.window_joules_per_inference, runner_up.energy.window_joules_per_inference
        )
    return paired_ratio_interval(best.latency.window_p50_ms, runner_up.latency.window_p50_ms)

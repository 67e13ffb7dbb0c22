"""Quality gates: budgets a recipe sets, checked against a run's comparisons and artifacts; `run` exits 3 on failure."""

from __future__ import annotations

from pydantic import Field

from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError
from greencompress.measure.latency import shape_words
from greencompress.report.schema import ArtifactResult, Comparison, GateResult


class GatesSpec(Section):
    """Budgets that make `run` exit 3 when a compressed artifact breaks them (for CI pipelines)."""

    max_accuracy_drop: float | None = Field(default=None, ge=0)  # top-1, in percentage points
    # A language model's perplexity increase over the FP32 model, in percent; also the recommendation's budget
    # (default 5%).
    max_perplexity_increase: float | None = Field(default=None, ge=0)
    # A sentence embedder's fidelity to the original FP32 model's embeddings; set, they also replace the defaults of
    # the budget the recommendation and a search apply (measure/quality.py).
    min_embedding_cosine: float | None = Field(default=None, gt=0, le=1)
    min_neighbour_agreement: float | None = Field(default=None, ge=0, le=1)
    min_energy_saving: float | None = Field(default=None, le=1)  # fraction of joules per inference, e.g. 0.3
    # An energy gate on an estimate (CPU time x assumed watts) judges CPU time, not energy: refused unless allowed.
    allow_estimated_energy: bool = False


class GateFailed(GreencompressError):
    """At least one quality gate failed; the reports are written all the same."""

    exit_code = 3


def check_energy_gate_is_measurable(gates: GatesSpec, meter_measured: bool, meter_method: str) -> None:
    """Refuse, before any work, an energy gate only an estimate could judge (unless the recipe allows it)."""
    if gates.min_energy_saving is not None and not meter_measured and not gates.allow_estimated_energy:
        raise GreencompressError(
            f"gates.min_energy_saving: energy cannot be measured on this machine (meter: {meter_method}), so the gate "
            f"would judge an estimate, which is a CPU-time ratio, not energy. Run where RAPL or NVML can be read, or "
            f"set gates.allow_estimated_energy: true to gate on the estimate knowingly"
        )


def evaluate_gates(
    gates: GatesSpec, comparisons: list[Comparison], artifacts: list[ArtifactResult] = ()
) -> list[GateResult]:
    """Every configured gate on every comparison (all batch sizes must pass), and the embedding gates on every
    artifact whose embeddings were compared with the original model's.

    An energy gate fails on an estimated comparison unless `allow_estimated_energy`; where the
    saving's 95% interval holds the threshold, the detail says the verdict is within noise.
    """
    results = []
    for c in comparisons:
        label = f"{c.candidate} vs {c.baseline}, {shape_words(c.batch_size, c.sequence_length)}"
        if gates.max_accuracy_drop is not None and c.top1_delta_points is not None:
            drop = -c.top1_delta_points
            results.append(
                GateResult(
                    "max_accuracy_drop",
                    label,
                    gates.max_accuracy_drop,
                    drop,
                    drop <= gates.max_accuracy_drop,
                    f"top-1 dropped {drop:.2f} points (budget {gates.max_accuracy_drop:g})",
                )
            )
        if gates.min_energy_saving is not None:
            results.append(_energy_gate(gates, c, label))
    return results + _embedding_gates(gates, list(artifacts))


def _embedding_gates(gates: GatesSpec, artifacts: list[ArtifactResult]) -> list[GateResult]:
    found = []
    for result in artifacts:
        accuracy = result.accuracy
        if accuracy is None or accuracy.embedding_cosine is None or accuracy.embedding_cosine == 1.0:
            continue  # no embeddings, or the original model's own (the reference)
        label = f"{result.artifact.name} vs the original FP32 model's embeddings"
        for gate, threshold, value, what in (
            ("min_embedding_cosine", gates.min_embedding_cosine, accuracy.embedding_cosine, "mean cosine"),
            (
                "min_neighbour_agreement",
                gates.min_neighbour_agreement,
                accuracy.neighbour_agreement,
                "nearest neighbour kept",
            ),
        ):
            if threshold is not None:
                found.append(
                    GateResult(
                        gate,
                        label,
                        threshold,
                        value,
                        value >= threshold,
                        f"{what} {value:.4f} (at least {threshold:g} asked)",
                    )
                )
    return found


def _energy_gate(gates: GatesSpec, c: Comparison, label: str) -> GateResult:
    interval = c.joules_per_inference
    saving = 1 - (interval.ratio if interval else c.joules_per_inference_ratio)
    required = gates.min_energy_saving
    what = "energy per inference saved" if c.measured else "CPU time per inference saved (estimated energy)"
    detail = f"{what} {100 * saving:.1f}% ({c.energy_method}; required {100 * required:.0f}%)"
    if interval is not None and 1 - interval.high < required < 1 - interval.low:
        detail += (
            f"; within noise: the saving's 95% interval [{100 * (1 - interval.high):.1f}%, "
            f"{100 * (1 - interval.low):.1f}%] holds the threshold"
        )
    passed = saving >= required
    if not c.measured and not gates.allow_estimated_energy:
        passed, detail = False, f"{detail}; FAILED because energy was not measured (set gates.allow_estimated_energy)"
    return GateResult("min_energy_saving", label, required, saving, passed, detail)

"""Quality gates: budgets a recipe sets, checked against a run's same-runtime comparisons. `run` exits 3 on a failure."""

from __future__ import annotations

from dataclasses import dataclass

from greencompress.errors import GreencompressError
from greencompress.recipe import GatesSpec
from greencompress.report.schema import Comparison


class GateFailed(GreencompressError):
    """At least one quality gate failed; the reports are written all the same."""

    exit_code = 3


@dataclass(frozen=True)
class GateResult:
    """One gate on one comparison: the budget, the value found, and whether it holds."""

    gate: str
    comparison: str
    threshold: float
    value: float
    passed: bool
    detail: str


def evaluate_gates(gates: GatesSpec, comparisons: list[Comparison]) -> list[GateResult]:
    """Every configured gate on every comparison (all batch sizes must pass)."""
    results = []
    for c in comparisons:
        label = f"{c.candidate} vs {c.baseline}, batch {c.batch_size}"
        if gates.max_accuracy_drop is not None and c.top1_delta_points is not None:
            drop = -c.top1_delta_points
            results.append(GateResult("max_accuracy_drop", label, gates.max_accuracy_drop, drop,
                                      drop <= gates.max_accuracy_drop,
                                      f"top-1 dropped {drop:.2f} points (budget {gates.max_accuracy_drop:g})"))
        if gates.min_energy_saving is not None:
            saving = 1 - c.joules_per_inference_ratio
            results.append(GateResult("min_energy_saving", label, gates.min_energy_saving, saving,
                                      saving >= gates.min_energy_saving,
                                      f"energy per inference saved {100 * saving:.1f}% ({c.energy_method}; "
                                      f"required {100 * gates.min_energy_saving:.0f}%)"))
    return results

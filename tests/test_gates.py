"""Quality gates against same-runtime comparisons."""

from greencompress.gates import evaluate_gates
from greencompress.recipe import GatesSpec
from greencompress.report.schema import Comparison


def comparison(energy_ratio: float, top1_delta: float | None, batch: int = 1) -> Comparison:
    return Comparison("onnxruntime-fp32", "onnxruntime-int8", "onnxruntime", batch, 0.5, energy_ratio, "rapl", 0.25,
                      top1_delta)


def test_gates_pass_and_fail_on_their_figures():
    gates = GatesSpec(max_accuracy_drop=1.0, min_energy_saving=0.3)
    results = evaluate_gates(gates, [comparison(0.6, -0.5), comparison(0.8, -1.5, batch=8)])
    by_key = {(r.gate, r.comparison.endswith("batch 8")): r for r in results}
    assert by_key[("max_accuracy_drop", False)].passed and by_key[("min_energy_saving", False)].passed
    assert not by_key[("max_accuracy_drop", True)].passed and by_key[("max_accuracy_drop", True)].value == 1.5
    assert not by_key[("min_energy_saving", True)].passed
    assert "saved 20.0%" in by_key[("min_energy_saving", True)].detail


def test_no_gates_and_no_accuracy_mean_nothing_to_check():
    assert evaluate_gates(GatesSpec(), [comparison(0.5, -3.0)]) == []
    assert evaluate_gates(GatesSpec(max_accuracy_drop=0.1), [comparison(0.5, None)]) == []

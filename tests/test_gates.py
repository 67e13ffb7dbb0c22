"""Quality gates against same-runtime comparisons."""

import pytest

from greencompress.core.errors import GreencompressError
from greencompress.measure.stats import RatioInterval
from greencompress.pipeline.gates import (
    GatesSpec,
    check_energy_gate_is_measurable,
    evaluate_gates,
)
from greencompress.report.schema import Comparison


def comparison(
    energy_ratio: float,
    top1_delta: float | None,
    batch: int = 1,
    measured: bool = True,
    interval: RatioInterval | None = None,
) -> Comparison:
    return Comparison(
        "onnxruntime-fp32",
        "onnxruntime-int8",
        "onnxruntime",
        batch,
        0.5,
        energy_ratio,
        "rapl" if measured else "estimate",
        0.25,
        top1_delta,
        measured=measured,
        joules_per_inference=interval,
    )


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


def test_an_energy_gate_on_an_estimate_fails_unless_the_recipe_allows_it():
    estimated = comparison(0.5, 0.0, measured=False)
    (strict,) = evaluate_gates(GatesSpec(min_energy_saving=0.3), [estimated])
    assert not strict.passed and "energy was not measured" in strict.detail
    assert "CPU time per inference saved (estimated energy) 50.0%" in strict.detail
    (allowed,) = evaluate_gates(GatesSpec(min_energy_saving=0.3, allow_estimated_energy=True), [estimated])
    assert allowed.passed
    with pytest.raises(GreencompressError, match="gates.min_energy_saving: energy cannot be measured"):
        check_energy_gate_is_measurable(GatesSpec(min_energy_saving=0.3), False, "estimate")
    check_energy_gate_is_measurable(GatesSpec(min_energy_saving=0.3), True, "rapl")  # measured: fine
    check_energy_gate_is_measurable(GatesSpec(min_energy_saving=0.3, allow_estimated_energy=True), False, "estimate")


def test_a_gate_whose_threshold_lies_inside_the_interval_says_it_is_within_noise():
    noisy = RatioInterval(0.68, 0.60, 0.76, 5, paired=True)  # saving 32%, interval 24%..40%
    (gate,) = evaluate_gates(GatesSpec(min_energy_saving=0.3), [comparison(0.68, 0.0, interval=noisy)])
    assert gate.passed and "within noise" in gate.detail and "[24.0%, 40.0%]" in gate.detail
    clear = RatioInterval(0.5, 0.48, 0.52, 5, paired=True)
    (gate,) = evaluate_gates(GatesSpec(min_energy_saving=0.3), [comparison(0.5, 0.0, interval=clear)])
    assert gate.passed and "within noise" not in gate.detail


def test_embedding_gates_judge_each_artifact_against_the_original_embeddings():
    from tests.report.test_recommend import embedder

    results = [
        embedder("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.4, 0.87, 1.0, 1.0),
        embedder("onnxruntime-int8", "onnxruntime", "int8", 2.0, 0.2, 0.87, 0.965, 0.727),
    ]
    gates = evaluate_gates(GatesSpec(min_embedding_cosine=0.98, min_neighbour_agreement=0.7), [], results)
    assert [(g.gate, g.passed) for g in gates] == [("min_embedding_cosine", False), ("min_neighbour_agreement", True)]
    assert gates[0].comparison == "onnxruntime-int8 vs the original FP32 model's embeddings"
    assert "mean cosine 0.9650" in gates[0].detail
    assert evaluate_gates(GatesSpec(), [], results) == []


def test_embedding_gates_are_refused_for_a_model_judged_by_top1(write_recipe):
    import pytest

    from greencompress.core.errors import RecipeError
    from greencompress.pipeline.recipe import load_recipe

    with pytest.raises(RecipeError, match="gates.min_embedding_cosine: judges a sentence embedder"):
        load_recipe(
            write_recipe(
                "name: t\nmodel: {source: builtin, name: resnet18-digits-64}\n"
                "data: {kind: digits}\nstages: [{quantize: {}}]\ngates: {min_embedding_cosine: 0.9}\n"
            )
        )

"""The deployment recommendation on hand-made reports: the budget, ties, and what an estimate ranks by."""

from __future__ import annotations

import dataclasses

from greencompress.measure.energy import MeterDescription
from greencompress.measure.quality import QualityBudget
from greencompress.report.markdown import recommendation_table, render_markdown
from greencompress.report.recommend import recommend
from tests.report.test_report import make_report, result

NOISY = (1.0, 1.15, 0.88, 1.1, 0.9)  # rounds that do not follow the others: a tie cannot be resolved


def test_the_cheapest_within_the_budget_is_chosen_and_those_over_it_are_named():
    results = [
        result("torch-fp32", "torch", "fp32", 10.0, 1.0, top1=0.95),
        result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.4, top1=0.95),
        result("onnxruntime-int8", "onnxruntime", "int8", 1.5, 0.15, top1=0.943),  # 0.7 pt below: within 1
        result("openvino-int8", "openvino", "int8", 1.0, 0.10, top1=0.90),  # cheapest, 5 points below: out
    ]
    (choice,) = recommend(results, energy_measured=True, energy_method="rapl", budget=None)
    assert (choice.artifact, choice.runtime, choice.precision) == ("onnxruntime-int8", "onnxruntime", "int8")
    assert choice.over_budget == ("openvino-int8",) and choice.budget_points == 1.0
    assert choice.runner_up == "onnxruntime-fp32" and round(choice.versus_runner_up.ratio, 6) == 0.375
    assert not choice.within_noise and round(choice.top1_drop_points, 6) == 0.7
    assert choice.ranked_by == "J/inference (rapl)"
    (loose,) = recommend(results, energy_measured=True, energy_method="rapl", budget=QualityBudget(max_drop_points=6.0))
    assert loose.artifact == "openvino-int8"  # the recipe's gates.max_accuracy_drop widens the budget


def test_a_tie_is_called_within_noise():
    results = [
        result("onnxruntime-int8", "onnxruntime", "int8", 1.00, 0.100),
        result("openvino-int8", "openvino", "int8", 0.99, 0.099, rounds=NOISY),
    ]
    (choice,) = recommend(results, energy_measured=True, energy_method="rapl")
    assert choice.artifact == "openvino-int8" and choice.within_noise
    report = dataclasses.replace(make_report(results), energy_meter=MeterDescription("rapl", True, ("cpu",), []))
    headers, rows = recommendation_table(report)
    assert rows[0][1] == "openvino-int8 (openvino, int8)" and rows[0][3].endswith("of onnxruntime-int8 (within noise)")


def test_with_an_estimate_the_choice_is_by_latency_and_says_so():
    results = [
        result("onnxruntime-int8", "onnxruntime", "int8", 2.0, 0.01),  # least CPU time, but slower
        result("openvino-int8", "openvino", "int8", 1.0, 0.05),
    ]
    report = make_report(results)  # the estimate meter
    (choice,) = report.recommendations
    assert choice.artifact == "openvino-int8" and choice.ranked_by == "p50 latency (energy is an estimate)"
    assert choice.value == 1.0 and round(choice.versus_runner_up.ratio, 6) == 0.5
    markdown = render_markdown(report)
    assert "## Deployment recommendation" in markdown
    assert "the fastest (p50 latency): energy was not measured here, so it is not ranked by energy" in markdown
    assert report.to_dict()["recommendations"][0]["artifact"] == "openvino-int8"


def test_one_recommendation_per_batch_size():
    results = [result("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.4, batch_size=b) for b in (1, 8)]
    merged = dataclasses.replace(results[0], benchmarks=results[0].benchmarks + results[1].benchmarks)
    assert [r.batch_size for r in recommend([merged], True, "rapl")] == [1, 8]


def embedder(name, runtime, precision, p50_ms, joules, top1, cosine, neighbours):
    made = result(name, runtime, precision, p50_ms, joules, top1=top1)
    return dataclasses.replace(
        made,
        accuracy=dataclasses.replace(
            made.accuracy, embedding_cosine=cosine, neighbour_agreement=neighbours, recall_at_10=0.9
        ),
    )


def test_a_sentence_embedder_is_judged_by_its_embeddings_and_the_report_says_so():
    results = [
        embedder("torch-fp32", "torch", "fp32", 10.0, 1.0, 0.87, 1.0, 1.0),
        embedder("onnxruntime-fp32", "onnxruntime", "fp32", 4.0, 0.4, 0.87, 1.0, 1.0),
        # Fine-tuned on the labels: top-1 up 1.7 points, embeddings moved away (the MiniLM search's choice).
        embedder("onnxruntime-pruned-int8", "onnxruntime", "int8", 1.0, 0.1, 0.887, 0.73, 0.38),
        embedder("onnxruntime-int8", "onnxruntime", "int8", 2.0, 0.2, 0.87, 0.9925, 0.84),
    ]
    report = dataclasses.replace(make_report(results), recipe={"model": {"task": "sentence-embedding"}})
    (choice,) = report.recommendations
    assert choice.artifact == "onnxruntime-int8" and choice.over_budget == ("onnxruntime-pruned-int8",)
    assert choice.decided_by.startswith("embedding fidelity to the original FP32 model: mean cosine >= 0.98")
    assert "embedding fidelity" in render_markdown(report)
    # As a classifier, the label-tuned model would have won: top-1 is what judges a text classifier.
    (as_classifier,) = dataclasses.replace(report, recipe={"model": {"task": "text-classification"}}).recommendations
    assert as_classifier.artifact == "onnxruntime-pruned-int8" and as_classifier.decided_by.startswith("top-1")
    # The limits are the recipe's where it sets them.
    strict = dataclasses.replace(
        report, recipe={"model": {"task": "sentence-embedding"}, "gates": {"min_neighbour_agreement": 0.9}}
    )
    assert strict.recommendations[0].artifact in ("torch-fp32", "onnxruntime-fp32")


def deployed_report(tmp_path, openvino_ms: float | None):
    """An image model's report whose int8 file has a deploy folder; OpenVINO runs it too when given a latency."""
    (tmp_path / "model_int8.onnx").write_bytes(b"int8")
    results = [
        result("torch-fp32", "torch", "fp32", 9.0, 0.09),
        result("onnxruntime-int8", "onnxruntime", "int8", 2.0, 0.01, path=tmp_path / "model_int8.onnx"),
        *(
            [result("openvino-int8", "openvino", "int8", openvino_ms, 0.05, path=tmp_path / "model_int8.onnx")]
            if openvino_ms
            else []
        ),
    ]
    return dataclasses.replace(
        make_report(results),
        recipe={"model": {"task": "image-classification"}},
        deploy_folders={"model_int8.onnx": "deploy/model_int8"},
    )


def test_the_decision_names_the_deploy_folder_and_how_to_open_it_where_it_was_measured(tmp_path):
    report = deployed_report(tmp_path, openvino_ms=1.0)
    markdown = render_markdown(report)
    assert "**Deploy openvino-int8 (`deploy/model_int8/`) at batch 1" in markdown
    assert 'folder = "deploy/model_int8"' in markdown and "preprocessing.json" in markdown
    assert "It was measured on openvino (int8)" in markdown
    assert 'compile_model("deploy/model_int8/onnx/model.onnx", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})' in markdown
    assert report.to_dict()["deploy_folders"] == {"model_int8.onnx": "deploy/model_int8"}


def test_the_html_report_shows_the_folder_and_the_loading_code(tmp_path):
    from greencompress.report.html import render_html

    page = render_html(deployed_report(tmp_path, openvino_ms=None))
    assert "Deploy onnxruntime-int8 (<code>deploy/model_int8/</code>) at batch 1" in page
    assert '<pre class="loading">import json' in page and "folder = &quot;deploy/model_int8&quot;" in page

"""prune -> finetune -> quantize through the pipeline: each stage reported, the pruned model reloaded on resume."""

from __future__ import annotations

import json
import logging

import pytest

from greencompress.pipeline.execute import run
from greencompress.pipeline.folder import create_run_dir
from greencompress.pipeline.recipe import load_recipe


def with_stages(recipe_path, stages: str):
    text = recipe_path.read_text().replace("stages:\n  - quantize:", f"stages:\n{stages}\n  - quantize:")
    recipe_path.write_text(text)
    return load_recipe(recipe_path)


@pytest.mark.slow
def test_prune_finetune_quantize_chain(tiny_recipe, tmp_path, caplog):
    recipe = with_stages(
        tiny_recipe,
        "  - prune: {ratio: 0.5, round_to: 1}\n  - finetune: {epochs: 2, batch_size: 4, "
        "distillation: {temperature: 2.0, alpha: 0.5}}",
    )
    run_dir = create_run_dir(recipe, tmp_path / "runs")
    report = run(recipe, run_dir, shared_cache=tmp_path / "cache")
    names = [result.artifact.name for result in report.artifacts]
    assert names == [
        "torch-fp32",
        "onnxruntime-fp32",
        "onnxruntime-pruned-finetuned-fp32",
        "onnxruntime-int8",
        "onnxruntime-pruned-finetuned-int8",
    ]
    original, pruned = report.artifacts[1].artifact, report.artifacts[2].artifact
    assert 0.45 < pruned.macs / original.macs < 0.55 and pruned.params < original.params
    pairs = {(c.candidate, c.baseline) for c in report.comparisons if c.batch_size == 1}
    assert pairs == {  # the original model is the baseline; pruning is also judged at its own precision
        ("onnxruntime-pruned-finetuned-fp32", "onnxruntime-fp32"),
        ("onnxruntime-int8", "onnxruntime-fp32"),
        ("onnxruntime-pruned-finetuned-int8", "onnxruntime-fp32"),
        ("onnxruntime-pruned-finetuned-int8", "onnxruntime-int8"),
    }
    prune_stage, finetune_stage, _ = report.stages
    assert "conv1" in prune_stage.metrics["untouched_layers"]
    assert {"top1", "macs", "params"} <= set(finetune_stage.metrics) and len(finetune_stage.metrics["history"]) == 2
    markdown = (run_dir / "report.md").read_text()
    assert "left untouched (unsafe to prune): conv1" in markdown and "best validation epoch" in markdown
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["artifacts"][4]["macs"] == pruned.macs and saved["artifacts"][3]["macs"] == original.macs

    with caplog.at_level(logging.INFO, logger="greencompress"):
        again = run(recipe, run_dir, shared_cache=tmp_path / "cache")
    assert "1-prune: reusing the finished stage" in caplog.text and "2-finetune: reusing" in caplog.text
    assert again.artifacts[2].artifact.macs == pruned.macs  # rebuilt from the pruning history


def test_stage_order_and_labels_are_checked(tiny_recipe, write_recipe):
    import pytest

    from greencompress.core.errors import RecipeError

    text = tiny_recipe.read_text()
    bad_order = text.replace(
        "stages:\n  - quantize: {calibration_samples: 12}",
        "stages:\n  - quantize: {calibration_samples: 12}\n  - prune: {ratio: 0.5}",
    )
    with pytest.raises(RecipeError, match="prune and finetune and weight_only and .* must come before quantize"):
        load_recipe(write_recipe(bad_order, "order.yaml"))


@pytest.mark.slow
def test_quantization_aware_finetuning_through_the_pipeline(tiny_recipe, tmp_path):
    import onnx

    text = tiny_recipe.read_text().replace(
        "  - quantize: {calibration_samples: 12}",
        "  - quantize: {calibration_samples: 12, qat: {epochs: 2, batch_size: 4, learning_rate: 0.001}}",
    )
    tiny_recipe.write_text(text)
    recipe = load_recipe(tiny_recipe)
    run_dir = create_run_dir(recipe, tmp_path / "runs")
    report = run(recipe, run_dir, shared_cache=tmp_path / "cache")
    int8 = next(result for result in report.artifacts if result.artifact.name == "onnxruntime-int8")
    assert int8.accuracy is not None and int8.accuracy.samples == 12  # ONNX Runtime ran the file on every image
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(run_dir / "model_int8.onnx")).graph.node)
    stage = report.stages[-1]
    assert stage.settings["quantization_aware_finetuning"] is True
    assert len(stage.metrics["by_source"]["onnxruntime-fp32"]["qat_history"]) == 2
    assert "quantization-aware fine-tuning of onnxruntime-fp32" in (run_dir / "report.md").read_text()


def test_qat_needs_static_per_channel_int8(tiny_recipe, write_recipe):
    import pytest

    from greencompress.core.errors import RecipeError

    text = tiny_recipe.read_text().replace(
        "  - quantize: {calibration_samples: 12}", "  - quantize: {method: dynamic, qat: {epochs: 1}}"
    )
    with pytest.raises(RecipeError, match=r"stages\.0\.quantize: qat simulates static, per-channel int8"):
        load_recipe(write_recipe(text, "qat.yaml"))


@pytest.mark.slow
def test_openvino_runs_every_exported_model_beside_onnx_runtime(tiny_recipe, tmp_path):
    import numpy as np
    import pytest

    pytest.importorskip("openvino")
    from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner
    from greencompress.runtimes.openvino_cpu import OpenVinoRunner

    tiny_recipe.write_text(
        tiny_recipe.read_text().replace("runtimes: [onnxruntime]", "runtimes: [onnxruntime, openvino]")
    )
    recipe = load_recipe(tiny_recipe)
    run_dir = create_run_dir(recipe, tmp_path / "runs")
    report = run(recipe, run_dir, shared_cache=tmp_path / "cache")
    by_name = {result.artifact.name: result for result in report.artifacts}
    assert {"openvino-fp32", "openvino-int8"} <= set(by_name)
    assert by_name["openvino-int8"].artifact.path == by_name["onnxruntime-int8"].artifact.path  # the same file
    assert by_name["openvino-fp32"].accuracy.top1 == by_name["onnxruntime-fp32"].accuracy.top1
    pairs = {(c.candidate, c.baseline) for c in report.comparisons}
    assert ("openvino-int8", "openvino-fp32") in pairs  # ratios stay within one runtime
    assert not any(
        c.candidate.startswith("openvino") and c.baseline.startswith("onnxruntime") for c in report.comparisons
    )
    markdown = (run_dir / "report.md").read_text()
    assert "## The same model on each runtime" in markdown and "| model_int8.onnx | 1 |" in markdown

    inputs = np.random.default_rng(0).standard_normal((2, 3, 32, 32), dtype=np.float32)
    fp32 = run_dir / "model_fp32.onnx"
    np.testing.assert_allclose(OpenVinoRunner(fp32, 1)(inputs), OnnxRuntimeRunner(fp32, 1)(inputs), atol=1e-4)


@pytest.mark.slow
def test_any_runtime_may_be_measured_alone(tiny_recipe, write_recipe, tmp_path):
    """ONNX Runtime still checks every export's parity and quantizes; the run measures only what the recipe lists."""
    text = tiny_recipe.read_text().replace("runtimes: [onnxruntime]", "runtimes: [openvino]")
    recipe = load_recipe(write_recipe(text, "openvino.yaml"))
    report = run(recipe, create_run_dir(recipe, tmp_path / "runs"), shared_cache=tmp_path / "cache")
    assert {result.artifact.runtime for result in report.artifacts} == {"torch", "openvino"}
    assert {"openvino-fp32", "openvino-int8"} <= {result.artifact.name for result in report.artifacts}
    assert report.recommendations and report.export["parity"]["samples"] > 0


def test_an_unknown_runtime_is_one_error_with_a_did_you_mean(tiny_recipe, write_recipe):
    import pytest

    from greencompress.core.errors import RecipeError

    text = tiny_recipe.read_text().replace("runtimes: [onnxruntime]", "runtimes: [onnx], baseline: onnxruntime")
    with pytest.raises(RecipeError) as caught:
        load_recipe(write_recipe(text, "runtimes.yaml"))
    (line,) = str(caught.value).splitlines()  # one mistake, one line: no second one blaming the valid baseline
    assert line.endswith(
        "runtimes.yaml: invalid recipe: benchmark.runtimes: unknown runtime 'onnx'; did you mean 'onnxruntime', "
        "'onnxruntime-cuda', 'onnxruntime-tensorrt'?"
    )


@pytest.mark.slow
def test_a_recipe_without_stages_measures_the_model_as_given_on_every_runtime(tiny_recipe, write_recipe, tmp_path):
    text = tiny_recipe.read_text().replace("  - quantize: {calibration_samples: 12}\n", "")
    text = text.replace("stages:\n", "stages: []\n").replace(
        "runtimes: [onnxruntime]", "runtimes: [onnxruntime, openvino]"
    )
    recipe = load_recipe(write_recipe(text, "as-given.yaml"))
    report = run(recipe, create_run_dir(recipe, tmp_path / "runs"), shared_cache=tmp_path / "cache")
    assert {result.artifact.name for result in report.artifacts} == {"torch-fp32", "onnxruntime-fp32", "openvino-fp32"}
    assert report.stages == [] and len(report.recommendations) == 2  # batch 1 and 2: where to serve it as it is

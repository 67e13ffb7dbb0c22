"""Structure removed for real: attention heads, FFN neurons and layers of a Hugging Face encoder (a tiny BERT built
here), residual blocks of the user's CIFAR ResNet-20 architecture; importance measured, removal exact, reloads."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from greencompress.compress.block_surgery import block_candidates
from greencompress.compress.depth import choose_removals, output_change
from greencompress.compress.encoder_prune import (
    encoder_scores,
    kept_count,
    prune_encoder,
)
from greencompress.compress.encoder_surgery import (
    remove_ffn_neurons,
    remove_heads,
    remove_layers,
)
from greencompress.compress.technique import TorchModel
from greencompress.core.errors import GreencompressError, RecipeError
from greencompress.models.data import batches, load_data
from greencompress.models.encoder_layout import attention_shape, encoder_layers
from greencompress.models.huggingface import save_folder
from greencompress.models.inputs import ModelInputs
from greencompress.models.sources import load_model, resolve_callable
from greencompress.models.tasks.text_classification import tokenization
from greencompress.pipeline.recipe import load_recipe
from greencompress.runtimes.export import ExportSpec, export_with_parity
from tests.compress.test_prune import ARCHITECTURE
from tests.models.test_huggingface import (
    model_spec,
    small_rows,
    text_spec,
    tiny_bert,
    write_csv,
)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """A 3-layer tiny BERT (4 heads of 8, FFN 64), its data (real glosses) and a batch of real text."""
    folder = tiny_bert(tmp_path_factory.mktemp("hf") / "bert", layers=3)
    loaded = load_model(model_spec(folder))
    data = load_data(text_spec(write_csv(folder.parent / "texts.csv", small_rows())), 0, tokenization(loaded))
    return folder, loaded, data


def logits(model, data):
    with torch.no_grad():
        return torch.cat(
            [model(**{k: torch.from_numpy(v) for k, v in inputs.items()}) for inputs, _ in batches(data.eval, 12)]
        )


def test_a_head_or_neuron_that_adds_nothing_is_found_and_removed_without_changing_any_output(bert):
    _, loaded, data = bert
    model = copy.deepcopy(loaded.module)
    layers = encoder_layers(model)
    with torch.no_grad():  # head 2 of layer 0 and FFN neurons 3 and 7 of layer 1 no longer reach the layer's output
        layers[0].attention_output.weight[:, 16:24] = 0
        layers[1].ffn_out.weight[:, [3, 7]] = 0
    before = logits(model, data)
    scores = encoder_scores(model, "activation", batches(data.calibration, 16, limit=32))
    assert int(scores.heads[0].argmin()) == 2 and float(scores.heads[0][2]) == 0
    assert sorted(scores.neurons[1].argsort()[:2].tolist()) == [3, 7]
    remove_heads(model, {0: [2]})
    remove_ffn_neurons(model, {1: [3, 7]})
    layers = encoder_layers(model)
    assert (layers[0].heads, layers[1].heads, layers[0].query.out_features) == (3, 4, 24)
    assert (layers[1].ffn_width, layers[0].ffn_width) == (62, 64)
    # The other heads and neurons kept their weights in the right places: every output is unchanged.
    torch.testing.assert_close(logits(model, data), before, atol=1e-5, rtol=0)


def test_criteria_and_counts(bert):
    _, loaded, data = bert
    for criterion in ("l1", "l2", "random"):
        scores = encoder_scores(loaded.module, criterion, seed=1)
        assert [len(s) for s in scores.heads] == [4, 4, 4] and [len(s) for s in scores.neurons] == [64] * 3
    assert kept_count(1536, 0.5, None) == 768 and kept_count(64, 0.3, 16) == 48 and kept_count(4, 0.9, None) == 1


def test_pruned_heads_export_fused_with_their_new_count_and_reload_through_the_record(bert, tmp_path):
    folder, loaded, data = bert
    model = copy.deepcopy(loaded.module)
    pruning = prune_encoder(model, 0.5, 0.5, "activation", batches(data.calibration, 16, limit=32), round_to=8)
    assert (pruning.heads_after, pruning.ffn_after) == (2, 32)
    assert attention_shape(model) == (2, 16)
    parity = export_with_parity(model, loaded.inputs, tmp_path / "pruned.onnx", ExportSpec(), batches(data.eval, 6), 1)
    assert parity.fusion["Attention"] == 3 and parity.max_abs_diff < 1e-4  # fused with 2 heads, and still right
    TorchModel(model, tuple(pruning.records)).save(tmp_path / "pruned.pt")
    fresh = load_model(model_spec(folder)).module
    reloaded = TorchModel.load(tmp_path / "pruned.pt", fresh, loaded.inputs).module
    torch.testing.assert_close(logits(reloaded, data), logits(model, data))
    # Layers with different head counts: one count cannot describe them, so the export stays unfused (and right).
    remove_heads(model, {0: [0]})
    assert attention_shape(model) is None
    parity = export_with_parity(model, loaded.inputs, tmp_path / "uneven.onnx", ExportSpec(), batches(data.eval, 6), 1)
    assert "different attention head counts" in parity.fusion


def test_ffn_and_layer_removal_reload_with_plain_transformers(bert, tmp_path):
    from transformers import AutoModelForSequenceClassification

    _, loaded, data = bert
    model = copy.deepcopy(loaded.module)
    prune_encoder(model, 0.0, 0.25, "l1")
    remove_layers(model, [1])
    assert save_folder(model, loaded.tokenizer, tmp_path / "saved") is None  # what a run writes: model_compressed_hf/
    assert (tmp_path / "saved" / "tokenizer.json").is_file()
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    assert (plain.config.num_hidden_layers, plain.config.intermediate_size) == (2, 48)
    with torch.no_grad():
        plain_logits = torch.cat(
            [
                plain(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits
                for inputs, _ in batches(data.eval, 12)
            ]
        )
    torch.testing.assert_close(plain_logits, logits(model, data))


def test_layer_importance_finds_the_layer_that_does_nothing(bert):
    _, loaded, data = bert
    model = copy.deepcopy(loaded.module)
    with torch.no_grad():
        for module in model.modules():  # every LayerNorm an identity on normalised input...
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.fill_(1), module.bias.zero_()
        middle = encoder_layers(model)[1]  # ...so a layer whose two residual branches add zero passes its input on
        for linear in (middle.attention_output, middle.ffn_out):
            linear.weight.zero_(), linear.bias.zero_()
    calibration = list(batches(data.calibration, 16, limit=32))
    for importance in ("output_change", "similarity"):
        chosen, measured = choose_removals(model, loaded.inputs, calibration, 1, importance)
        assert chosen == [1] and measured["1"] < min(measured["0"], measured["2"]) / 100, measured
    assert output_change(model, calibration, [0], True) > 100 * output_change(model, calibration, [1], True)
    with pytest.raises(GreencompressError, match="at least one layer must stay"):
        choose_removals(model, loaded.inputs, calibration, 3, "output_change")


def test_residual_blocks_of_the_users_resnet20_bypassed_measured_and_reloaded(tmp_path):
    import numpy as np

    torch.manual_seed(0)
    model = resolve_callable(ARCHITECTURE)().eval()
    inputs = ModelInputs.image((3, 32, 32))
    candidates = block_candidates(model, inputs)
    # The downsampling blocks (layer2.0, layer3.0) change the shape: never candidates.
    assert candidates == ["layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"]
    with torch.no_grad():  # a block whose residual branch ends in zero is the identity on its (ReLU'd) input
        model.layer2[1].bn2.weight.zero_(), model.layer2[1].bn2.bias.zero_()
    images = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    calibration = [(images, np.zeros(8, dtype=np.int64))]
    chosen, measured = choose_removals(model, inputs, calibration, 2, "output_change")
    assert chosen[0] == "layer2.1" and measured["layer2.1"] < 1e-6 and chosen[1] != "layer2.1"
    from greencompress.compress.block_surgery import remove_blocks

    reference = model(torch.from_numpy(images))
    record = remove_blocks(model, chosen)
    assert isinstance(model.layer2[1], torch.nn.Identity)
    TorchModel(model, (record,)).save(tmp_path / "shallow.pt")
    reloaded = TorchModel.load(tmp_path / "shallow.pt", resolve_callable(ARCHITECTURE)(), inputs).module
    with torch.no_grad():
        torch.testing.assert_close(reloaded(torch.from_numpy(images)), model(torch.from_numpy(images)))
        assert not torch.allclose(reference, model(torch.from_numpy(images)))  # the second block did something
    # Channel pruning afterwards: an `ignore` entry inside a removed block is gone, not a typo.
    from greencompress.compress.prune import StructuredPruneConfig, prune_structured

    kept = next(name for name in candidates if name not in chosen)
    ignored = [f"{chosen[0]}.conv1", f"{kept}.conv1"]
    pruned = prune_structured(
        model, ModelInputs.image((3, 32, 32)), StructuredPruneConfig(ratio=0.25, ignore=ignored), None
    ).model
    whole = model.get_submodule(f"{kept}.conv1").out_channels
    assert pruned.get_submodule(f"{kept}.conv1").out_channels == whole
    assert isinstance(pruned.get_submodule(chosen[0]), torch.nn.Identity)
    with pytest.raises(GreencompressError, match="no layer named layer9.conv1"):
        prune_structured(
            model, ModelInputs.image((3, 32, 32)), StructuredPruneConfig(ratio=0.25, ignore=["layer9.conv1"]), None
        )


def test_structure_settings_are_checked_against_the_model(bert, tmp_path, write_recipe):
    folder, _, _ = bert
    text = f"name: t\nmodel: {{source: huggingface, path: {folder}, task: text-classification}}\ndata: {{kind: text}}\n"
    cnn = "name: t\nmodel: {source: builtin, name: resnet18-digits-64}\ndata: {kind: digits}\n"
    cases = {
        text + "stages: [{prune: {target_macs: 0.5}}]": "stages.0.prune.target_macs: not for a transformer",
        text + "stages: [{prune: {importance: taylor}}]": "stages.0.prune.importance: not for a transformer",
        text + "stages: [{quantize: {qat: {}}}]": "stages.0.quantize.qat: not available for a transformer encoder",
        cnn + "stages: [{prune: {heads: 0.5}}]": "stages.0.prune.heads: heads and ffn remove a transformer",
        cnn
        + "stages: [{prune: {importance: activation}}]": "stages.0.prune.importance: activation scores a transformer",
        cnn + "stages: [{depth: {remove: 0}}]": "stages.0.depth.remove",
    }
    for recipe, message in cases.items():
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(write_recipe(recipe))
    # What a transformer recipe may say: depth, then heads and FFN, then fine-tuning and int8.
    recipe = load_recipe(
        write_recipe(
            text + "stages: [{depth: {remove: 1}}, {prune: {heads: 0.25, ffn: 0.5, "
            "importance: activation}}, {finetune: {}}, {quantize: {}}]"
        )
    )
    assert [stage.technique for stage in recipe.stages] == ["depth", "prune", "finetune", "quantize"]
    assert recipe.stages[1].config.transformer_ratios == (0.25, 0.5)


@pytest.mark.parametrize("family", ["distilbert", "roberta", "electra", "vit"])
def test_every_known_family_loses_a_silent_head_and_neuron_without_any_output_changing(family):
    """The layouts encoder_layout.py names, each built from a config: a head and an FFN neuron whose output
    projection weights are zero add nothing, so removing them (smaller matrices) leaves every logit as it was."""
    import transformers

    configs = {
        "distilbert": (
            transformers.DistilBertConfig(
                vocab_size=120, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32
            ),
            transformers.DistilBertForSequenceClassification,
        ),
        "roberta": (
            transformers.RobertaConfig(
                vocab_size=120,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=40,
            ),
            transformers.RobertaForSequenceClassification,
        ),
        "electra": (
            transformers.ElectraConfig(
                vocab_size=120,
                embedding_size=32,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
                max_position_embeddings=40,
            ),
            transformers.ElectraForSequenceClassification,
        ),
        "vit": (
            transformers.ViTConfig(
                image_size=16,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=64,
            ),
            transformers.ViTForImageClassification,
        ),
    }
    config, cls = configs[family]
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = cls(config).eval()
    if family == "vit":
        inputs = {"pixel_values": torch.randn(3, 3, 16, 16)}
    else:
        inputs = {"input_ids": torch.randint(5, 120, (3, 12)), "attention_mask": torch.ones(3, 12, dtype=torch.int64)}
    layers = encoder_layers(model)
    with torch.no_grad():
        for parts in layers:
            size = parts.head_size
            parts.attention_output.weight[:, size : 2 * size] = 0  # head 1 adds nothing
            parts.ffn_out.weight[:, 5] = 0  # neither does neuron 5
        before = model(**inputs).logits
        remove_heads(model, {index: [1] for index in range(len(layers))})
        remove_ffn_neurons(model, {index: [5] for index in range(len(layers))})
        after = model(**inputs).logits
    assert [(parts.heads, parts.ffn_width) for parts in encoder_layers(model)] == [(3, 63)] * len(layers)
    assert torch.allclose(before, after, atol=1e-5)

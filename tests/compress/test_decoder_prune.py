"""A causal LM made narrower: a silent FFN neuron or key/value group is ranked least important and its removal
leaves every logit unchanged; groups go whole (with the query heads that share them); the narrower model reloads
with plain transformers."""

from __future__ import annotations

import pytest
import torch

from greencompress.compress.decoder_prune import (
    decoder_widths,
    keep_kv_groups,
    prune_decoder,
    width_scores,
)
from greencompress.core.errors import GreencompressError
from tests.compress.test_decoder_surgery import windows
from tests.measure.test_perplexity import tiny

SILENT_NEURON, SILENT_GROUP = 5, 1


def with_silent_neuron(kind: str) -> torch.nn.Module:
    """A tiny model whose FFN neuron SILENT_NEURON writes nothing to the residual stream, in every layer."""
    model = tiny(kind, layers=2)
    with torch.no_grad():
        for width in decoder_widths(model):
            if kind == "llama":
                width.ffn_out.weight[:, SILENT_NEURON] = 0  # down_proj: (hidden, neurons)
            else:
                width.ffn_out.weight[SILENT_NEURON, :] = 0  # GPT-2's Conv1D c_proj: (neurons, hidden)
    return model


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=windows(1, 20)[0]).logits


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
@pytest.mark.parametrize("criterion", ["activation", "l1"])
def test_a_silent_ffn_neuron_is_ranked_least_and_its_removal_leaves_every_logit_unchanged(kind, criterion):
    model = with_silent_neuron(kind)
    before = logits(model)
    scores = width_scores(model, criterion, windows())
    if criterion == "activation":
        assert all(int(layer.argmin()) == SILENT_NEURON for layer in scores.neurons)
    else:  # l1 also counts the weights that make the neuron, which are not zero: silencing it lowers its score alone
        intact = width_scores(tiny(kind, layers=2), criterion, windows())
        for silent, whole in zip(scores.neurons, intact.neurons):
            assert torch.nonzero(silent != whole).flatten().tolist() == [SILENT_NEURON]
            assert silent[SILENT_NEURON] < whole[SILENT_NEURON]
    width = decoder_widths(model)[0].neurons
    done = prune_decoder(model, 0.0, 1 / width, "activation", windows())  # one neuron per layer
    assert (done.ffn_before, done.ffn_after) == (width, width - 1)
    assert all(w.neurons == width - 1 for w in decoder_widths(model))
    assert torch.allclose(logits(model), before, atol=1e-5)
    field = "intermediate_size" if kind == "llama" else "n_inner"
    assert getattr(model.config, field) == width - 1


def test_a_silent_key_value_group_goes_whole_with_its_query_heads_and_every_logit_stays():
    model = tiny("llama", layers=2)  # 4 query heads share 2 key/value heads: groups of 2
    with torch.no_grad():
        for width in decoder_widths(model):
            heads = range(SILENT_GROUP * width.heads_per_group, (SILENT_GROUP + 1) * width.heads_per_group)
            for head in heads:  # the group's query heads write nothing through o_proj
                width.attention.o_proj.weight[:, head * width.head_dim : (head + 1) * width.head_dim] = 0
    before = logits(model)
    scores = width_scores(model, "activation", windows())
    assert all(int(layer.argmin()) == SILENT_GROUP and float(layer.min()) == 0 for layer in scores.groups)
    done = prune_decoder(model, 0.5, 0.0, "activation", windows())
    assert (done.kv_groups_before, done.kv_groups_after, done.heads_before, done.heads_after) == (2, 1, 4, 2)
    config = model.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (2, 1, 8)
    for width in decoder_widths(model):
        assert width.attention.q_proj.out_features == 2 * 8 and width.attention.k_proj.out_features == 8
        assert width.attention.o_proj.in_features == 2 * 8
    assert torch.allclose(logits(model), before, atol=1e-5)


def test_keeping_a_group_keeps_exactly_the_query_heads_that_read_it():
    model = tiny("llama", layers=1)
    attention = decoder_widths(model)[0].attention
    query = attention.q_proj.weight.detach().clone()
    keep_kv_groups(model, [[1]])
    assert torch.equal(attention.q_proj.weight, query[16:32])  # heads 2 and 3 (8 wide) read key/value head 1


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_narrower_model_reloads_with_plain_transformers_and_gives_the_same_logits(kind, tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny(kind, layers=2)
    prune_decoder(model, 0.5 if kind == "llama" else 0.0, 0.25, "activation", windows(), round_to=8)
    assert decoder_widths(model)[0].neurons == (48 if kind == "llama" else 96)  # 64 or 128 x 0.75
    model.save_pretrained(tmp_path / "narrow")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "narrow").eval()
    assert decoder_widths(reloaded)[0].neurons == decoder_widths(model)[0].neurons
    assert torch.equal(logits(reloaded), logits(model))


def test_gpt2_heads_are_refused_saying_why_and_a_ratio_that_removes_nothing_is_refused():
    with pytest.raises(GreencompressError, match="n_embd / n_head.*prune its FFN only"):
        prune_decoder(tiny("gpt2"), 0.5, 0.0, "activation", windows())
    with pytest.raises(GreencompressError, match="removes none"):
        prune_decoder(tiny("llama"), 0.0, 0.1, "l2", [], round_to=32)

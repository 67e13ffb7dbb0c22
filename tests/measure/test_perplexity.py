"""Perplexity over windows with a stride, against transformers' own loss, on tiny Llama and GPT-2 models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from greencompress.measure.perplexity import perplexity, torch_logits, windows


def tiny(kind: str, layers: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if kind == "llama":  # grouped-query attention, as SmolLM2's: 4 query heads share 2 key/value heads
        config = LlamaConfig(
            vocab_size=97,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
        )
        return LlamaForCausalLM(config).eval()
    return GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=32, n_layer=layers, n_head=4, n_positions=128)).eval()


def test_every_token_after_the_first_is_scored_once():
    for length, window, stride in ((100, 32, 16), (33, 32, 8), (10, 32, 4), (100, 32, 31)):
        found = windows(length, window, stride)
        assert sum(part.scored for part in found) == length - 1, (length, window, stride)
        assert all(part.end - part.start <= window and part.scored < part.end - part.start for part in found)
    disjoint = windows(100, 32, 32)  # each window's first token has nothing before it to predict it
    assert [part.scored for part in disjoint] == [31, 31, 31, 3]
    assert len(windows(1000, 64, 32, limit=5)) == 5
    with pytest.raises(ValueError, match="stride must be in 1..window"):
        windows(100, 16, 32)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_disjoint_windows_give_transformers_own_loss(kind):
    model = tiny(kind)
    ids = np.random.default_rng(0).integers(0, 97, 96)
    measured = perplexity(torch_logits(model), ids, window=32, stride=32)
    losses = []
    with torch.no_grad():
        for start in range(0, 96, 32):
            chunk = torch.from_numpy(ids[start : start + 32])[None]
            losses.append(float(model(input_ids=chunk, labels=chunk).loss))  # mean over its 31 predictions
    assert measured.tokens == 93 and measured.windows == 3
    assert measured.nll_per_token == pytest.approx(sum(losses) / 3, rel=1e-5)
    assert measured.perplexity == pytest.approx(math.exp(measured.nll_per_token))


def test_a_model_that_knows_the_text_has_a_lower_perplexity_than_chance():
    model = tiny("llama")
    ids = np.tile(np.arange(10), 20)  # a pattern a few steps of training learn
    before = perplexity(torch_logits(model), ids, 32, 16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        batch = torch.from_numpy(ids[:64])[None]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    after = perplexity(torch_logits(model), ids, 32, 16)
    assert before.perplexity > 50 and after.perplexity < 2.0 and after.tokens == before.tokens == 199

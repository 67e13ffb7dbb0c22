"""A causal LM's decoder layers removed: a silent layer leaves every logit unchanged and is ranked least important by
both measures; the shallower model reloads with plain transformers and decodes with its KV cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greencompress.compress.decoder_surgery import (
    block_influence,
    choose_layers,
    decoder_layers,
    output_change,
    remove_decoder_layers,
)
from greencompress.core.errors import GreencompressError
from greencompress.measure.generation import TorchGenerator
from tests.measure.test_perplexity import tiny


def silenced(kind: str, layer: int) -> torch.nn.Module:
    """A tiny model whose decoder layer `layer` adds nothing to the residual stream (its output projections zero)."""
    model = tiny(kind, layers=3).eval()
    block = decoder_layers(model)[2][layer]
    outputs = (
        (block.self_attn.o_proj, block.mlp.down_proj) if kind == "llama" else (block.attn.c_proj, block.mlp.c_proj)
    )
    with torch.no_grad():
        for projection in outputs:
            projection.weight.zero_()
            if projection.bias is not None:
                projection.bias.zero_()
    return model


def windows(count: int = 2, length: int = 24) -> list[torch.Tensor]:
    rng = np.random.default_rng(3)
    return [torch.from_numpy(rng.integers(0, 97, (1, length))) for _ in range(count)]


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_silent_layer_removed_leaves_every_logit_unchanged_and_is_ranked_least_important(kind):
    model = silenced(kind, 1)
    ids = windows(1)[0]
    with torch.no_grad():
        before = model(input_ids=ids).logits
    influence = block_influence(model, windows())
    assert min(influence, key=influence.get) == 1 and influence[1] < 1e-6 < min(influence[0], influence[2])
    chosen, divergence = output_change(model, windows(), 1)
    assert chosen == [1] and divergence[1] < 1e-6
    assert remove_decoder_layers(model, [1]) == [0, 2]
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.allclose(after, before, atol=1e-5)
    count = model.config.num_hidden_layers if kind == "llama" else model.config.n_layer
    assert count == len(decoder_layers(model)[2]) == 2


def test_the_shallower_llama_reloads_with_plain_transformers_and_decodes_with_its_kv_cache(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny("llama", layers=3).eval()
    chosen, _ = choose_layers(model, windows(), 1, "similarity")
    remove_decoder_layers(model, chosen)
    assert [layer.self_attn.layer_idx for layer in decoder_layers(model)[2]] == [0, 1]  # the cache's numbering
    model.save_pretrained(tmp_path / "shallow")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "shallow").eval()
    assert reloaded.config.num_hidden_layers == 2 and len(reloaded.model.layers) == 2
    ids = windows(1, 16)[0]
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)
    generator = TorchGenerator(reloaded)
    state = generator.prefill(ids.numpy())
    for _ in range(5):
        state = generator.step(state)
    cached = generator.tokens(state)[0]
    sequence = ids
    with torch.no_grad():  # the same greedy tokens without a cache, the whole sequence each time
        for _ in range(6):
            sequence = torch.cat([sequence, reloaded(input_ids=sequence).logits[:, -1:].argmax(-1)], dim=1)
    assert np.array_equal(cached, sequence[0, 16:].numpy())


def test_removing_every_layer_or_one_that_is_not_there_is_refused():
    model = tiny("llama", layers=3)
    with pytest.raises(GreencompressError, match="the model has 3 decoder layers"):
        choose_layers(model, windows(), 3, "similarity")
    with pytest.raises(GreencompressError, match="decoder layers \\[5\\]: the model has 3"):
        remove_decoder_layers(model, [5])
    with pytest.raises(GreencompressError, match="cannot remove all 3"):
        remove_decoder_layers(model, [0, 1, 2])

"""Dynamic int8 (W8A8) of a causal LM in PyTorch: int8 Linear layers with per-channel weights, the head kept or
untied and quantized, the original untouched, and refused where there is no nn.Linear to quantize."""

from __future__ import annotations

import pytest
import torch

from greencompress.compress.dynamic_int8 import DynamicInt8Config, quantize_dynamic_int8
from tests.measure.test_perplexity import tiny


def test_every_linear_layer_but_the_head_runs_int8_with_a_scale_per_output_channel():
    model = tiny("llama")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    quantized, done = quantize_dynamic_int8(model, DynamicInt8Config())
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    layers = [m for n, m in quantized.named_modules() if "layers." in n and isinstance(m, dynamic)]
    assert len(layers) == done["layers"] == 2 * 7 and done["left_as_they_were"] == 1  # the head
    assert all(layer.weight().qscheme() == torch.per_channel_affine for layer in layers)
    assert type(quantized.lm_head) is torch.nn.Linear and torch.equal(quantized.lm_head.weight, model.lm_head.weight)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in before.items())  # a copy was changed
    ids = torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact, served = model(ids).logits, quantized(ids).logits
    error = (served - exact).abs().max() / exact.abs().max()
    assert 0 < error < 0.05  # int8 arithmetic: close, not equal


def test_the_head_is_untied_before_it_is_quantized_and_per_layer_weights_have_one_scale():
    model = tiny("llama")
    model.config.tie_word_embeddings, model.lm_head.weight = True, model.model.embed_tokens.weight  # as SmolLM2's
    embedding = model.model.embed_tokens.weight.detach().clone()
    quantized, done = quantize_dynamic_int8(model, DynamicInt8Config(per_channel=False, head="int8"))
    assert done["layers"] == 2 * 7 + 1 and done["head"] == "int8" and not quantized.config.tie_word_embeddings
    assert quantized.lm_head.weight().qscheme() == torch.per_tensor_affine
    assert torch.equal(quantized.model.embed_tokens.weight, embedding)  # the embedding keeps its FP32 rows
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight


def test_a_model_without_linear_layers_to_quantize_is_refused():
    with pytest.raises(ValueError, match="GPT-2's are Conv1D"):
        quantize_dynamic_int8(tiny("gpt2"), DynamicInt8Config())

"""Round-to-nearest weight grids: what int8 and int4 codes can stand for, and what they cost a tiny Llama."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greencompress.compress.weight_only import WeightGrid, fake_quantize, quantize_dequantize
from greencompress.measure.perplexity import perplexity, torch_logits
from tests.measure.test_perplexity import tiny


@pytest.mark.parametrize(
    "grid, levels",
    [
        (WeightGrid(4, 32, True), 15),  # -7..7
        (WeightGrid(4, 32, False), 16),  # 0..15
        (WeightGrid(8, None, True), 255),
    ],
)
def test_each_group_holds_at_most_its_grids_values_and_keeps_its_extremes(grid, levels):
    weight = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    restored = quantize_dequantize(weight, grid)
    group = grid.group_size or 64
    for row in range(8):
        for start in range(0, 64, group):
            original, values = weight[row, start : start + group], restored[row, start : start + group]
            assert len(torch.unique(values)) <= levels
            step = (original.max() - original.min()) / (levels - 1) if not grid.symmetric else None
            if grid.symmetric:  # the largest magnitude is on the grid exactly
                peak = original.abs().argmax()
                assert torch.isclose(values[peak], original[peak], atol=1e-6)
            else:  # every value within half a step of its code
                assert (values - original).abs().max() <= step / 2 + 1e-6


def test_finer_groups_and_more_bits_cost_less_and_the_head_is_kept():
    model = tiny("llama")
    head = model.lm_head.weight.clone()
    errors = {}
    for grid in (WeightGrid(8, None, True), WeightGrid(4, 16, True), WeightGrid(4, 32, True)):
        copy = tiny("llama")
        errors[grid.name] = fake_quantize(copy, grid)["mean_relative_weight_error"]
    assert errors["int8-per-channel-sym"] < errors["int4-g16-sym"] < errors["int4-g32-sym"]
    done = fake_quantize(model, WeightGrid(4, 32, False))
    assert done["layers"] == 2 * 7 and done["left_as_they_were"] == {"lm_head": "kept: the output head"}
    assert torch.equal(model.lm_head.weight, head)
    ids = np.random.default_rng(1).integers(0, 97, 64)
    reference, quantized = tiny("llama"), model
    assert perplexity(torch_logits(quantized), ids, 32, 16).perplexity != pytest.approx(
        perplexity(torch_logits(reference), ids, 32, 16).perplexity, rel=1e-6
    )
    with pytest.raises(ValueError, match="group_size 48 does not divide the layer's 64 inputs"):
        quantize_dequantize(torch.zeros(4, 64), WeightGrid(4, 48, True))


def test_activation_aware_scaling_never_rounds_worse_than_plain_rounding_and_keeps_the_function():
    from greencompress.compress.weight_only import activation_aware

    grid = WeightGrid(4, 16, True)
    ids = [torch.from_numpy(np.random.default_rng(seed).integers(0, 97, (1, 48))) for seed in range(3)]
    plain, aware, reference = tiny("llama"), tiny("llama"), tiny("llama")
    with torch.no_grad():  # a few input channels far louder than the rest, as real LMs have
        for model in (plain, aware, reference):
            model.model.embed_tokens.weight[:, :3] *= 20
    fake_quantize(plain, grid)
    done = activation_aware(aware, grid, ids)
    assert done["layers"] == 14 and set(done["alphas"].values()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert len(done["alphas"]) == 2 * 2  # per layer: q+k+v (into the input norm), gate+up (into the second norm)
    test = np.random.default_rng(9).integers(0, 97, 96)
    exact = perplexity(torch_logits(reference), test, 32, 16).perplexity

    def drift(model):
        return abs(perplexity(torch_logits(model), test, 32, 16).perplexity - exact)

    assert drift(aware) <= drift(plain) * 1.05  # chosen per group on calibration text, judged on other text


def layer_and_correlated_inputs(outputs: int, inputs: int, rows: int, seed: int):
    """A random weight [outputs, inputs] and `rows` inputs whose channels are correlated, as real activations are."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(outputs, inputs, generator=generator, dtype=torch.float64)
    mixing = torch.randn(inputs, inputs, generator=generator).double()
    return weight, torch.randn(rows, inputs, generator=generator, dtype=torch.float64) @ mixing


def test_error_feedback_stays_on_the_grid_and_loses_less_of_the_layers_output_than_plain_rounding():
    from greencompress.compress.weight_only import _round_with_feedback

    weight, x = layer_and_correlated_inputs(16, 64, 512, seed=0)
    grid = WeightGrid(4, 16, True)
    fed, plain = _round_with_feedback(weight, x, grid)[0], quantize_dequantize(weight, grid)
    for row in range(16):  # at most 15 values per group of 16 inputs: still the int4 grid
        for start in range(0, 64, 16):
            assert len(torch.unique(fed[row, start : start + 16])) <= 15
    assert (x @ (fed - weight).T).norm() < 0.9 * (x @ (plain - weight).T).norm()  # correlated inputs: it pays


def test_error_feedback_on_a_tiny_llama_quantizes_every_layer_but_the_head():
    from greencompress.compress.weight_only import error_feedback

    model = tiny("llama")
    head = model.lm_head.weight.clone()
    ids = [torch.from_numpy(np.random.default_rng(seed).integers(0, 97, (1, 48))) for seed in range(3)]
    done = error_feedback(model, WeightGrid(4, 32, False), ids)
    assert done["layers"] == 14 and torch.equal(model.lm_head.weight, head)
    values = model.model.layers[0].mlp.down_proj.weight[0, :32]
    assert len(torch.unique(values)) <= 16


def test_error_feedback_in_blocks_is_the_same_arithmetic_as_column_by_column():
    from greencompress.compress.weight_only import _round_with_feedback

    weight, x = layer_and_correlated_inputs(24, 256, 600, seed=3)
    for grid in (WeightGrid(4, 32, False), WeightGrid(4, 64, True, False), WeightGrid(4, 32, False, True)):
        blocked, grids = _round_with_feedback(weight, x, grid, block=128)
        one_by_one, _ = _round_with_feedback(weight, x, grid, block=256)  # one block: every column updates all
        assert torch.allclose(blocked, one_by_one, atol=1e-9) and grids.scale.shape == (24, 256 // grid.group_size)


def test_gpt2s_conv1d_layers_are_rounded_along_their_inputs_and_activation_aware_scales_are_refused():
    from greencompress.compress.weight_only import WeightOnlyConfig, quantize_weights, weight_of

    model = tiny("gpt2")
    ids = [torch.from_numpy(np.random.default_rng(seed).integers(0, 97, (1, 48))) for seed in range(2)]
    done = quantize_weights(model, WeightOnlyConfig(bits=4, group_size=16, symmetric=True, method="feedback"), ids)
    assert done["layers"] == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj per layer; the head kept
    weight = weight_of(model.transformer.h[0].mlp.c_fc)  # stored [in, out]; rounded in groups of its inputs
    assert weight.shape == (128, 32) and len(torch.unique(weight[0, :16])) <= 15
    with pytest.raises(ValueError, match="norms; this model has none"):
        quantize_weights(tiny("gpt2"), WeightOnlyConfig(bits=4, group_size=16, method="aware"), ids)


def test_a_plan_puts_the_layers_it_names_on_int8_and_the_rest_on_the_default_grid():
    from greencompress.compress.weight_only import WeightOnlyConfig, quantize_weights

    config = WeightOnlyConfig(bits=4, group_size=16, method="rtn", int8_layers=["down_proj", "layers.0.mlp.up_proj"])
    model = tiny("llama")
    original = {name: weight.clone() for name, weight in model.state_dict().items()}
    done = quantize_weights(model, config, [])
    bits = {name: layer.grid.bits for name, layer in done["grids"].items()}
    assert bits["model.layers.0.mlp.down_proj"] == bits["model.layers.1.mlp.down_proj"] == 8
    assert bits["model.layers.0.mlp.up_proj"] == 8 and bits["model.layers.1.mlp.up_proj"] == 4
    assert sum(b == 8 for b in bits.values()) == 3 and done["grid"] == (
        "int4-g16-asym, int8-g16-sym for down_proj+layers.0.mlp.up_proj"
    )
    for name, layer in done["grids"].items():
        codes = layer.codes(model.get_submodule(name).weight)
        assert codes.abs().max() == (127 if layer.grid.bits == 8 else 15)  # each group's extreme on the grid's end
        assert torch.equal(codes, layer.codes(original[f"{name}.weight"]))  # rounded to nearest: the same codes


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(int8_layers=["v_proj"]), "without k_proj, q_proj: q_proj, k_proj and v_proj run as one fused"),
        (dict(int8_layers=["layers.0.self_attn.q_proj"]), "without k_proj, v_proj"),
        (dict(bits=8, symmetric=True, int8_layers=["down_proj"]), "every layer is int8 already"),
    ],
)
def test_int8_layers_that_a_runtime_cannot_hold_are_refused(settings, message):
    from pydantic import ValidationError

    from greencompress.compress.weight_only import WeightOnlyConfig

    with pytest.raises(ValidationError, match=message):
        WeightOnlyConfig(**settings)


def test_int8_layers_that_name_no_layer_are_refused_before_any_rounding():
    from greencompress.compress.weight_only import WeightOnlyConfig, quantize_weights

    model = tiny("llama")
    before = model.model.layers[0].mlp.down_proj.weight.clone()
    with pytest.raises(ValueError, match="int8_layers: down_projection names no linear layer"):
        quantize_weights(model, WeightOnlyConfig(method="rtn", int8_layers=["down_projection"]), [])
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, before)

"""ONNX Runtime's GroupQueryAttention, as OpenVINO read it, rewritten as the attention OpenVINO's CPU plugin fuses
with its KV cache.

OpenVINO reads the builder's GroupQueryAttention (rotary embedding, cache concatenation and attention in one node)
and its CPU plugin decomposes it into separate operations, so each decode step copies every layer's cache into a
new tensor and back into its state. The plugin has a kernel that keeps the cache in place
(ScaledDotProductAttentionWithKVCache); it fuses a ScaledDotProductAttention whose keys and values are a state,
reordered by a `beam_idx` input and concatenated with the new ones, as optimum-intel's exports are written. This
module writes each GroupQueryAttention node in that form, from standard operations: the rotary embedding at the
positions after the cache's, the cache concatenation, each key/value head repeated for the query heads that share
it, and a causal mask aligned to the cache's end (a decode step's one query sees every cached key). Only nodes whose
attributes it reproduces are rewritten (rotary, not interleaved, no local window, no softcap, no quantized cache);
the others are left to OpenVINO's own reading.
"""

from __future__ import annotations

import numpy as np

BEAM_INPUT = "beam_idx"  # which cached sequence each row of the batch continues (here: its own)


def fuse_attention(model) -> int:
    """Rewrite the GroupQueryAttention nodes of `model` (an openvino.Model with its past/present cache still inputs
    and outputs); returns how many. A `beam_idx` input is added when any was rewritten."""
    import openvino.opset13 as ops

    # In topological order: the first layer's inputs, which every later layer depends on, give the shared positions.
    nodes = [op for op in model.get_ordered_ops() if op.get_type_name() == "GroupQueryAttention" and _reproducible(op)]
    if not nodes:
        return 0
    beam = ops.parameter([-1], np.int32, name=BEAM_INPUT)
    beam.output(0).get_tensor().set_names({BEAM_INPUT})
    positions = {}  # one set of positions, rotary tables and mask per pair of tables, shared by the layers
    for node in nodes:
        tables = (
            node.input_value(7).get_node().get_friendly_name(),
            node.input_value(8).get_node().get_friendly_name(),
        )
        if tables not in positions:
            positions[tables] = _positions(node)
        attention, keys, values = _attention(node, beam.output(0), positions[tables])
        for index, made in enumerate((attention, keys, values)):
            node.output(index).replace(made.output(0))
    model.add_parameters([beam])
    model.validate_nodes_and_infer_types()
    return len(nodes)


def _reproducible(node) -> bool:
    settings = node.get_attributes()
    return (
        bool(settings.get("do_rotary"))
        and not settings.get("rotary_interleaved")
        and settings.get("local_window_size", -1) == -1
        and not settings.get("softcap")
        and not settings.get("smooth_softmax")
        and settings.get("k_quant_type", "NONE") == "NONE"
        and settings.get("v_quant_type", "NONE") == "NONE"
        and node.get_input_size() >= 9
    )


def _positions(node):
    """The new tokens' rotary cos and sin [1, 1, tokens, size] and the causal mask [tokens, cache + tokens], from
    the node's queries and past keys: every layer's cache holds the same positions, so one set serves them all."""
    import openvino.opset13 as ops

    queries, past_keys = node.input_value(0), node.input_value(3)
    cos_table, sin_table = node.input_value(7), node.input_value(8)
    cached = ops.gather(ops.shape_of(past_keys, "i64"), _scalar(2), _scalar(0))
    new = ops.gather(ops.shape_of(queries, "i64"), _scalar(2), _scalar(0))
    total = ops.add(cached, new)
    positions = ops.range(cached, total, _scalar(1), "i64")  # the new tokens' positions, after the cache's
    # The tables hold half a head each: repeated for both halves, [1, 1, tokens, size] (the form OpenVINO's rotary
    # fusion recognises).
    cos, sin = (
        ops.unsqueeze(ops.concat([half, half], 1), _vector(0, 1))
        for half in (ops.gather(table, positions, _scalar(0)) for table in (cos_table, sin_table))
    )
    # Causal from the cache's end: the query at position p sees keys 0..p.
    later = ops.greater(
        ops.unsqueeze(ops.range(_scalar(0), total, _scalar(1), "i64"), _vector(0)),
        ops.unsqueeze(positions, _vector(1)),
    )
    mask = ops.select(later, ops.constant(np.float32(-np.inf)), ops.constant(np.float32(0)))
    return cos, sin, mask


def _scalar(value):
    import openvino.opset13 as ops

    return ops.constant(np.int64(value))


def _vector(*values):
    import openvino.opset13 as ops

    return ops.constant(np.array(values, np.int64))


def _attention(node, beam, shared_positions):
    """The node's three outputs (attention [batch, tokens, heads x size], present keys, present values) rebuilt.
    Inputs as OpenVINO reads them: queries, keys, values [batch, heads, tokens, size], past keys and values (then
    two sequence lengths, unused: batch rows share one length; the cos and sin tables, read by `_positions`).
    `shared_positions`: `_positions`' cos, sin and mask, computed once for every layer."""
    import openvino.opset13 as ops

    settings = node.get_attributes()
    heads, kv_heads = settings["num_heads"], settings["kv_num_heads"]
    queries, keys, values, past_keys, past_values = (node.input_value(index) for index in range(5))
    size = queries.get_partial_shape()[3].get_length()
    cos, sin, mask = shared_positions

    def rotate(x):  # rotary embedding, non-interleaved: x cos + (-second half, first half) sin
        first, second = ops.variadic_split(x, _scalar(3), _vector(size // 2, size - size // 2)).outputs()
        halves_swapped = ops.concat([ops.multiply(second, ops.constant(np.float32(-1))), first], -1)
        return ops.add(ops.multiply(x, cos), ops.multiply(halves_swapped, sin))

    present_keys = ops.concat([ops.gather(past_keys, beam, _scalar(0)), rotate(keys)], 2)
    present_values = ops.concat([ops.gather(past_values, beam, _scalar(0)), values], 2)

    def shared(x):  # each key/value head repeated for its query heads: [batch, heads, positions, size]
        repeated = ops.broadcast(
            ops.unsqueeze(x, _vector(2)), _vector(1, 1, heads // kv_heads, 1, 1), broadcast_spec="BIDIRECTIONAL"
        )
        return ops.reshape(repeated, _vector(0, heads, -1, size), special_zero=True)

    scale = ops.constant(np.float32(settings.get("scale") or 1 / np.sqrt(size)))
    attended = ops.scaled_dot_product_attention(
        rotate(queries), shared(present_keys), shared(present_values), mask, scale, causal=False
    )
    merged = ops.reshape(ops.transpose(attended, _vector(0, 2, 1, 3)), _vector(0, 0, heads * size), special_zero=True)
    return merged, present_keys, present_values

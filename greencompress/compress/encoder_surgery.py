"""Removing structure from a Hugging Face encoder for real: attention heads, FFN neurons and whole layers.

Each removal slices the weight matrices (smaller dense products, which every runtime feels), keeps
the config truthful where it can say it (`intermediate_size`, `num_hidden_layers`), and returns a
record that `replay` applies to a fresh copy of the original model, so a saved pruned model reloads.

transformers 5 no longer has `config.pruned_heads`: a model whose heads were removed reloads through
greencompress (the record) or from its ONNX file, not through `from_pretrained` alone. FFN neurons
(the same count removed in every layer) and layers reload with plain transformers.
"""

from __future__ import annotations

import torch
from torch import nn

from greencompress.core.errors import GreencompressError
from greencompress.models.encoder_layout import (
    LAYER_PARTS,
    encoder_layers,
    find_module,
    layer_list,
)

HEADS, FFN, LAYERS = "greencompress.heads", "greencompress.ffn", "greencompress.layers"


def configs(model: nn.Module) -> list:
    """Every distinct Hugging Face config object inside `model` (a wrapper and its encoder may hold their own)."""
    seen = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            seen[id(config)] = config
    return list(seen.values())


def sliced(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A copy of `linear` keeping rows (`dim` 0: outputs) or columns (`dim` 1: inputs) `keep`."""
    weight = linear.weight.detach().index_select(dim, keep).clone()
    out_features, in_features = weight.shape
    made = nn.Linear(in_features, out_features, bias=linear.bias is not None, dtype=weight.dtype)
    made.weight = nn.Parameter(weight)
    if linear.bias is not None:
        bias = linear.bias.detach()
        made.bias = nn.Parameter((bias.index_select(0, keep) if dim == 0 else bias).clone())
    return made


def _replace(parent_layer: nn.Module, paths: tuple[str, ...], made: nn.Linear) -> None:
    for path in paths:
        owner_path, _, attribute = path.rpartition(".")
        owner = find_module(parent_layer, owner_path) if owner_path else parent_layer
        if owner is not None and isinstance(getattr(owner, attribute, None), nn.Linear):
            setattr(owner, attribute, made)
            return
    raise GreencompressError(f"cannot replace {paths[0]} in {type(parent_layer).__name__}")


def remove_heads(model: nn.Module, removed: dict[int, list[int]]) -> list:
    """Remove attention heads `removed[layer]` (indices among that layer's current heads); returns the record."""
    layers = layer_list(model)[2]
    for index, heads in sorted(removed.items()):
        if not heads:
            continue
        parts = encoder_layers(model)[index]
        size, count = parts.head_size, parts.heads
        if len(set(heads)) >= count:
            raise GreencompressError(f"encoder layer {index}: cannot remove all {count} attention heads")
        kept_heads = [h for h in range(count) if h not in set(heads)]
        keep = torch.tensor([h * size + i for h in kept_heads for i in range(size)])
        for part in ("query", "key", "value"):
            _replace(layers[index], LAYER_PARTS[part], sliced(getattr(parts, part), keep, 0))
        _replace(layers[index], LAYER_PARTS["attention_output"], sliced(parts.attention_output, keep, 1))
        attention = parts.attention
        for attribute in ("num_attention_heads", "n_heads"):
            if hasattr(attention, attribute):
                setattr(attention, attribute, len(kept_heads))
        if hasattr(attention, "all_head_size"):
            attention.all_head_size = len(kept_heads) * size
    _state_head_count(model)
    return [HEADS, [[index, sorted(heads)] for index, heads in sorted(removed.items()) if heads]]


def _state_head_count(model: nn.Module) -> None:
    """Write the head count into the config where the config can state it: every layer keeps the same count, and the
    attention takes its head width from `config.head_dim` (transformers 5's q_proj/o_proj layout, e.g. ViT). BERT's
    attention derives it as hidden_size / num_attention_heads, so there a smaller count would misstate the width."""
    layers = encoder_layers(model)
    counts, sizes = {parts.heads for parts in layers}, {parts.head_size for parts in layers}
    if len(counts) != 1 or len(sizes) != 1 or not all(hasattr(parts.attention, "head_dim") for parts in layers):
        return
    count, size = counts.pop(), sizes.pop()
    for config in configs(model):
        if hasattr(config, "num_attention_heads"):
            config.num_attention_heads, config.head_dim = count, size


def remove_ffn_neurons(model: nn.Module, removed: dict[int, list[int]]) -> list:
    """Remove FFN neurons `removed[layer]` (rows of the first product, columns of the second); returns the record.

    When every layer ends with the same width, the config's `intermediate_size` (or `hidden_dim`) says it.
    """
    layers = layer_list(model)[2]
    for index, neurons in sorted(removed.items()):
        if not neurons:
            continue
        parts = encoder_layers(model)[index]
        keep = torch.tensor([n for n in range(parts.ffn_width) if n not in set(neurons)])
        if len(keep) == 0:
            raise GreencompressError(f"encoder layer {index}: cannot remove all {parts.ffn_width} FFN neurons")
        _replace(layers[index], LAYER_PARTS["ffn_in"], sliced(parts.ffn_in, keep, 0))
        _replace(layers[index], LAYER_PARTS["ffn_out"], sliced(parts.ffn_out, keep, 1))
    widths = {parts.ffn_width for parts in encoder_layers(model)}
    if len(widths) == 1:
        width = widths.pop()
        for config in configs(model):
            for attribute in ("intermediate_size", "hidden_dim"):
                if hasattr(config, attribute):
                    setattr(config, attribute, width)
    return [FFN, [[index, sorted(neurons)] for index, neurons in sorted(removed.items()) if neurons]]


def remove_layers(model: nn.Module, removed: list[int]) -> list:
    """Remove whole encoder layers (indices among the current ones); returns the record."""
    owner, attribute, layers = layer_list(model)
    if len(set(removed)) >= len(layers):
        raise GreencompressError(f"cannot remove all {len(layers)} encoder layers")
    kept = nn.ModuleList([layer for index, layer in enumerate(layers) if index not in set(removed)])
    for index, layer in enumerate(kept):  # transformers numbers layers for its caches
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    setattr(owner, attribute, kept)
    for config in configs(model):
        for name in ("num_hidden_layers", "n_layers"):
            if hasattr(config, name):
                setattr(config, name, len(kept))
    if hasattr(owner, "n_layers"):
        owner.n_layers = len(kept)
    return [LAYERS, sorted(set(removed))]


def is_encoder_record(record) -> bool:
    return isinstance(record, (list, tuple)) and len(record) == 2 and record[0] in (HEADS, FFN, LAYERS)


def replay(model: nn.Module, record) -> None:
    """Apply one record of `remove_heads`, `remove_ffn_neurons` or `remove_layers` to `model` (in place)."""
    kind, payload = record
    if kind == LAYERS:
        remove_layers(model, list(payload))
    else:
        removal = {int(index): list(items) for index, items in payload}
        (remove_heads if kind == HEADS else remove_ffn_neurons)(model, removal)

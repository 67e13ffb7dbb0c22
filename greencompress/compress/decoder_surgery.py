"""Whole decoder layers of a causal LM, ranked by a measured importance and removed so that plain transformers
reloads the result: the layer list shortened, the config's layer count rewritten, the KV cache's layer numbers
renumbered.

Importance, on calibration token windows (never the evaluation text):
- `similarity`: Block Influence (Men et al. 2024, ShortGPT): 1 - cosine between a layer's input and output hidden
  states, averaged over tokens, one forward pass for all layers; a layer that barely turns its input is cheap;
- `output_change`: the KL divergence of the model's next-token distributions with the candidate bypassed from the
  full model's, averaged over tokens; chosen greedily, so each choice sees the ones made before it.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

from greencompress.core.errors import GreencompressError

log = logging.getLogger(__name__)

# Where causal LMs keep their decoder layers (Llama family, GPT-2) and the config fields that count them.
DECODER_LISTS = ("model.layers", "transformer.h")
COUNT_FIELDS = ("num_hidden_layers", "n_layer")


def decoder_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(owner, attribute, the ModuleList of decoder layers) of a transformers causal LM."""
    for path in DECODER_LISTS:
        owner_path, attribute = path.rsplit(".", 1)
        try:
            owner = model.get_submodule(owner_path)
        except AttributeError:
            continue
        if isinstance(getattr(owner, attribute, None), nn.ModuleList):
            return owner, attribute, getattr(owner, attribute)
    raise GreencompressError(
        f"no decoder layers found in {type(model).__name__} (looked for {' or '.join(DECODER_LISTS)})"
    )


def remove_decoder_layers(model: nn.Module, removed: list[int]) -> list[int]:
    """Remove the decoder layers at `removed` (indices among the current ones) in place; returns the indices kept."""
    owner, attribute, layers = decoder_layers(model)
    gone = set(removed)
    if not gone <= set(range(len(layers))):
        raise GreencompressError(f"decoder layers {sorted(gone)}: the model has {len(layers)}")
    if len(gone) >= len(layers):
        raise GreencompressError(f"cannot remove all {len(layers)} decoder layers")
    kept = [index for index in range(len(layers)) if index not in gone]
    shorter = nn.ModuleList([layers[index] for index in kept])
    for index, layer in enumerate(shorter):  # the KV cache is indexed by these numbers
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
    setattr(owner, attribute, shorter)
    config = model.config
    for name in COUNT_FIELDS:
        if hasattr(config, name):
            setattr(config, name, len(kept))
    types = getattr(config, "layer_types", None)
    if isinstance(types, list) and len(types) == len(layers):  # per-layer attention kinds (sliding or full)
        config.layer_types = [types[index] for index in kept]
    return kept


@contextlib.contextmanager
def layers_skipped(owner: nn.Module, attribute: str, skipped: list[int]):
    """Within the block, the layer list `owner.<attribute>` lacks the layers at `skipped` (an encoder's or a
    decoder's); the full list is put back after."""
    layers = getattr(owner, attribute)
    setattr(owner, attribute, nn.ModuleList([layer for i, layer in enumerate(layers) if i not in set(skipped)]))
    try:
        yield
    finally:
        setattr(owner, attribute, layers)


def _log_probs(model: nn.Module, windows: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.log_softmax(model(input_ids=ids, use_cache=False).logits.float(), dim=-1) for ids in windows]


@torch.no_grad()
def block_influence(model: nn.Module, windows: list[torch.Tensor]) -> dict[int, float]:
    """Each decoder layer's 1 - cosine between its input and output hidden states, averaged over tokens."""
    layers = decoder_layers(model)[2]
    totals = {index: [0.0, 0] for index in range(len(layers))}

    def hook(index: int):
        def record(_module, args, kwargs, output):
            given = args[0] if args else kwargs.get("hidden_states")
            result = output[0] if isinstance(output, (tuple, list)) else output
            cosine = nn.functional.cosine_similarity(given.flatten(0, -2).float(), result.flatten(0, -2).float(), dim=1)
            totals[index][0] += float((1 - cosine).sum())
            totals[index][1] += len(cosine)

        return record

    handles = [layer.register_forward_hook(hook(index), with_kwargs=True) for index, layer in enumerate(layers)]
    try:
        for ids in windows:
            model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {index: total / max(count, 1) for index, (total, count) in totals.items()}


@torch.no_grad()
def output_change(model: nn.Module, windows: list[torch.Tensor], count: int) -> tuple[list[int], dict[int, float]]:
    """`count` layers chosen greedily by the KL divergence their bypass adds to the model's next-token distributions
    (mean per token, nats); returns them in the order chosen and the first step's divergence for every layer."""
    reference = _log_probs(model, windows)
    candidates = range(len(decoder_layers(model)[2]))
    chosen: list[int] = []
    first: dict[int, float] = {}
    for step in range(count):
        divergence = {}
        for index in candidates:
            if index in chosen:
                continue
            with layers_skipped(*decoder_layers(model)[:2], [*chosen, index]):
                changed = _log_probs(model, windows)
            divergence[index] = float(
                sum((p.exp() * (p - q)).sum(-1).mean() for p, q in zip(reference, changed)) / len(windows)
            )
        if step == 0:
            first = divergence
        best = min(divergence, key=divergence.get)
        log.info("depth: step %d: bypassing layer %d adds %.4f nats per token", step + 1, best, divergence[best])
        chosen.append(best)
    return chosen, first


def choose_layers(
    model: nn.Module, windows: list[torch.Tensor], count: int, importance: str
) -> tuple[list[int], dict[int, float]]:
    """The `count` decoder layers to remove, and the importance measured for every layer."""
    layers = len(decoder_layers(model)[2])
    if count >= layers:
        raise GreencompressError(f"stages.depth.remove: {count} asked for, the model has {layers} decoder layers")
    model.eval()
    if importance == "similarity":
        measured = block_influence(model, windows)
        return sorted(measured, key=measured.get)[:count], measured
    return output_change(model, windows, count)

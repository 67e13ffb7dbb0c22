"""Which attention heads and FFN neurons of a Hugging Face encoder to remove, and removing them.

The same share is removed from every layer, so each layer keeps one head count (ONNX Runtime's
Attention fusion takes one for the whole graph) and one FFN width (which the config can state).
Which ones go is decided per layer by a criterion:

- `l1` / `l2`: the norm of the weights that make and consume the head or neuron (no data);
- `activation`: how much each head or neuron adds to the layer's output on calibration data, the
  mean norm of its contribution through the output projection over real (unpadded) tokens (for a ViT,
  every patch and its class token);
- `random`: a seeded control that any criterion should beat.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from greencompress.compress.encoder_surgery import remove_ffn_neurons, remove_heads
from greencompress.models.encoder_layout import EncoderLayer, encoder_layers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncoderScores:
    """Importance per layer: one value per head and one per FFN neuron (higher = keep)."""

    heads: list[torch.Tensor]
    neurons: list[torch.Tensor]


def _weight_scores(parts: EncoderLayer, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    size = parts.head_size
    made = torch.cat([getattr(parts, name).weight.detach().abs().pow(p) for name in ("query", "key", "value")], dim=1)
    consumed = parts.attention_output.weight.detach().abs().pow(p).T  # (all heads x size, hidden)
    per_row = made.sum(1) + consumed.sum(1)
    heads = per_row.view(parts.heads, size).sum(1)
    neurons = parts.ffn_in.weight.detach().abs().pow(p).sum(1) + parts.ffn_out.weight.detach().abs().pow(p).sum(0)
    return heads, neurons


@torch.no_grad()
def _activation_scores(model: nn.Module, layers: list[EncoderLayer], calibration) -> EncoderScores:
    """Mean contribution norm per head and per neuron on the calibration batches' real tokens."""
    heads = [torch.zeros(parts.heads) for parts in layers]
    neurons = [torch.zeros(parts.ffn_width) for parts in layers]
    state = {"mask": None, "tokens": 0.0}

    def head_hook(index: int):
        parts = layers[index]

        def hook(_module, args):
            context = args[0]  # (batch, sequence, heads x size): each head's attention output, side by side
            if state["mask"] is None:  # images: every position is a real patch (or the class token)
                state["mask"] = torch.ones(context.shape[:2])
                state["tokens"] += float(context.shape[0] * context.shape[1])
            weight = parts.attention_output.weight.view(
                parts.attention_output.out_features, parts.heads, parts.head_size
            )
            split = context.view(*context.shape[:-1], parts.heads, parts.head_size)
            contribution = torch.einsum("bshd,ohd->bsho", split, weight).norm(dim=-1)  # (batch, sequence, heads)
            heads[index] += (contribution * state["mask"][..., None]).sum((0, 1))

        return hook

    def neuron_hook(index: int):
        parts = layers[index]

        def hook(_module, args):
            activation = args[0].abs() * parts.ffn_out.weight.norm(dim=0)  # (batch, sequence, neurons)
            neurons[index] += (activation * state["mask"][..., None]).sum((0, 1))

        return hook

    handles = [parts.attention_output.register_forward_pre_hook(head_hook(i)) for i, parts in enumerate(layers)]
    handles += [parts.ffn_out.register_forward_pre_hook(neuron_hook(i)) for i, parts in enumerate(layers)]
    try:
        model.eval()
        for inputs, _ in calibration:
            if isinstance(inputs, dict):
                tensors = {name: torch.as_tensor(value) for name, value in inputs.items()}
                state["mask"] = tensors["attention_mask"].to(torch.float32)
                state["tokens"] += float(state["mask"].sum())
                model(**tensors)
            else:
                state["mask"] = None  # set by the first layer's hook, from the sequence the patches make
                model(torch.as_tensor(inputs))
    finally:
        for handle in handles:
            handle.remove()
    if state["tokens"] == 0:
        raise ValueError("no calibration tokens to score heads and FFN neurons with")
    return EncoderScores([h / state["tokens"] for h in heads], [n / state["tokens"] for n in neurons])


def encoder_scores(model: nn.Module, criterion: str, calibration=None, seed: int = 0) -> EncoderScores:
    """Importance of every head and FFN neuron of `model` by `criterion` (see the module's docstring)."""
    layers = encoder_layers(model)
    if criterion == "activation":
        return _activation_scores(model, layers, calibration)
    if criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        return EncoderScores(
            [torch.rand(parts.heads, generator=generator) for parts in layers],
            [torch.rand(parts.ffn_width, generator=generator) for parts in layers],
        )
    pairs = [_weight_scores(parts, 1 if criterion == "l1" else 2) for parts in layers]
    return EncoderScores([heads for heads, _ in pairs], [neurons for _, neurons in pairs])


def kept_count(total: int, ratio: float, round_to: int | None) -> int:
    """How many of `total` stay when `ratio` of them go: at least one, a multiple of `round_to` where one fits."""
    kept = max(1, round(total * (1 - ratio)))
    if round_to and round_to > 1 and kept >= round_to:
        kept = max(round_to, int(round(kept / round_to)) * round_to)
    return min(total, kept)


@dataclass(frozen=True)
class EncoderPruning:
    """What was removed: heads and FFN neurons per layer, before and after, and the records to replay it."""

    records: list
    heads_before: int
    heads_after: int
    ffn_before: int
    ffn_after: int


def prune_encoder(
    model: nn.Module,
    heads_ratio: float,
    ffn_ratio: float,
    criterion: str,
    calibration=None,
    round_to: int | None = None,
    seed: int = 0,
) -> EncoderPruning:
    """Remove `heads_ratio` of each layer's heads and `ffn_ratio` of its FFN neurons, least important first, in place"""
    layers = encoder_layers(model)
    scores = encoder_scores(model, criterion, calibration, seed)
    heads_before, ffn_before = layers[0].heads, layers[0].ffn_width
    removed_heads, removed_neurons = {}, {}
    for index, parts in enumerate(layers):
        if heads_ratio > 0:
            keep = kept_count(parts.heads, heads_ratio, None)
            removed_heads[index] = scores.heads[index].argsort()[: parts.heads - keep].tolist()
        if ffn_ratio > 0:
            keep = kept_count(parts.ffn_width, ffn_ratio, round_to)
            removed_neurons[index] = scores.neurons[index].argsort()[: parts.ffn_width - keep].tolist()
    records = []
    if any(removed_heads.values()):
        records.append(remove_heads(model, removed_heads))
    if any(removed_neurons.values()):
        records.append(remove_ffn_neurons(model, removed_neurons))
    after = encoder_layers(model)
    log.info(
        "prune: attention heads %d -> %d, FFN width %d -> %d per layer (%s)",
        heads_before,
        after[0].heads,
        ffn_before,
        after[0].ffn_width,
        criterion,
    )
    return EncoderPruning(records, heads_before, after[0].heads, ffn_before, after[0].ffn_width)

"""A causal LM made narrower: FFN neurons (gate, up and down together) and attention heads by whole key/value
groups (a KV head with the query heads that share it), the least important first, removed so that plain
transformers reloads the result.

The same number goes from every layer, because a Llama-family config states one `intermediate_size`, one
`num_attention_heads` and one `num_key_value_heads` (and `head_dim`, written so it is not derived again from the
hidden size); GPT-2 states `n_inner`, and derives a head's width from `n_embd / n_head`, so its heads cannot go.

Importance (higher = keep), per layer:
- `activation`: on calibration windows, the mean norm of what each neuron or group adds to the residual stream
  through the output projection (down_proj's column, o_proj's columns of the group's query heads);
- `l1` / `l2`: the norm of the weights that make and consume it (no data);
- `random`: a seeded control.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from greencompress.compress.decoder_surgery import decoder_layers
from greencompress.compress.encoder_prune import kept_count
from greencompress.compress.encoder_surgery import sliced
from greencompress.core.errors import GreencompressError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderWidth:
    """The projections of one decoder layer that width removal slices. GPT-2's Conv1D layers store their weight
    transposed (inputs x outputs); `attention` is None where heads cannot be removed."""

    ffn_in: tuple[nn.Module, ...]  # gate_proj and up_proj, or c_fc: one output per neuron
    ffn_out: nn.Module  # down_proj or c_proj: one input per neuron
    attention: nn.Module | None  # q/k/v/o_proj live here (Llama family)
    owner: nn.Module  # the module holding the FFN's projections (`mlp`)

    @property
    def neurons(self) -> int:
        return _inputs_weight(self.ffn_out).shape[1]

    @property
    def head_dim(self) -> int:
        return int(self.attention.head_dim)

    @property
    def kv_groups(self) -> int:
        return self.attention.k_proj.out_features // self.head_dim

    @property
    def heads_per_group(self) -> int:
        return self.attention.q_proj.out_features // self.head_dim // self.kv_groups


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"  # transformers.pytorch_utils.Conv1D: weight (inputs, outputs)


def _inputs_weight(module: nn.Module) -> torch.Tensor:
    """The weight as (outputs, inputs), whatever the layer stores."""
    return module.weight.T if _is_conv1d(module) else module.weight


def _sliced(module: nn.Module, keep: torch.Tensor, outputs: bool) -> nn.Module:
    """A copy of a Linear or Conv1D keeping the outputs (or inputs) at `keep`."""
    if not _is_conv1d(module):
        return sliced(module, keep, 0 if outputs else 1)
    from transformers.pytorch_utils import Conv1D

    weight = module.weight.detach().index_select(1 if outputs else 0, keep).clone()
    made = Conv1D(weight.shape[1], weight.shape[0])
    made.weight = nn.Parameter(weight)
    made.bias = nn.Parameter((module.bias.detach().index_select(0, keep) if outputs else module.bias.detach()).clone())
    return made


def decoder_widths(model: nn.Module) -> list[DecoderWidth]:
    """Each decoder layer's projections that width removal slices (Llama family: Llama, SmolLM, Qwen2, Mistral;
    GPT-2)."""
    widths = []
    for index, layer in enumerate(decoder_layers(model)[2]):
        mlp = getattr(layer, "mlp", None)
        if mlp is not None and all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj")):
            attention = getattr(layer, "self_attn", None)
            if attention is None or not all(hasattr(attention, f"{p}_proj") for p in "qkvo"):
                attention = None
            widths.append(DecoderWidth((mlp.gate_proj, mlp.up_proj), mlp.down_proj, attention, mlp))
        elif mlp is not None and hasattr(mlp, "c_fc") and hasattr(mlp, "c_proj"):
            widths.append(DecoderWidth((mlp.c_fc,), mlp.c_proj, None, mlp))
        else:
            raise GreencompressError(
                f"decoder layer {index} of {type(model).__name__}: its FFN is not gate/up/down_proj (Llama family) "
                "nor c_fc/c_proj (GPT-2); its width cannot be pruned"
            )
    return widths


@dataclass(frozen=True)
class WidthScores:
    """Importance per layer: one value per FFN neuron and one per key/value group (empty where heads stay)."""

    neurons: list[torch.Tensor]
    groups: list[torch.Tensor]


def _group_contributions(width: DecoderWidth, context: torch.Tensor) -> torch.Tensor:
    """Per key/value group, the summed norm over tokens of what its query heads add through o_proj."""
    heads = width.kv_groups * width.heads_per_group
    weight = width.attention.o_proj.weight.view(-1, heads, width.head_dim)
    split = context.reshape(-1, heads, width.head_dim).float()
    per_head = torch.einsum("thd,ohd->tho", split, weight.float()).norm(dim=-1).sum(0)
    return per_head.view(width.kv_groups, width.heads_per_group).sum(1)


@torch.no_grad()
def _activation_scores(model: nn.Module, widths: list[DecoderWidth], windows: list[torch.Tensor]) -> WidthScores:
    neurons = [torch.zeros(width.neurons) for width in widths]
    groups = [torch.zeros(width.kv_groups if width.attention else 0) for width in widths]

    def neuron_hook(index: int):
        column_norms = _inputs_weight(widths[index].ffn_out).float().norm(dim=0)

        def hook(_module, args):
            neurons[index] += (args[0].float().abs().flatten(0, -2) * column_norms).sum(0)

        return hook

    def group_hook(index: int):
        def hook(_module, args):
            groups[index] += _group_contributions(widths[index], args[0])

        return hook

    handles = [w.ffn_out.register_forward_pre_hook(neuron_hook(i)) for i, w in enumerate(widths)]
    handles += [
        w.attention.o_proj.register_forward_pre_hook(group_hook(i)) for i, w in enumerate(widths) if w.attention
    ]
    tokens = sum(ids.numel() for ids in windows)
    if tokens == 0:
        raise GreencompressError("no calibration tokens to score FFN neurons and key/value groups with")
    try:
        model.eval()
        for ids in windows:
            model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return WidthScores([n / tokens for n in neurons], [g / tokens for g in groups])


def _weight_scores(width: DecoderWidth, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    made = sum(_inputs_weight(m).detach().abs().pow(p).sum(1) for m in width.ffn_in)
    neurons = made + _inputs_weight(width.ffn_out).detach().abs().pow(p).sum(0)
    if width.attention is None:
        return neurons, torch.zeros(0)
    attention, rows = width.attention, width.head_dim
    query = attention.q_proj.weight.detach().abs().pow(p).sum(1) + attention.o_proj.weight.detach().abs().pow(p).sum(0)
    kv = attention.k_proj.weight.detach().abs().pow(p).sum(1) + attention.v_proj.weight.detach().abs().pow(p).sum(1)
    groups = query.view(width.kv_groups, -1).sum(1) + kv.view(width.kv_groups, rows).sum(1)
    return neurons, groups


def width_scores(model: nn.Module, criterion: str, windows: list[torch.Tensor], seed: int = 0) -> WidthScores:
    """Importance of every FFN neuron and key/value group of `model` by `criterion` (see the module's docstring)."""
    widths = decoder_widths(model)
    if criterion == "activation":
        return _activation_scores(model, widths, windows)
    if criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        return WidthScores(
            [torch.rand(w.neurons, generator=generator) for w in widths],
            [torch.rand(w.kv_groups if w.attention else 0, generator=generator) for w in widths],
        )
    if criterion not in ("l1", "l2"):
        raise GreencompressError(f"importance {criterion}: a causal LM's width takes activation, l1, l2 or random")
    pairs = [_weight_scores(w, 1 if criterion == "l1" else 2) for w in widths]
    return WidthScores([n for n, _ in pairs], [g for _, g in pairs])


def keep_ffn_neurons(model: nn.Module, kept: list[torch.Tensor]) -> None:
    """Keep, in every layer, the FFN neurons at `kept[layer]` (the same count in each), in place."""
    widths = decoder_widths(model)
    if len({len(k) for k in kept}) != 1 or len(kept) != len(widths):
        raise GreencompressError("FFN neurons: one list per decoder layer, the same count in each")
    for width, keep in zip(widths, kept):
        keep = keep.sort().values
        for module in width.ffn_in:
            name = next(n for n, m in width.owner.named_children() if m is module)
            setattr(width.owner, name, _sliced(module, keep, outputs=True))
        name = next(n for n, m in width.owner.named_children() if m is width.ffn_out)
        setattr(width.owner, name, _sliced(width.ffn_out, keep, outputs=False))
    field = "intermediate_size" if hasattr(model.config, "intermediate_size") else "n_inner"
    setattr(model.config, field, len(kept[0]))


def keep_kv_groups(model: nn.Module, kept: list[list[int]]) -> None:
    """Keep, in every layer, the key/value groups at `kept[layer]` (the same count in each) with the query heads
    that read them, in place; the config's head counts follow and `head_dim` is written out."""
    widths = decoder_widths(model)
    if any(w.attention is None for w in widths):
        raise GreencompressError(
            f"{type(model).__name__} derives a head's width from its hidden size (GPT-2: n_embd / n_head): its "
            "heads cannot be removed with the config still true; prune its FFN only (stages.prune.ffn)"
        )
    if len({len(k) for k in kept}) != 1 or len(kept) != len(widths):
        raise GreencompressError("key/value groups: one list per decoder layer, the same count in each")
    first = widths[0]
    head_dim, per_group = first.head_dim, first.heads_per_group
    for width, groups in zip(widths, kept):
        groups = sorted(groups)
        if not groups:
            raise GreencompressError("key/value groups: at least one must stay in every layer")
        kv_rows = torch.tensor([g * head_dim + i for g in groups for i in range(head_dim)])
        query_heads = [g * per_group + h for g in groups for h in range(per_group)]  # repeat_kv's order
        query_rows = torch.tensor([q * head_dim + i for q in query_heads for i in range(head_dim)])
        attention = width.attention
        attention.q_proj = _sliced(attention.q_proj, query_rows, outputs=True)
        attention.k_proj = _sliced(attention.k_proj, kv_rows, outputs=True)
        attention.v_proj = _sliced(attention.v_proj, kv_rows, outputs=True)
        attention.o_proj = _sliced(attention.o_proj, query_rows, outputs=False)
        for attribute, value in (("num_heads", len(query_heads)), ("num_key_value_heads", len(groups))):
            if hasattr(attention, attribute):
                setattr(attention, attribute, value)
    config = model.config
    config.head_dim = head_dim  # else derived again as hidden_size / num_attention_heads
    config.num_key_value_heads = len(kept[0])
    config.num_attention_heads = len(kept[0]) * per_group


@dataclass(frozen=True)
class DecoderPruning:
    """What a width stage removed, per layer (the same in every one)."""

    ffn_before: int
    ffn_after: int
    kv_groups_before: int | None
    kv_groups_after: int | None
    heads_before: int | None
    heads_after: int | None
    criterion: str


def prune_decoder(
    model: nn.Module,
    groups_ratio: float,
    ffn_ratio: float,
    criterion: str,
    windows: list[torch.Tensor],
    round_to: int | None = None,
    seed: int = 0,
) -> DecoderPruning:
    """Remove `groups_ratio` of each layer's key/value groups and `ffn_ratio` of its FFN neurons (kept a multiple
    of `round_to` where one fits), least important first, in place."""
    widths = decoder_widths(model)
    first = widths[0]
    if groups_ratio > 0 and first.attention is None:
        keep_kv_groups(model, [])  # raises, saying why
    scores = width_scores(model, criterion, windows, seed)
    ffn_before = first.neurons
    groups_before = first.kv_groups if first.attention else None
    heads_before = groups_before * first.heads_per_group if first.attention else None
    if ffn_ratio > 0:
        keep = kept_count(ffn_before, ffn_ratio, round_to)
        if keep == ffn_before:
            raise GreencompressError(
                f"stages.prune.ffn: {ffn_ratio} of {ffn_before} neurons, kept a multiple of {round_to}, removes none"
            )
        keep_ffn_neurons(model, [s.argsort(descending=True)[:keep] for s in scores.neurons])
    if groups_ratio > 0:
        keep = kept_count(groups_before, groups_ratio, None)
        if keep == groups_before:
            raise GreencompressError(
                f"stages.prune.heads: {groups_ratio} of {groups_before} key/value groups removes none"
            )
        keep_kv_groups(model, [s.argsort(descending=True)[:keep].tolist() for s in scores.groups])
    after = decoder_widths(model)[0]
    done = DecoderPruning(
        ffn_before,
        after.neurons,
        groups_before,
        after.kv_groups if after.attention else None,
        heads_before,
        after.kv_groups * after.heads_per_group if after.attention else None,
        criterion,
    )
    log.info(
        "prune: FFN width %d -> %d, key/value groups %s -> %s per layer (%s)",
        done.ffn_before,
        done.ffn_after,
        done.kv_groups_before,
        done.kv_groups_after,
        criterion,
    )
    return done

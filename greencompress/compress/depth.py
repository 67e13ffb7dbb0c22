"""Depth: remove whole transformer layers, or whole residual blocks of a CNN, the least important first (a causal
LM's decoder layers: compress/decoder_surgery.py).

At batch 1 a deep, thin network pays per layer more than per channel, so fewer layers buy speed
that narrower ones do not. Candidates are an encoder's layers, or a CNN's blocks that keep their
input's shape (identity shortcut: a downsampling block changes the shape and is never a candidate).

Importance is measured on calibration data, never guessed:
- `output_change` (default): the change in the model's outputs (1 - cosine, per sample) when the
  candidate is bypassed; chosen greedily, so each choice sees the ones made before it;
- `similarity`: 1 - cosine of a candidate's input and output (a block that barely changes its input
  is cheap to drop), one forward pass for all candidates.
A removed CNN block becomes an identity; a removed encoder layer leaves the layer list (and the
config's layer count). The record replays the removal on a fresh copy of the original model.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from greencompress.compress import encoder_surgery
from greencompress.compress.block_surgery import block_candidates, remove_blocks
from greencompress.compress.decoder_surgery import layers_skipped
from greencompress.compress.technique import (
    StageContext,
    StageOutput,
    Technique,
    TorchModel,
)
from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError
from greencompress.models.encoder_layout import layer_list
from greencompress.models.inputs import ModelInputs

log = logging.getLogger(__name__)

SAMPLES = 128  # calibration samples when `samples` is unset (a CNN's or an encoder's)


class DepthConfig(Section):
    """Whole layers (transformers) or identity residual blocks (CNNs) removed, least important first."""

    remove: int = Field(default=1, ge=1)  # how many layers or blocks go
    importance: Literal["output_change", "similarity"] = "output_change"
    # Calibration samples the importance is measured on: 128 when unset; a causal LM's are windows of 256 tokens,
    # 8 when unset (each costs a forward pass per layer and step under output_change).
    samples: int | None = Field(default=None, ge=1)


@contextlib.contextmanager
def _bypassed(model: nn.Module, candidates: list, is_encoder: bool):
    """Within the block, `candidates` are skipped (encoder layer indices, or CNN block names)."""
    if is_encoder:
        with layers_skipped(*layer_list(model)[:2], candidates):
            yield
        return
    originals = {name: model.get_submodule(name) for name in candidates}
    remove_blocks(model, list(candidates))
    try:
        yield
    finally:
        for name, module in originals.items():
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def _call(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**{name: torch.as_tensor(value) for name, value in inputs.items()})
    return model(torch.as_tensor(inputs))


def _flat(output) -> torch.Tensor:
    parts = output if isinstance(output, (tuple, list)) else (output,)
    return torch.cat([part.flatten(1).to(torch.float32) for part in parts], dim=1)


@torch.no_grad()
def _outputs(model: nn.Module, calibration: list) -> torch.Tensor:
    return torch.cat([_flat(_call(model, inputs)) for inputs, _ in calibration])


@torch.no_grad()
def output_change(
    model: nn.Module, calibration: list, removed: list, is_encoder: bool, reference: torch.Tensor | None = None
) -> float:
    """Mean 1 - cosine between the model's outputs with `removed` bypassed and its full outputs."""
    reference = _outputs(model, calibration) if reference is None else reference
    with _bypassed(model, removed, is_encoder):
        changed = _outputs(model, calibration)
    return float((1 - nn.functional.cosine_similarity(changed, reference, dim=1)).mean())


@torch.no_grad()
def _input_output_change(model: nn.Module, calibration: list, candidates: list, is_encoder: bool) -> dict:
    modules = (
        dict(enumerate(layer_list(model)[2]))
        if is_encoder
        else {name: model.get_submodule(name) for name in candidates}
    )
    totals = {key: [0.0, 0] for key in candidates}

    def hook(key):
        def record(_module, args, kwargs, output):
            given = args[0] if args else kwargs.get("hidden_states")
            if not isinstance(given, torch.Tensor):
                raise GreencompressError(
                    f"stages.depth.importance similarity: cannot see the input of {key}; use output_change"
                )
            result = output[0] if isinstance(output, (tuple, list)) else output
            cosine = nn.functional.cosine_similarity(given.flatten(1), result.flatten(1), dim=1)
            totals[key][0] += float((1 - cosine).sum())
            totals[key][1] += len(cosine)

        return record

    handles = [modules[key].register_forward_hook(hook(key), with_kwargs=True) for key in candidates]
    try:
        for inputs, _ in calibration:
            _call(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {key: total / max(count, 1) for key, (total, count) in totals.items()}


def choose_removals(
    model: nn.Module, inputs: ModelInputs, calibration: list, count: int, importance: str
) -> tuple[list, dict]:
    """The `count` layers (indices) or blocks (names) to remove, and the importance measured for each candidate."""
    model.eval()
    is_encoder = inputs.structure == "encoder"
    candidates = list(range(len(layer_list(model)[2]))) if is_encoder else block_candidates(model, inputs)
    if count > len(candidates) - (1 if is_encoder else 0):
        what = "encoder layers" if is_encoder else "removable blocks (same shape in and out)"
        raise GreencompressError(
            f"stages.depth.remove: {count} asked for, the model has {len(candidates)} {what}"
            + (": at least one layer must stay" if is_encoder else "")
        )
    if importance == "similarity":
        measured = _input_output_change(model, calibration, candidates, is_encoder)
        chosen = sorted(candidates, key=lambda key: measured[key])[:count]
        return chosen, {str(key): value for key, value in measured.items()}
    reference = _outputs(model, calibration)
    chosen: list = []
    measured: dict = {}
    for step in range(count):
        changes = {
            key: output_change(model, calibration, [*chosen, key], is_encoder, reference)
            for key in candidates
            if key not in chosen
        }
        if step == 0:
            measured = {str(key): value for key, value in changes.items()}
        best = min(changes, key=changes.get)
        log.info("depth: step %d: bypassing %s changes the outputs by %.4f (1 - cosine)", step + 1, best, changes[best])
        chosen.append(best)
    return chosen, measured


def _remove(model: nn.Module, chosen: list, is_encoder: bool) -> list:
    """Remove the chosen encoder layers (indices) or CNN blocks (names) in place; returns the record."""
    return encoder_surgery.remove_layers(model, chosen) if is_encoder else remove_blocks(model, chosen)


def shallower(model: nn.Module, inputs: ModelInputs, config: DepthConfig, calibration: list) -> nn.Module:
    """A copy of `model` without the `config.remove` least important layers or blocks (what the stage makes)."""
    model = copy.deepcopy(model).eval()
    chosen, _ = choose_removals(model, inputs, calibration, config.remove, config.importance)
    _remove(model, chosen, inputs.structure == "encoder")
    return model


class Depth(Technique):
    """Whole transformer layers or identity residual blocks removed, by measured importance."""

    name, config, works_on, tag = "depth", DepthConfig, "torch", "shallower"
    # A causal LM's decoder layers too: the text-generation run removes them (pipeline/generate.py with
    # compress/decoder_surgery.py), ranked on calibration windows, and the stages after it start from the result.
    structures = ("channels", "encoder", "decoder")

    def apply(self, config: DepthConfig, source: TorchModel, context: StageContext) -> StageOutput:
        from greencompress.models.data import batches

        model, inputs = copy.deepcopy(source.module).eval(), context.inputs
        is_encoder = inputs.structure == "encoder"
        calibration = list(batches(context.data.calibration, context.batch_size, limit=config.samples or SAMPLES))
        if not calibration:
            raise GreencompressError("stages.depth: the calibration split is empty; importance needs data")
        before = len(layer_list(model)[2]) if is_encoder else len(block_candidates(model, inputs))
        chosen, measured = choose_removals(model, inputs, calibration, config.remove, config.importance)
        record = _remove(model, chosen, is_encoder)
        with torch.no_grad():
            model(*inputs.example(1))  # a broken model must never leave this stage
        removed = [f"layer {index}" for index in sorted(chosen)] if is_encoder else sorted(chosen)
        log.info("depth: removed %s (%d -> %d)", ", ".join(removed), before, before - len(chosen))
        return StageOutput(
            config.model_dump(mode="json"),
            {
                "removed": removed,
                "before": before,
                "after": before - len(chosen),
                "importance": measured,
                "what": "encoder layers" if is_encoder else "residual blocks",
            },
            model=TorchModel(model, (*source.pruning_history, record)),
        )

    def untrained(
        self, config: DepthConfig, model: nn.Module, inputs: ModelInputs, calibration, batch_size: int, seed: int
    ) -> nn.Module:
        from greencompress.models.data import batches

        return shallower(model, inputs, config, list(batches(calibration, batch_size, limit=config.samples or SAMPLES)))

    def describe(self, settings: dict, metrics: dict) -> list[str]:
        if "removed" not in metrics:
            return []
        return [
            f"{metrics['what']} {metrics['before']} -> {metrics['after']} (removed {', '.join(metrics['removed'])}, "
            f"by {settings['importance'].replace('_', ' ')})"
        ]

"""Removing whole residual blocks of a CNN: which blocks can go, and replacing them by identities.

A block can go when it sits in an nn.Sequential, has layers of its own (convolutions) and returns
the shape it was given: its shortcut is an identity, so the model still runs without it. A
downsampling block changes the shape and never qualifies.
"""

from __future__ import annotations

import torch
from torch import nn

from greencompress.models.inputs import ModelInputs

BLOCKS = "greencompress.blocks"


def block_candidates(model: nn.Module, inputs: ModelInputs) -> list[str]:
    """A CNN's removable blocks by name: nn.Sequential members with layers of their own, same shape out as in."""
    shapes: dict[str, bool] = {}
    members = [
        (name, module)
        for name, module in model.named_modules()
        if name
        and isinstance(_parent(model, name), nn.Sequential)
        and any(True for _ in module.children())
        and any(isinstance(m, nn.Conv2d) for m in module.modules())
    ]
    handles = [
        module.register_forward_hook(
            lambda module, args, output, name=name: shapes.__setitem__(
                name, isinstance(output, torch.Tensor) and len(args) == 1 and args[0].shape == output.shape
            )
        )
        for name, module in members
    ]
    try:
        with torch.no_grad():
            model.eval()(*inputs.example(2))
    finally:
        for handle in handles:
            handle.remove()
    return [name for name, _ in members if shapes.get(name)]


def _parent(model: nn.Module, name: str) -> nn.Module | None:
    parent_name, _, _ = name.rpartition(".")
    return model.get_submodule(parent_name) if parent_name else model


def remove_blocks(model: nn.Module, names: list[str]) -> list:
    """Replace CNN blocks by identities (in place); returns the record."""
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Identity())
    return [BLOCKS, sorted(names)]


def is_block_record(record) -> bool:
    return isinstance(record, (list, tuple)) and len(record) == 2 and record[0] == BLOCKS


def replay(model: nn.Module, record) -> None:
    remove_blocks(model, list(record[1]))

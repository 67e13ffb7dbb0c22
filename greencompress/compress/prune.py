"""Pruning: structured (channels removed for real, through Torch-Pruning's dependency graph) and unstructured
(magnitude zeros made permanent).

Structured pruning yields a smaller dense model that runs faster on any runtime; unstructured pruning only
zeros weights, which dense runtimes do not skip: it shrinks a compressed file, not the latency.
"""

from __future__ import annotations

import copy
import io
import logging
import zipfile
from dataclasses import dataclass, field

import torch
from torch import nn

from greencompress.errors import GreencompressError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StructuredResult:
    """A pruned model, how to rebuild it, and what was (not) pruned."""

    model: nn.Module
    pruning_history: list  # Torch-Pruning's [layer name, out-channels?, indices]: replayed to reload the model
    untouched_layers: dict[str, str] = field(default_factory=dict)  # layer -> why it was left alone
    macs_before: int = 0
    macs_after: int = 0
    params_before: int = 0
    params_after: int = 0


def _importance(criterion: str):
    import torch_pruning as tp

    criteria = {
        "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
        "l2": lambda: tp.importance.GroupMagnitudeImportance(p=2),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.GroupTaylorImportance(),
        "random": lambda: tp.importance.RandomImportance(),  # a control: any criterion should beat it
    }
    return criteria[criterion]()


def unsafe_channel_layers(model: nn.Module, example: torch.Tensor, candidates: list[str]) -> dict[str, str]:
    """Layers whose output channels cannot be pruned without breaking the forward pass, and why.

    Dependency tracing does not see every coupling: a parameter-free shortcut that zero-pads a
    constant number of channels (CIFAR ResNet "option A") ties the residual stream's width to a
    number in the code. Each candidate is tried by removing one channel on a copy of the model;
    a forward pass that fails marks the layer's group as unsafe.
    """
    import torch_pruning as tp

    unsafe = {}
    for name in candidates:
        trial = copy.deepcopy(model)
        layer = dict(trial.named_modules())[name]
        graph = tp.DependencyGraph().build_dependency(trial, example)
        graph.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=[0]).prune()
        try:
            with torch.no_grad():
                trial(example)
        except RuntimeError as error:
            unsafe[name] = f"pruning its channels breaks the forward pass ({str(error).splitlines()[0][:120]})"
    return unsafe


def prune_structured(model: nn.Module, input_shape: tuple[int, int, int], config, calibration_batches,
                     progress=None) -> StructuredResult:
    """Remove a `config.ratio` share of channels; unsafe groups and `config.ignore` layers are left untouched."""
    import torch_pruning as tp

    model = copy.deepcopy(model).eval()
    example = torch.zeros(1, *input_shape)
    modules = dict(model.named_modules())
    linears = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    ignore = list(config.ignore) if config.ignore is not None else linears[-1:]  # the classifier by default
    missing = [name for name in ignore if name not in modules]
    if missing:
        raise GreencompressError(f"stages.prune.ignore: no layer named {', '.join(missing)} in the model")
    convs = [name for name, module in modules.items() if isinstance(module, nn.Conv2d) and name not in ignore]
    untouched = unsafe_channel_layers(model, example, convs)
    for name, reason in untouched.items():
        log.info("prune: leaving %s untouched: %s", name, reason)
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=_importance(config.importance), pruning_ratio=config.ratio,
        global_pruning=config.global_pruning, iterative_steps=config.iterative_steps, round_to=config.round_to,
        ignored_layers=[modules[name] for name in [*ignore, *untouched]],
    )
    for step in range(config.iterative_steps):
        if config.importance == "taylor":  # Taylor importance needs gradients of the loss
            model.zero_grad()
            inputs, labels = next(iter(calibration_batches))
            nn.functional.cross_entropy(model(torch.from_numpy(inputs)), torch.from_numpy(labels)).backward()
        pruner.step()
        log.info("prune: step %d/%d done", step + 1, config.iterative_steps)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        model(example)  # a broken model must never leave this function
    macs_after, params_after = tp.utils.count_ops_and_params(model, example)
    return StructuredResult(model, pruner.pruning_history(), untouched, int(macs_before), int(macs_after),
                            int(params_before), int(params_after))


def replay_pruning(model: nn.Module, input_shape: tuple[int, int, int], pruning_history: list) -> nn.Module:
    """Apply a recorded structured pruning to a fresh copy of the original architecture (in place)."""
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(model, torch.zeros(1, *input_shape))
    graph.load_pruning_history(pruning_history)
    return model


@dataclass(frozen=True)
class SparsityResult:
    """Unstructured pruning: zeros per layer, in total, and what that does to a compressed file."""

    model: nn.Module
    layer_sparsity: dict[str, float]
    total_sparsity: float
    zipped_bytes_before: int
    zipped_bytes_after: int


def prune_unstructured(model: nn.Module, config) -> SparsityResult:
    """Zero the smallest-magnitude weights of conv and linear layers (globally or per layer), permanently."""
    from torch.nn.utils import prune

    model = copy.deepcopy(model).eval()
    zipped_before = zipped_state_bytes(model)
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]
    if config.scope == "global":
        prune.global_unstructured([(module, "weight") for _, module in layers], pruning_method=prune.L1Unstructured,
                                  amount=config.sparsity)
    else:
        for _, module in layers:
            prune.l1_unstructured(module, "weight", amount=config.sparsity)
    for _, module in layers:
        prune.remove(module, "weight")  # make the zeros part of the weights, drop the mask
    sparsity = {name: float((module.weight == 0).float().mean()) for name, module in layers}
    zeros = sum(int((module.weight == 0).sum()) for _, module in layers)
    total = sum(module.weight.numel() for _, module in layers)
    return SparsityResult(model, sparsity, zeros / total, zipped_before, zipped_state_bytes(model))


def zipped_state_bytes(model: nn.Module) -> int:
    """Size of the model's state_dict once deflated: where unstructured zeros do save bytes."""
    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.pt", raw.getvalue())
    return len(packed.getvalue())

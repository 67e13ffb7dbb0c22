"""Pruning: structured (channels removed for real, through Torch-Pruning's dependency graph) and unstructured
(magnitude zeros made permanent).

Structured pruning yields a smaller dense model that runs faster on any runtime; unstructured pruning only
zeros weights, which dense runtimes do not skip: it shrinks a compressed file, not the latency.
"""

from __future__ import annotations

import copy
import difflib
import io
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
from pydantic import Field, TypeAdapter, ValidationError, field_serializer, model_validator
from pydantic_core import PydanticCustomError
from torch import nn

from greencompress.compress.finetune import FinetuneConfig
from greencompress.compress.technique import (
    NotForThisModel,
    StageContext,
    StageOutput,
    Technique,
    TorchModel,
)
from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError
from greencompress.core.logs import log_folded
from greencompress.models.inputs import ModelInputs

log = logging.getLogger(__name__)


class _Steps(Section):
    """What both schemes share: `iterative_steps` reach the final ratio (or sparsity) in steps, following `schedule`;
    with `finetune_between`, a short fine-tune after each step but the last lets the model recover before more is
    removed."""

    iterative_steps: int = Field(default=1, ge=1)
    schedule: Literal["linear", "cubic"] = "linear"  # per-step targets; cubic removes most early (Zhu & Gupta, 2017)
    finetune_between: FinetuneConfig | None = None  # fine-tuning after every step but the last


class StructuredPruneConfig(_Steps):
    """`method: structured` (the default): channels, or a transformer's heads and FFN neurons, removed for real."""

    method: Literal["structured"] = "structured"
    # What decides which channels (heads, neurons) go; `activation` is for transformers' heads and neurons.
    importance: Literal["l1", "l2", "bn_scale", "taylor", "random", "activation"] = "l1"
    # Share of each prunable layer's channels removed (0.5 when neither this nor target_macs is set); on a
    # transformer, the share of each layer's attention heads and FFN neurons, unless `heads` or `ffn` is set.
    ratio: float | None = Field(default=None, gt=0, lt=1)
    # transformers: share of each layer's heads removed (a causal LM's: key/value groups, each with its query heads)
    heads: float | None = Field(default=None, ge=0, lt=1)
    ffn: float | None = Field(default=None, ge=0, lt=1)  # transformers: share of each layer's FFN neurons removed
    target_macs: float | None = Field(default=None, gt=0, lt=1)  # instead of ratio: MACs kept vs the baseline
    global_pruning: bool = False  # rank channels across layers instead of within each
    ignore: list[str] | None = None  # layers never pruned (besides the final classifier, always kept)
    # Keep channel counts multiples of this; `auto`: the rounding whose untrained pruned model runs fastest against
    # the unpruned one on every served runtime and batch size (measured, cached per CPU). Unset: `auto` for a CNN
    # whose run measures a runtime of files (channel counts left odd can make a pruned model slower there), else
    # none; 1 keeps the counts as the ratio leaves them. A transformer takes a number only.
    round_to: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None

    # Checked on values, not on which keys were given: recipe.resolved.yaml (all defaults written out)
    # must load again for --resume.
    @model_validator(mode="after")
    def _one_target(self) -> StructuredPruneConfig:
        if self.target_macs is not None and self.ratio is not None:
            raise ValueError("set either ratio or target_macs, not both")
        return self

    @field_serializer("ratio")
    def _effective_ratio(self, value: float | None) -> float | None:
        # The resolved recipe states the ratio structured pruning uses, not null (target_macs decides it otherwise).
        # A transformer's `heads`/`ffn`, when given, replace the ratio: it stays as written.
        chosen_elsewhere = self.target_macs is not None or self.heads is not None or self.ffn is not None
        return value if chosen_elsewhere else self.structured_ratio

    @property
    def structured_ratio(self) -> float:
        """The ratio to prune at when target_macs does not decide it."""
        return 0.5 if self.ratio is None else self.ratio

    @property
    def transformer_ratios(self) -> tuple[float, float]:
        """(heads, FFN neurons) shares a transformer loses: `ratio` for both unless either is set on its own."""
        if self.heads is None and self.ffn is None:
            return self.structured_ratio, self.structured_ratio
        return self.heads or 0.0, self.ffn or 0.0


class UnstructuredPruneConfig(_Steps):
    """`method: unstructured`: the smallest-magnitude weights set to zero, permanently (the structure stays)."""

    method: Literal["unstructured"]
    sparsity: float = Field(default=0.5, gt=0, lt=1)  # share of weights set to zero
    scope: Literal["global", "layer"] = "global"  # one threshold for all layers, or per layer


# A prune stage's settings, told apart by `method` (structured when it is left out); recipe keys are the fields.
PruneConfig = Annotated[StructuredPruneConfig | UnstructuredPruneConfig, Field(discriminator="method")]
PRUNE_CONFIG = TypeAdapter(PruneConfig)


def _within_stage(error: dict) -> dict:
    """A validation error of one scheme, located at the stage's key; a key of the other scheme named as such."""
    tag, *location = error["loc"] if error["loc"][:1] in (("structured",), ("unstructured",)) else (None, *error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden" and tag is not None and len(location) == 1:
        scheme = {"structured": StructuredPruneConfig, "unstructured": UnstructuredPruneConfig}[tag]
        known = [name for name in scheme.model_fields if name != "method"]
        close = difflib.get_close_matches(str(location[0]), known, n=1)
        message = f"not a setting of {tag} pruning" + (
            f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(known)}"
        )
    elif error["type"] not in ("value_error",):
        return {**error, "loc": tuple(location)}
    return {"type": PydanticCustomError("value_error", message), "loc": tuple(location), "input": error["input"]}


# Fine-tuning between pruning steps: (model, step, this pruning's history so far) -> the trained model.
TrainBetween = Callable[[nn.Module, int, tuple], nn.Module]


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
    ratio: float = 0.0  # the ratio used: the recipe's, or the one found for target_macs


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


def prune_structured(
    model: nn.Module,
    inputs: ModelInputs,
    config,
    calibration_batches,
    train_between: TrainBetween | None = None,
    untouched: dict[str, str] | None = None,
) -> StructuredResult:
    """Remove channels: `config.ratio` (default 0.5) of each prunable layer, or as many as `config.target_macs` asks.

    Unsafe groups and `config.ignore` layers are left untouched. With `iterative_steps`, the ratio is
    reached step by step; `train_between(model, step, history)` (if given) fine-tunes after each step
    but the last, `history` being this pruning's record so far. `untouched`: the unsafe layers when already
    known for this model (`unsafe_channel_layers` tries every layer: the slow part for a caller that prunes often).
    """
    import torch_pruning as tp

    if config.round_to == "auto":
        raise ValueError("prune_structured: round_to 'auto' is decided by choose_round_to first")
    model = copy.deepcopy(model).eval()
    # Channel pruning works on image models (Prune.check refuses it for encoders): one image, zeros.
    example = inputs.example(1)[0]
    modules = dict(model.named_modules())
    linears = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    # The final classifier's outputs are the classes: never pruned, whatever else `ignore` lists.
    ignore = list(dict.fromkeys([*(config.ignore or []), *linears[-1:]]))
    # A layer inside a block that a depth stage removed (now an identity) is gone, not misspelt.
    removed = [
        name
        for name in ignore
        if name not in modules
        and any(isinstance(modules.get(name.rsplit(".", cut)[0]), nn.Identity) for cut in range(1, name.count(".") + 1))
    ]
    ignore = [name for name in ignore if name not in removed]
    missing = [name for name in ignore if name not in modules]
    if missing:
        raise GreencompressError(f"stages.prune.ignore: no layer named {', '.join(missing)} in the model")
    convs = [name for name, module in modules.items() if isinstance(module, nn.Conv2d) and name not in ignore]
    if untouched is None:
        untouched = unsafe_channel_layers(model, example, convs)
        log_folded(log, "prune: left untouched, layers:", untouched)
    untouched = dict(untouched)
    kept = [*ignore, *untouched]
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    ratio = config.structured_ratio
    if config.target_macs is not None:
        ratio = _ratio_for_macs(model, example, config, kept, macs_before)
    targets = step_targets(config.schedule, ratio, config.iterative_steps)
    pruner = _pruner(model, example, config, ratio, kept, config.iterative_steps)
    for step in range(config.iterative_steps):
        if config.importance == "taylor":  # Taylor importance needs gradients of the loss
            model.zero_grad()
            inputs, labels = next(iter(calibration_batches))
            nn.functional.cross_entropy(model(torch.from_numpy(inputs)), torch.from_numpy(labels)).backward()
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(model, example)
        log.info(
            "prune: step %d/%d done (ratio %.3f, MACs %.1f%% of the original)",
            step + 1,
            config.iterative_steps,
            targets[step],
            100 * macs / macs_before,
        )
        if train_between is not None and step < config.iterative_steps - 1:
            # In place: the pruner holds this model's layers, so the weights go back into them.
            model.load_state_dict(train_between(model, step + 1, tuple(pruner.pruning_history())).state_dict())
            model.eval()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        model(example)  # a broken model must never leave this function
    macs_after, params_after = tp.utils.count_ops_and_params(model, example)
    return StructuredResult(
        model,
        pruner.pruning_history(),
        untouched,
        int(macs_before),
        int(macs_after),
        int(params_before),
        int(params_after),
        ratio,
    )


ROUND_TO_CHOICES = (1, 4, 8, 16, 32)


def choose_round_to(
    model: nn.Module,
    inputs: ModelInputs,
    config: PruneConfig,
    calibration,
    latency_check,
    choices: tuple[int, ...] = ROUND_TO_CHOICES,
) -> dict:
    """`round_to: auto`: prune an untrained copy at each rounding, time it against `model` where the run serves it,
    and take the rounding whose slowest case (runtime x batch size) is fastest; ties on that go to finer rounding.

    Fewer channels are not always less time: with channel counts left odd, ONNX Runtime's int8 convolutions ran a
    pruned ResNet-56 2x slower than the unpruned model (docs/BENCHMARKS.md). Returns the choice, every measurement,
    and where even the chosen model is still slower (`slower_on`).
    """
    if latency_check is None:
        raise GreencompressError(
            "stages.prune.round_to: auto times the pruned model on the run's file runtimes, and "
            "this run has none (benchmark.runtimes); give a number"
        )
    by_rounding, untouched = {}, None
    for round_to in choices:
        trial = config.model_copy(update={"round_to": None if round_to == 1 else round_to})
        try:
            result = prune_structured(model, inputs, trial, calibration(), untouched=untouched)
            pruned, untouched = result.model, result.untouched_layers
        except GreencompressError as error:  # e.g. a MACs target this rounding cannot reach
            log.info("prune: round_to %d: %s", round_to, error)
            continue
        by_rounding[round_to] = latency_check(pruned, model)
        log.info(
            "prune: round_to %d: untrained pruned/unpruned latency %s",
            round_to,
            ", ".join(f"{m['runtime']} batch {m['batch_size']} {m['ratio']:.3f}x" for m in by_rounding[round_to]),
        )
    if not by_rounding:
        raise GreencompressError(
            f"stages.prune.round_to: auto: no rounding of {', '.join(map(str, choices))} can prune this model as asked"
        )
    worst = {round_to: max(m["ratio"] for m in measured) for round_to, measured in by_rounding.items()}
    best = min(worst.values())
    # Within 2% of the best worst case: the finer rounding, which keeps the recipe's ratio more closely.
    chosen = min(round_to for round_to, ratio in worst.items() if ratio <= best * 1.02)
    slower = [
        f"{m['runtime']} at batch {m['batch_size']} ({m['ratio']:.2f}x untrained)"
        for m in by_rounding[chosen]
        if m["low"] > 1
    ]
    log.info("prune: round_to auto -> %d (slowest case %.3fx the unpruned model)", chosen, worst[chosen])
    if slower:
        log.warning(
            "prune: even with round_to %d the pruned model runs slower than the unpruned one on %s",
            chosen,
            ", ".join(slower),
        )
    return {
        "round_to": None if chosen == 1 else chosen,
        "chosen": chosen,
        "worst_ratio": worst[chosen],
        "measured": {str(round_to): measured for round_to, measured in by_rounding.items()},
        "slower_on": slower,
    }


def step_targets(schedule: str, final: float, steps: int) -> list[float]:
    """The cumulative ratio (or sparsity) after each of `steps` steps, ending at `final`.

    `cubic` removes most in the early steps, while the model still has redundancy (Zhu & Gupta, 2017).
    """
    if schedule == "cubic":
        return [final * (1 - (1 - k / steps) ** 3) for k in range(1, steps + 1)]
    return [final * k / steps for k in range(1, steps + 1)]


def _pruner(model: nn.Module, example: torch.Tensor, config, ratio: float, kept: list[str], steps: int):
    import torch_pruning as tp

    modules = dict(model.named_modules())
    return tp.pruner.MetaPruner(
        model,
        example,
        importance=_importance(config.importance),
        pruning_ratio=ratio,
        global_pruning=config.global_pruning,
        iterative_steps=steps,
        round_to=config.round_to,
        iterative_pruning_ratio_scheduler=lambda final, count: [0.0, *step_targets(config.schedule, final, count)],
        ignored_layers=[modules[name] for name in kept],
    )


def _ratio_for_macs(model: nn.Module, example: torch.Tensor, config, kept: list[str], macs_before: int) -> float:
    """The smallest ratio whose one-shot pruning keeps at most `config.target_macs` of the MACs (bisection)."""
    import torch_pruning as tp

    def macs_share(ratio: float) -> float:
        trial = copy.deepcopy(model)
        _pruner(trial, example, config, ratio, kept, 1).step()  # importance is not needed to count
        return tp.utils.count_ops_and_params(trial, example)[0] / macs_before

    # A coarse scan upwards first: with round_to, Torch-Pruning may prune nothing at a high ratio (the rounded count
    # would leave no channel), so the share is not monotone up there and bisecting from the top would miss.
    low, high, smallest = 0.0, None, 1.0
    for step in range(1, round(_MAX_RATIO / _SCAN_STEP) + 1):
        ratio = min(step * _SCAN_STEP, _MAX_RATIO)
        share = macs_share(ratio)
        smallest = min(smallest, share)
        if share <= config.target_macs:
            high = ratio
            break
        low = ratio
    if high is None:
        raise GreencompressError(
            f"stages.prune.target_macs: {config.target_macs} cannot be reached: removing up to {_MAX_RATIO:.0%} of "
            f"the prunable channels keeps at least {smallest:.1%} of the MACs"
            + (f" at round_to {config.round_to}" if config.round_to else "")
            + (f" ({len(kept)} layers stay whole: {', '.join(kept)})" if kept else "")
        )
    for _ in range(7):  # 0.05 / 2^7: well under one channel in a thousand
        middle = (low + high) / 2
        if macs_share(middle) > config.target_macs:
            low = middle
        else:
            high = middle
    log.info("prune: target_macs %.3f -> ratio %.3f", config.target_macs, high)
    return high


_MAX_RATIO = 0.95
_SCAN_STEP = 0.05


@dataclass(frozen=True)
class SparsityResult:
    """Unstructured pruning: zeros per layer, in total, and what that does to a compressed file."""

    model: nn.Module
    layer_sparsity: dict[str, float]
    total_sparsity: float
    zipped_bytes_before: int
    zipped_bytes_after: int


def prune_unstructured(model: nn.Module, config, train_between: TrainBetween | None = None) -> SparsityResult:
    """Zero the smallest-magnitude weights of conv and linear layers (globally or per layer), permanently.

    With `iterative_steps`, sparsity grows along `config.schedule`; zeros already there are the smallest
    magnitudes, so each step only adds to them. `train_between(model, step, ())` fine-tunes between steps.
    """
    from torch.nn.utils import prune

    model = copy.deepcopy(model).eval()
    zipped_before = zipped_state_bytes(model)
    for step, sparsity in enumerate(step_targets(config.schedule, config.sparsity, config.iterative_steps), 1):
        layers = _weighted_layers(model)  # again each step: fine-tuning returns a new model
        if config.scope == "global":
            prune.global_unstructured(
                [(module, "weight") for _, module in layers], pruning_method=prune.L1Unstructured, amount=sparsity
            )
        else:
            for _, module in layers:
                prune.l1_unstructured(module, "weight", amount=sparsity)
        for _, module in layers:
            prune.remove(module, "weight")  # make the zeros part of the weights, drop the mask
        log.info("prune: step %d/%d, sparsity %.3f", step, config.iterative_steps, sparsity)
        if train_between is not None and step < config.iterative_steps:
            model = train_between(model, step, ()).eval()  # fine-tuning keeps exact zeros at zero
    layers = _weighted_layers(model)
    sparsity = {name: float((module.weight == 0).float().mean()) for name, module in layers}
    zeros = sum(int((module.weight == 0).sum()) for _, module in layers)
    total = sum(module.weight.numel() for _, module in layers)
    return SparsityResult(model, sparsity, zeros / total, zipped_before, zipped_state_bytes(model))


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def zipped_state_bytes(model: nn.Module) -> int:
    """Size of the model's state_dict once deflated: where unstructured zeros do save bytes."""
    raw = io.BytesIO()
    torch.save(model.state_dict(), raw)
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.pt", raw.getvalue())
    return len(packed.getvalue())


# Calibration samples a transformer's heads and FFN neurons are scored on (the `activation` criterion).
ENCODER_SCORING_SAMPLES = 128


def pruned_encoder(model: nn.Module, config: PruneConfig, calibration, batch_size: int, seed: int):
    """A copy of a transformer without the heads and FFN neurons `config` removes, scored on the first samples of the
    `calibration` dataset; returns the copy and what was removed (encoder_prune.EncoderPruning)."""
    from greencompress.compress.encoder_prune import prune_encoder
    from greencompress.models.data import batches

    model = copy.deepcopy(model).eval()
    heads, ffn = config.transformer_ratios
    scoring = batches(calibration, batch_size, limit=ENCODER_SCORING_SAMPLES)
    return model, prune_encoder(model, heads, ffn, config.importance, scoring, config.round_to, seed)


class Prune(Technique):
    """Structured (channels removed) or unstructured (weights zeroed) pruning of the PyTorch model."""

    name, config, works_on, tag = "prune", StructuredPruneConfig, "torch", "pruned"
    schemes = (StructuredPruneConfig, UnstructuredPruneConfig)
    # A causal LM's FFN neurons and key/value groups too: the text-generation run removes them (pipeline/generate.py
    # with compress/decoder_prune.py), and the stages after it start from the narrower model.
    structures = ("channels", "encoder", "decoder")

    def parse(self, settings: dict, context: dict | None = None) -> PruneConfig:
        try:
            return PRUNE_CONFIG.validate_python({"method": "structured", **settings}, context=context)
        except ValidationError as error:  # located within the stage, not within the scheme's tag
            raise ValidationError.from_exception_data(error.title, [_within_stage(item) for item in error.errors()])

    def needs_labels(self, config: PruneConfig) -> bool:
        return getattr(config, "importance", None) == "taylor" or config.finetune_between is not None

    def apply(self, config: PruneConfig, source: TorchModel, context: StageContext) -> StageOutput:
        train_between = self._trainer_between_steps(config, source, context)
        if config.method == "unstructured":
            result = prune_unstructured(source.module, config, train_between)
            return StageOutput(
                config.model_dump(mode="json"),
                {
                    "total_sparsity": result.total_sparsity,
                    "layer_sparsity": result.layer_sparsity,
                    "zipped_bytes_before": result.zipped_bytes_before,
                    "zipped_bytes_after": result.zipped_bytes_after,
                    "note": "zeros are not skipped by dense runtimes: expect a smaller compressed file, not lower "
                    "latency",
                },
                model=TorchModel(result.model, source.pruning_history),
            )
        return _STRUCTURED[context.inputs.structure](config, source, context, train_between)

    def untrained(
        self, config: PruneConfig, model: nn.Module, inputs: ModelInputs, calibration, batch_size: int, seed: int
    ) -> nn.Module | None:
        from greencompress.models.data import batches

        if config.method != "structured":
            return None  # zeros: the same dense structure
        if inputs.structure == "encoder":  # heads and FFN neurons, as the stage removes them
            return pruned_encoder(model, config, calibration, batch_size, seed)[0]
        return prune_structured(model, inputs, config, batches(calibration, batch_size)).model

    def check(self, config: PruneConfig, structure: str) -> None:
        if structure == "decoder":
            _check_decoder(config)
        if config.method != "structured":
            return
        if structure == "channels":
            if (config.heads, config.ffn) != (None, None):
                field = "heads" if config.heads is not None else "ffn"
                raise NotForThisModel(
                    field,
                    "heads and ffn remove a transformer encoder's attention heads and FFN "
                    "neurons; a CNN's structured pruning takes ratio or target_macs",
                )
            if config.importance == "activation":
                raise NotForThisModel(
                    "importance",
                    "activation scores a transformer's heads and FFN neurons; for "
                    "a CNN's channels use l1, l2, bn_scale, taylor or random",
                )
            return
        channel_only = {
            "round_to": config.round_to == "auto",
            "target_macs": config.target_macs is not None,
            "global_pruning": config.global_pruning,
            "ignore": bool(config.ignore),
            "iterative_steps": config.iterative_steps > 1,
            "importance": config.importance in ("bn_scale", "taylor"),
        }
        wrong = [key for key, used in channel_only.items() if used]
        if wrong:
            raise NotForThisModel(
                wrong[0],
                "not for a transformer, whose structured pruning removes heads and FFN "
                "neurons (settings: ratio or heads/ffn, importance l1, l2, activation or "
                "random, round_to as a number)",
            )

    @staticmethod
    def _prune_encoder(
        config: PruneConfig, source: TorchModel, context: StageContext, train_between=None
    ) -> StageOutput:
        before = sum(p.numel() for p in source.module.parameters())
        model, result = pruned_encoder(
            source.module, config, context.data.calibration, context.batch_size, context.seed
        )
        heads, ffn = config.transformer_ratios
        settings = config.model_dump(mode="json")
        settings.update(heads=heads, ffn=ffn)
        return StageOutput(
            settings,
            {
                "heads_before": result.heads_before,
                "heads_after": result.heads_after,
                "ffn_before": result.ffn_before,
                "ffn_after": result.ffn_after,
                "params_before": before,
                "params_after": sum(p.numel() for p in model.parameters()),
            },
            model=TorchModel(model, (*source.pruning_history, *result.records)),
        )

    @staticmethod
    def _trainer_between_steps(config: PruneConfig, source: TorchModel, context: StageContext) -> TrainBetween | None:
        if config.finetune_between is None:
            return None

        def train(pruned: nn.Module, step: int, history: tuple) -> nn.Module:
            log.info("prune: fine-tuning after step %d (%d epochs)", step, config.finetune_between.epochs)
            model = TorchModel(pruned, (*source.pruning_history, *history))
            return context.fine_tune(
                "finetune", model, config.finetune_between, context.work_dir / f"after-step-{step}"
            ).model

        return train

    def describe(self, settings: dict, metrics: dict) -> list[str]:
        facts = []
        if "macs_before" in metrics:
            facts.append(
                f"MACs {metrics['macs_before'] / 1e6:.1f} M -> {metrics['macs_after'] / 1e6:.1f} M"
                + (f" (ratio used {metrics['ratio']:.3f})" if "ratio" in metrics else "")
            )
        if "heads_before" in metrics:
            facts.append(
                f"attention heads {metrics['heads_before']} -> {metrics['heads_after']} and FFN neurons "
                f"{metrics['ffn_before']} -> {metrics['ffn_after']} per layer; parameters "
                f"{metrics['params_before'] / 1e6:.1f} M -> {metrics['params_after'] / 1e6:.1f} M"
            )
        if "round_to_auto" in metrics:
            auto = metrics["round_to_auto"]
            facts.append(
                f"round_to auto chose {auto['chosen']}: slowest served case {auto['worst_ratio']:.2f}x the "
                f"unpruned model, untrained"
            )
            if auto["slower_on"]:
                facts.append(f"still SLOWER than the unpruned model on {', '.join(auto['slower_on'])}")
        if metrics.get("untouched_layers"):
            facts.append(f"left untouched (unsafe to prune): {', '.join(metrics['untouched_layers'])}")
        if "total_sparsity" in metrics:
            facts.append(
                f"{100 * metrics['total_sparsity']:.1f}% of conv/linear weights are zero; zipped weights "
                f"{metrics['zipped_bytes_before'] / 1e6:.2f} MB -> {metrics['zipped_bytes_after'] / 1e6:.2f} "
                f"MB; {metrics['note']}"
            )
        return facts

    def uses_latency_check(self, config: PruneConfig) -> bool:
        # The rounding is chosen by timing where the run serves: asked for, or by default (unset).
        return getattr(config, "round_to", 1) in ("auto", None)

    def shown_settings(self, settings: dict) -> dict:
        # A transformer's heads and ffn, when set, say what was removed instead of the ratio.
        hidden = ("ratio",) if settings.get("heads") is not None or settings.get("ffn") is not None else ()
        return {
            key: value
            for key, value in settings.items()
            if key not in hidden and not (key in ("heads", "ffn") and value is None)
        }


def _check_decoder(config: PruneConfig) -> None:
    """What a causal LM's width stage cannot take: zeros (no decoding gets faster) and in-stage fine-tuning (a
    `distill` stage after it heals)."""
    if config.method != "structured":
        raise NotForThisModel(
            "method",
            "a causal LM's pruning removes FFN neurons and key/value groups for real (method: structured); zeros "
            "do not make decoding faster",
        )
    if config.finetune_between is not None:
        raise NotForThisModel("finetune_between", "a causal LM is healed by a distill stage after the prune stage")


def _prune_channels(
    config: PruneConfig, source: TorchModel, context: StageContext, train_between: TrainBetween | None
) -> StageOutput:
    """A CNN's output channels removed (Torch-Pruning), at the rounding `round_to` states or `auto` measures."""
    from greencompress.models.data import batches

    def calibration():
        return batches(context.data.calibration, context.batch_size, limit=context.batch_size)

    rounding, by_default = {}, config.round_to is None and context.latency_check is not None
    if config.round_to == "auto" or by_default:
        rounding = choose_round_to(source.module, context.inputs, config, calibration, context.latency_check)
        config = config.model_copy(update={"round_to": rounding["round_to"]})
    result = prune_structured(source.module, context.inputs, config, calibration(), train_between)
    settings = config.model_dump(mode="json")
    if rounding:
        settings["round_to"] = f"auto{' (the default)' if by_default else ''}: {rounding['round_to'] or 1}"
    elif settings["round_to"] is None:
        settings["round_to"] = "none (the default where no runtime of files is measured to time roundings on)"
    return StageOutput(
        settings,
        {
            "ratio": result.ratio,
            "macs_before": result.macs_before,
            "macs_after": result.macs_after,
            "params_before": result.params_before,
            "params_after": result.params_after,
            "untouched_layers": result.untouched_layers,
            **({"round_to_auto": rounding} if rounding else {}),
        },
        model=TorchModel(result.model, (*source.pruning_history, *result.pruning_history)),
    )


# Structured pruning by what the model's task says its structure is (models/tasks/).
_STRUCTURED = {"channels": _prune_channels, "encoder": Prune._prune_encoder}

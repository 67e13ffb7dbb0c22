"""The technique seam: a compression method is a config class and an `apply` over typed inputs and outputs.

A technique works on the PyTorch model (prune, finetune: before export) or on an exported ONNX
file (quantize). The pipeline hands each one a `StageContext` (data, the model's inputs, a work folder, and
services such as torchrun-aware fine-tuning) and gets back a `StageOutput`; techniques never
import the pipeline or the recipe. Register a new one in one file:

    class RoundWeights(Technique):
        name, config, works_on, tag = "round_weights", RoundWeightsConfig, "torch", "rounded"

        def apply(self, config, source, context):
            ...
            return StageOutput(model=TorchModel(rounded, source.pruning_history), settings=..., metrics=...)

    TECHNIQUES.register(RoundWeights())     # or, from a package, an entry point in "greencompress.techniques"

greencompress's own techniques (depth.py, prune.py, finetune.py, quantize.py) register in compress/__init__.py.
A technique checks its own config against the model's structure (`check`, for recipes and search spaces alike).
"""

from __future__ import annotations

import io
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Protocol

import torch
from pydantic import BaseModel
from torch import nn

from greencompress.core.files import write_bytes_atomic
from greencompress.core.registry import Registry
from greencompress.models.inputs import ModelInputs
from greencompress.models.serving import Scorer, logits_only

if TYPE_CHECKING:
    from greencompress.models.data import DataSplits
    from greencompress.models.tasks import Structure


class NotForThisModel(ValueError):
    """A setting of a technique's config that a model of this structure cannot take: `field` names it (dotted, within
    the config), the message says why and what to set instead. The recipe and the search space locate it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TorchModel:
    """A PyTorch model and how to rebuild its architecture from the original one (structured pruning, replayed)."""

    module: nn.Module
    pruning_history: tuple = ()  # Torch-Pruning's records, oldest first; empty while no channel was removed

    def save(self, path: Path) -> None:
        """Pruning history plus weights: reloadable with weights_only=True (no pickled code)."""
        buffer = io.BytesIO()
        torch.save({"pruning_history": list(self.pruning_history), "state_dict": self.module.state_dict()}, buffer)
        write_bytes_atomic(path, buffer.getvalue())

    @staticmethod
    def load(path: Path, original: nn.Module, input_shape: ModelInputs) -> TorchModel:
        """Rebuild a saved model on `original` (the unpruned architecture, changed in place)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        return TorchModel.rebuild(original, input_shape, state["pruning_history"], state["state_dict"])

    @staticmethod
    def rebuild(original: nn.Module, input_shape, pruning_history, state_dict: dict) -> TorchModel:
        """`original` pruned as recorded and given these weights."""
        if pruning_history:
            replay_pruning(original, input_shape, list(pruning_history))
        original.load_state_dict(state_dict)
        return TorchModel(original.eval(), tuple(pruning_history))


def replay_pruning(model: nn.Module, input_shape: ModelInputs, pruning_history: list) -> nn.Module:
    """Apply a recorded structured pruning to a fresh copy of the original architecture (in place).

    The history mixes Torch-Pruning's channel records with greencompress's own (encoder heads, FFN
    neurons and layers; CNN blocks), each replayed in the order it was made.
    """
    from greencompress.compress import block_surgery, encoder_surgery

    channels: list = []
    for record in [*pruning_history, None]:
        if record is not None and not (
            encoder_surgery.is_encoder_record(record) or block_surgery.is_block_record(record)
        ):
            channels.append(record)
            continue
        if channels:  # the channel records since the last structural one, on the model as it is now
            import torch_pruning as tp

            graph = tp.DependencyGraph().build_dependency(model, input_shape.example(1))
            graph.load_pruning_history(channels)
            channels = []
        if record is not None:
            (encoder_surgery.replay if encoder_surgery.is_encoder_record(record) else block_surgery.replay)(
                model, record
            )
    return model


class FineTuner(Protocol):
    """The fine-tuning service a technique is handed (compress/training.py implements it).

    `kind` is "finetune" (distilling, where configured, from the original model) or "qat"
    (quantization-aware, distilling from the float model it starts from); under torchrun every
    rank trains. Returns a FinetuneResult (a QatResult for "qat").
    """

    def __call__(self, kind: str, model: TorchModel, config, work_dir: Path, reduce_range: bool = False): ...


class LatencyCheck(Protocol):
    """Untrained latency of `candidate` over `baseline`, exported as the run serves them (pipeline/proxy.py): one
    dict per serving runtime and batch size, {runtime, batch_size, ratio, low, high} (a paired 95% interval)."""

    def __call__(self, candidate: nn.Module, baseline: nn.Module) -> list[dict]: ...

    def identity(self) -> dict:
        """Everything its answers depend on (CPU, runtimes and versions, batch sizes, threads, precision): a stage
        that consults it holds this in its cache key."""


@dataclass(frozen=True)
class StageContext:
    """What a technique may use besides its config and source: never the whole recipe."""

    data: DataSplits
    inputs: ModelInputs  # what the model takes (one image's shape, or token tensors) and its structure
    batch_size: int  # the data section's batch size, for calibration and evaluation
    seed: int
    work_dir: Path  # this stage's own folder for checkpoints (resumable)
    output_path: Path | None  # where an ONNX-file technique writes its file
    source_model: TorchModel | None  # for an ONNX-file technique: the torch model its input file was exported from
    fine_tune: FineTuner
    export: Callable[[nn.Module, Path], dict]  # export + parity check of a torch model; returns the parity record
    progress: Any = None
    latency_check: LatencyCheck | None = None  # None where nothing can be timed (no file runtime)
    scorer: Scorer = logits_only  # how a model's served outputs are scored (the task's: measure/accuracy.py)


@dataclass(frozen=True)
class StageOutput:
    """What a stage made: a torch model or an ONNX file (with its precision), the settings used, what it measured."""

    settings: dict
    metrics: dict = field(default_factory=dict)
    model: TorchModel | None = None  # for techniques on the torch model
    path: Path | None = None  # for techniques on an ONNX file
    precision: str | None = None  # of the file written, e.g. "int8"


class Technique(ABC):
    """A compression method. Subclasses set the class attributes and implement `apply`."""

    name: ClassVar[str]  # the recipe key: `- prune: {...}`
    config: ClassVar[type[BaseModel]]  # its settings; a recipe section *is* this config (the default scheme's)
    # Config classes told apart by a discriminator field, where the technique has several schemes (prune: method).
    schemes: ClassVar[tuple[type[BaseModel], ...]] = ()
    works_on: ClassVar[Literal["torch", "onnx"]]
    tag: ClassVar[str]  # the word an artifact's name takes from it: "pruned"; for ONNX techniques, the precision
    structures: ClassVar[tuple[str, ...]] = ("channels", "encoder")  # the model structures it acts on (Task.structure)

    def parse(self, settings: dict, context: dict | None = None) -> BaseModel:
        """A recipe stage's settings validated into this technique's config (`context`: the recipe's, for paths)."""
        return self.config.model_validate(settings, context=context)

    def needs_labels(self, config: BaseModel) -> bool:
        """Whether this config trains or scores with labels (synthetic data has none)."""
        return False

    def check(self, config: BaseModel, structure: Structure) -> None:
        """Raise NotForThisModel for a setting a model of `structure` cannot take (models/tasks/: a CNN's channels,
        an encoder's heads and layers). The recipe calls it for each stage, the search space for each dimension."""

    @abstractmethod
    def apply(self, config: BaseModel, source: TorchModel | Path, context: StageContext) -> StageOutput:
        """Run the technique on `source` (a TorchModel, or an ONNX file path); never changes `source`."""

    def describe(self, settings: dict, metrics: dict) -> list[str]:
        """Facts for the report's stage line, from a finished stage's record; none by default."""
        return []

    def shown_settings(self, settings: dict) -> dict:
        """The settings worth showing in the stage line (those that apply to the method chosen)."""
        return settings

    def variant(self, config: BaseModel) -> str:
        """The word that tells two stages of this technique apart in one recipe (quantize: `dynamic`, `static`);
        a technique that returns "" for every config can appear once per recipe (ONNX-file techniques)."""
        return ""

    def resolved(self, config: BaseModel) -> dict:
        """The settings as this machine will apply them (`auto` decided): what a cache key must hold."""
        return config.model_dump(mode="json")

    def untrained(
        self, config: BaseModel, model: nn.Module, inputs: ModelInputs, calibration, batch_size: int, seed: int
    ) -> nn.Module | None:
        """A copy of `model` with the structure `config` would remove, untrained: what the search's proxy times
        before any fine-tuning (`calibration`: a dataset importance is scored on). None where the technique leaves
        the structure as it is (the default)."""
        return None

    def uses_latency_check(self, config: BaseModel) -> bool:
        """Whether `apply` decides by timing (StageContext.latency_check): its key then holds the check's identity."""
        return False


TECHNIQUES: Registry[Technique] = Registry("technique", "greencompress.techniques", lambda entry: entry.name)


def technique(name: str) -> Technique:
    """The registered technique `name` (the built-ins register when greencompress.compress is imported)."""
    return TECHNIQUES.get(name)


def tag_words(techniques: tuple[str, ...]) -> str:
    """The words an artifact's name takes from the techniques that changed its model: `pruned-finetuned`."""
    return "-".join(dict.fromkeys(technique(name).tag for name in techniques))

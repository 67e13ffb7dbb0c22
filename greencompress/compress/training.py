"""Fine-tuning as a service to techniques: in this process, or with every torchrun rank at once.

Techniques ask for fine-tuning through `StageContext.fine_tune` and never see torchrun. Under
torchrun, rank 0 runs the pipeline and, each time it fine-tunes, sends the other ranks the model
(pruning history and weights) and the settings; they wait in `serve`, train their share of every
batch alongside it, and write nothing.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from torch import nn

from greencompress.compress import distributed
from greencompress.compress.finetune import FinetuneConfig, finetune
from greencompress.compress.qat import quantization_aware_finetune
from greencompress.compress.technique import TorchModel
from greencompress.models.data import DataSplits
from greencompress.models.inputs import ModelInputs


class FineTuning:
    """The `FineTuner` the pipeline hands to techniques (compress/technique.py)."""

    def __init__(self, original: nn.Module, data: DataSplits, seed: int, progress=None):
        self.original, self.data, self.seed, self.progress = original, data, seed, progress

    def __call__(
        self, kind: str, model: TorchModel, config: FinetuneConfig, work_dir: Path, reduce_range: bool = False
    ):
        distributed.share(
            {
                "kind": kind,
                "pruning_history": list(model.pruning_history),
                "state_dict": model.module.state_dict(),
                "config": config.model_dump(mode="json"),
                "reduce_range": reduce_range,
            }
        )
        return train(
            kind, model.module, config, self.original, self.data, self.seed, work_dir, self.progress, reduce_range
        )


def train(
    kind: str,
    model: nn.Module,
    config: FinetuneConfig,
    original: nn.Module,
    data: DataSplits,
    seed: int,
    work_dir: Path,
    progress,
    reduce_range: bool,
):
    """One rank's fine-tuning (`finetune`) or quantization-aware fine-tuning (`qat`) of `model`."""
    # Fine-tuning distils from the original model; QAT from the float model it starts from. Decided here, so
    # every torchrun rank picks the same teacher.
    teacher = None
    if config.distillation is not None:
        teacher = model if kind == "qat" else original
    with distributed.threads_per_process():
        if kind == "qat":
            return quantization_aware_finetune(
                model, data.train, config, reduce_range, seed, work_dir, teacher=teacher, progress=progress
            )
        return finetune(model, data.train, config, seed, work_dir, teacher=teacher, progress=progress)


def serve(original: nn.Module, data: DataSplits, seed: int, inputs: ModelInputs) -> None:
    """The loop of a torchrun rank other than 0: train along with rank 0 whenever it fine-tunes, until it is done.

    `original` is the model as rank 0 prepared it (its fitted head included): the teacher, and what every
    pruned model rank 0 sends is rebuilt on."""
    while (command := distributed.share(None))["kind"] != "done":
        model = TorchModel.rebuild(copy.deepcopy(original), inputs, command["pruning_history"], command["state_dict"])
        with tempfile.TemporaryDirectory() as scratch:  # checkpoints are rank 0's to keep
            train(
                command["kind"],
                model.module,
                FinetuneConfig(**command["config"]),
                original,
                data,
                seed,
                Path(scratch),
                None,
                command["reduce_range"],
            )

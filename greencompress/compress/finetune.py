"""Fine-tuning from the pretrained or pruned model: seeded, resumable per epoch, best validation epoch kept."""

from __future__ import annotations

import contextlib
import contextvars
import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from greencompress.compress import distributed
from greencompress.compress.technique import (
    StageContext,
    StageOutput,
    Technique,
    TorchModel,
)
from greencompress.core.config import Section
from greencompress.core.errors import GreencompressError
from greencompress.core.files import write_bytes_atomic
from greencompress.models.data import tensor_collate


class DistillationConfig(Section):
    """Knowledge distillation from the unpruned model: loss = alpha * KD(T) + (1 - alpha) * cross-entropy.

    For a sentence embedder KD is 1 - cosine to the unpruned model's embedding (the temperature does not apply).
    """

    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)


class FinetuneConfig(Section):
    """Fine-tuning of the PyTorch model (after pruning) on the training split, best epoch kept."""

    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: float = Field(default=0.0, ge=0)  # linear warm-up, then cosine decay to 0
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    distillation: DistillationConfig | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)  # held out of the training split to pick the best epoch
    early_stopping_patience: int | None = Field(default=None, ge=1)  # epochs without a better validation top-1
    # Training-time augmentation of each batch: 'random_crop' (pad 1/8 of the side, crop back), 'horizontal_flip'
    # (not for data whose meaning flips, such as digits).
    augment: list[Literal["random_crop", "horizontal_flip"]] = Field(default_factory=list)
    # Where to train: auto takes the GPU when PyTorch sees one (under torchrun, each rank its LOCAL_RANK's GPU).
    device: Literal["auto", "cpu", "cuda"] = "auto"


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneResult:
    """The best model (by validation top-1), the per-epoch history, and whether it resumed from a checkpoint."""

    model: nn.Module
    history: list[dict]  # per epoch: epoch, train_loss, validation_top1
    best_epoch: int
    resumed_from_epoch: int | None


def split_for_validation(train_set: Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """A seeded (training, validation) split of the training set: the evaluation split is never used to choose."""
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed)).tolist()
    held_out = max(1, int(round(fraction * len(train_set))))
    return Subset(train_set, order[held_out:]), Subset(train_set, order[:held_out])


# Called after every fine-tuning epoch with (epoch, validation top-1 as a fraction); it may raise to stop the
# run (the search stops hopeless trials so). Set with `observe_epochs`; None outside one.
_epoch_observer: contextvars.ContextVar[Callable[[int, float], None] | None] = contextvars.ContextVar(
    "epoch_observer", default=None
)


@contextlib.contextmanager
def observe_epochs(observer: Callable[[int, float], None]):
    """Within the block, `observer(epoch, validation_top1)` runs after each fine-tuning epoch of this process."""
    token = _epoch_observer.set(observer)
    try:
        yield
    finally:
        _epoch_observer.reset(token)


def validation_top1(model: nn.Module, train_set: Dataset, config: FinetuneConfig, seed: int) -> float:
    """Top-1 (a fraction) on the part of the training split that fine-tuning holds out to pick its best epoch."""
    _, validation = split_for_validation(train_set, config.validation_fraction, seed)
    return _top1(model, validation, config.batch_size, torch.device("cpu"))


def finetune(
    model: nn.Module,
    train_set: Dataset,
    config: FinetuneConfig,
    seed: int,
    checkpoint_dir: Path,
    teacher: nn.Module | None = None,
    progress=None,
) -> FinetuneResult:
    """Train `model` (a copy) for `config.epochs`; resumes from `checkpoint_dir/last.pt` when it is there."""
    device = training_device(config.device)
    model = copy.deepcopy(model).to(device)
    if teacher is not None:
        teacher = teacher.to(device)
    training, validation = split_for_validation(train_set, config.validation_fraction, seed)
    world = distributed.world_size()
    generator = torch.Generator().manual_seed(seed + distributed.rank())
    if world > 1:
        # Each rank trains on its share of every batch; gradients are averaged, so the recipe's batch
        # size and learning rate keep their meaning.
        sampler = DistributedSampler(training, num_replicas=world, rank=distributed.rank(), shuffle=True, seed=seed)
        loader = DataLoader(
            training,
            batch_size=max(1, config.batch_size // world),
            sampler=sampler,
            num_workers=0,
            collate_fn=tensor_collate(training),
        )
        # Some parameters take no part in the loss: a sentence embedder reads the encoder's last hidden state, never its
        # pooler. DDP must then be told to look for them, or the ranks wait for gradients that never come.
        trained = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
        log.info("finetune: data-parallel on %d processes, %d samples per process and step", world, loader.batch_size)
    else:
        sampler = None
        loader = DataLoader(
            training,
            batch_size=config.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=0,
            collate_fn=tensor_collate(training),
        )
        trained = model
    optimizer = _optimizer(model, config)
    steps_per_epoch = len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_epochs * steps_per_epoch, config.epochs * steps_per_epoch)
    )
    loss_function = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history: list[dict] = []
    best_top1, best_state, best_epoch, start_epoch, resumed = -1.0, None, 0, 0, None

    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    last = checkpoint_dir / "last.pt"
    state = (
        torch.load(last, map_location="cpu", weights_only=True) if distributed.is_main() and last.is_file() else None
    )
    state = distributed.share(state)  # every rank resumes from rank 0's checkpoint
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        generator.set_state(state["generator"])
        history, best_top1, best_epoch = state["history"], state["best_top1"], state["best_epoch"]
        best_state, start_epoch = state["best_model"], state["epoch"]
        resumed = start_epoch
        log.info("finetune: resuming after epoch %d from %s", start_epoch, last)

    # Weights that are exactly zero (unstructured pruning) stay zero: otherwise training would undo the sparsity.
    zero_masks = [
        (module.weight, module.weight != 0)
        for module in model.modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and bool((module.weight == 0).any())
    ]
    if teacher is not None:
        teacher = teacher.eval()
    task = (
        progress.add_task("fine-tuning", total=config.epochs * steps_per_epoch, completed=start_epoch * steps_per_epoch)
        if progress
        else None
    )
    for epoch in range(start_epoch, config.epochs):
        if config.early_stopping_patience and epoch - best_epoch >= config.early_stopping_patience:
            log.info("finetune: early stop after epoch %d (best epoch %d)", epoch, best_epoch)
            break
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        total_loss = 0.0
        for inputs, labels in loader:
            inputs = to_device(augment(inputs, config.augment, generator), device)
            labels = labels.to(device)
            output = model_output(trained, inputs)
            loss = loss_function(_logits(output), labels)
            if teacher is not None and config.distillation is not None:
                loss = _distill(loss, output, teacher, inputs, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for weight, mask in zero_masks:
                    weight.mul_(mask)
            schedule.step()
            total_loss += loss.item()
            if progress:
                progress.update(task, advance=1, description=f"fine-tuning epoch {epoch + 1} loss {loss.item():.3f}")
        # Rank 0 evaluates and tells the others, so best epoch and early stopping agree on every rank.
        top1 = distributed.share(_top1(model, validation, config.batch_size, device) if distributed.is_main() else None)
        history.append({"epoch": epoch + 1, "train_loss": total_loss / steps_per_epoch, "validation_top1": top1})
        log.info(
            "finetune: epoch %d/%d, loss %.4f, validation top-1 %.2f%%",
            epoch + 1,
            config.epochs,
            total_loss / steps_per_epoch,
            100 * top1,
        )
        if (observer := _epoch_observer.get()) is not None:
            observer(epoch + 1, top1)
        if top1 > best_top1:
            best_top1, best_epoch, best_state = top1, epoch + 1, copy.deepcopy(model.state_dict())
        checkpoint = {
            "epoch": epoch + 1,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "generator": generator.get_state(),
            "history": history,
            "best_top1": best_top1,
            "best_epoch": best_epoch,
            "best_model": best_state,
        }
        if distributed.is_main():
            save_state_atomic(checkpoint, last)
    model.load_state_dict(best_state)
    if teacher is not None:
        teacher.to("cpu")
    return FinetuneResult(model.to("cpu").eval(), history, best_epoch, resumed)  # export and runners take it from here


def training_device(setting: str) -> torch.device:
    """The device to train on: a GPU for `cuda` (an error without one) or for `auto` where PyTorch sees one."""
    import os

    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from greencompress.core.errors import GreencompressError

        raise GreencompressError("finetune.device: cuda asked for, but PyTorch sees no CUDA GPU here")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def model_output(model: nn.Module, inputs):
    """What `model` returns for an image batch, or for named token tensors (passed as keyword arguments)."""
    return model(**inputs) if isinstance(inputs, dict) else model(inputs)


def _logits(output):
    return output[0] if isinstance(output, (tuple, list)) else output  # a sentence embedder adds its embedding


def forward(model: nn.Module, inputs):
    """The logits of `model` on an image batch, or on named token tensors."""
    return _logits(model_output(model, inputs))


def to_device(inputs, device: torch.device):
    return (
        {name: tensor.to(device) for name, tensor in inputs.items()} if isinstance(inputs, dict) else inputs.to(device)
    )


def augment(inputs, kinds, generator: torch.Generator):
    """Seeded per-sample augmentation of a normalized NCHW batch (padding is 0, the per-channel mean)."""
    if isinstance(inputs, dict):
        if kinds:
            raise GreencompressError(f"finetune.augment: {', '.join(kinds)} apply to images, not to text batches")
        return inputs
    if "random_crop" in kinds:
        pad = max(1, inputs.shape[-1] // 8)  # 4 pixels at 32x32, the usual CIFAR setting
        padded = nn.functional.pad(inputs, (pad, pad, pad, pad))
        offsets = torch.randint(0, 2 * pad + 1, (len(inputs), 2), generator=generator).tolist()
        height, width = inputs.shape[-2:]
        inputs = torch.stack(
            [padded[i, :, top : top + height, left : left + width] for i, (top, left) in enumerate(offsets)]
        )
    if "horizontal_flip" in kinds:
        flip = torch.rand(len(inputs), generator=generator) < 0.5
        inputs = torch.where(flip.view(-1, 1, 1, 1), inputs.flip(-1), inputs)
    return inputs


def _optimizer(model: nn.Module, config: FinetuneConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=config.learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.momentum > 0,
    )


def warmup_cosine(warmup: float, total: int):
    """The learning-rate factor at each step: linear warm-up over `warmup` steps, then cosine decay to `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _distill(hard_loss, output, teacher: nn.Module, inputs, config: FinetuneConfig):
    """alpha x soft + (1 - alpha) x hard. Soft: the KL divergence of softened logits; for a sentence embedder (its
    output carries the embedding), 1 - cosine to the teacher's embedding, which is what its users deploy."""
    temperature, alpha = config.distillation.temperature, config.distillation.alpha
    with torch.no_grad():
        taught = model_output(teacher, inputs)
    if isinstance(output, (tuple, list)) and isinstance(taught, (tuple, list)) and len(output) > 1:
        soft = (1 - nn.functional.cosine_similarity(output[1], taught[1], dim=-1)).mean()
        return alpha * soft + (1 - alpha) * hard_loss
    logits, teacher_logits = _logits(output), _logits(taught)
    soft = nn.functional.kl_div(
        nn.functional.log_softmax(logits / temperature, dim=1),
        nn.functional.softmax(teacher_logits / temperature, dim=1),
        reduction="batchmean",
    )
    # T^2 keeps the soft term's gradients on the scale of the hard term's (Hinton et al., 2015).
    return alpha * soft * temperature**2 + (1 - alpha) * hard_loss


def _top1(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for inputs, labels in DataLoader(
            dataset, batch_size=batch_size, num_workers=0, collate_fn=tensor_collate(dataset)
        ):
            correct += int((forward(model, to_device(inputs, device)).argmax(1).cpu() == labels).sum())
            total += len(labels)
    return correct / total


def save_state_atomic(state: dict, path: Path) -> None:
    """torch.save through a temporary file and a rename: a checkpoint that exists is whole."""
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


class Finetune(Technique):
    """Fine-tuning of the PyTorch model on the training split (after pruning), torchrun-aware through the context."""

    name, config, works_on, tag = "finetune", FinetuneConfig, "torch", "finetuned"

    def needs_labels(self, config: FinetuneConfig) -> bool:
        return True

    def apply(self, config: FinetuneConfig, source: TorchModel, context: StageContext) -> StageOutput:
        result = context.fine_tune("finetune", source, config, context.work_dir)
        return StageOutput(
            config.model_dump(mode="json"),
            {
                "history": result.history,
                "best_epoch": result.best_epoch,
                "resumed_from_epoch": result.resumed_from_epoch,
                "processes": distributed.world_size(),
            },
            model=TorchModel(result.model, source.pruning_history),
        )

    def describe(self, settings: dict, metrics: dict) -> list[str]:
        return (
            [f"best validation epoch {metrics['best_epoch']} of {len(metrics['history'])}"]
            if "best_epoch" in metrics
            else []
        )

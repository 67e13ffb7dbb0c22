"""Fine-tuning: it learns, keeps pruned zeros, picks the best validation epoch, and resumes from its checkpoint."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from greencompress.compress.finetune import (
    FinetuneConfig,
    finetune,
    split_for_validation,
)


def separable_data(samples: int = 96) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(samples) % 2
    images = torch.randn(samples, 3, 8, 8, generator=generator) * 0.3 + labels.view(-1, 1, 1, 1).float() * 2 - 1
    return TensorDataset(images, labels)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def config(**fields) -> FinetuneConfig:
    base = dict(epochs=3, batch_size=16, learning_rate=0.1, warmup_epochs=0.5, validation_fraction=0.25)
    return FinetuneConfig(**{**base, **fields})


def accuracy(model, dataset) -> float:
    with torch.no_grad():
        return float((model(dataset.tensors[0]).argmax(1) == dataset.tensors[1]).float().mean())


def test_validation_split_is_seeded_and_disjoint():
    data = separable_data()
    training, validation = split_for_validation(data, 0.25, seed=3)
    assert len(validation) == 24 and not set(training.indices) & set(validation.indices)
    assert split_for_validation(data, 0.25, seed=3)[1].indices == validation.indices


def test_finetuning_learns_and_keeps_the_best_epoch(tmp_path):
    data, model = separable_data(), small_net()
    before = accuracy(model, data)
    result = finetune(model, data, config(), seed=0, checkpoint_dir=tmp_path)
    assert accuracy(result.model, data) >= 0.95 > before
    assert len(result.history) == 3 and 1 <= result.best_epoch <= 3
    best = max(result.history, key=lambda row: row["validation_top1"])
    assert best["epoch"] == result.best_epoch and result.resumed_from_epoch is None


def test_zeros_from_pruning_stay_zero(tmp_path):
    model = small_net()
    with torch.no_grad():
        model[0].weight[:2] = 0
    result = finetune(model, separable_data(), config(epochs=1), seed=0, checkpoint_dir=tmp_path)
    assert torch.count_nonzero(result.model[0].weight[:2]) == 0


def test_distillation_runs_with_a_teacher(tmp_path):
    teacher = finetune(small_net(), separable_data(), config(), seed=0, checkpoint_dir=tmp_path / "t").model
    student = finetune(
        small_net(),
        separable_data(),
        config(distillation={"temperature": 2.0, "alpha": 0.7}),
        seed=0,
        checkpoint_dir=tmp_path / "s",
        teacher=teacher,
    )
    assert accuracy(student.model, separable_data()) >= 0.9


class InterruptAfter:
    """A progress display that presses Ctrl-C after `steps` training steps."""

    def __init__(self, steps: int):
        self.steps = steps

    def add_task(self, *args, **kwargs):
        return 0

    def update(self, task, advance=0, **kwargs):
        self.steps -= advance
        if self.steps <= 0:
            raise KeyboardInterrupt


def test_an_interrupted_finetune_resumes_where_it_stopped(tmp_path):
    import pytest

    data = separable_data()
    straight = finetune(small_net(), data, config(), seed=0, checkpoint_dir=tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):  # killed during epoch 2 (each epoch is 5 steps of 16)
        finetune(small_net(), data, config(), seed=0, checkpoint_dir=tmp_path / "resumed", progress=InterruptAfter(7))
    resumed = finetune(small_net(), data, config(), seed=0, checkpoint_dir=tmp_path / "resumed")
    assert resumed.resumed_from_epoch == 1 and len(resumed.history) == 3
    assert resumed.best_epoch == straight.best_epoch
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def test_augmentation_is_seeded_and_keeps_shapes():
    from greencompress.compress.finetune import augment

    batch = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16)
    first = augment(batch, ["random_crop", "horizontal_flip"], torch.Generator().manual_seed(1))
    again = augment(batch, ["random_crop", "horizontal_flip"], torch.Generator().manual_seed(1))
    assert first.shape == batch.shape and torch.equal(first, again) and not torch.equal(first, batch)
    flipped = augment(batch, ["horizontal_flip"], torch.Generator().manual_seed(0))
    for sample, original in zip(flipped, batch):  # each sample is itself or its mirror image
        assert torch.equal(sample, original) or torch.equal(sample, original.flip(-1))
    assert torch.equal(augment(batch, [], torch.Generator()), batch)


def test_training_on_a_gpu_that_is_not_there_is_a_clear_error(tmp_path):
    import torch

    from greencompress.compress.finetune import (
        FinetuneConfig,
        finetune,
        training_device,
    )
    from greencompress.core.errors import GreencompressError

    assert training_device("cpu").type == "cpu"
    assert training_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the error path is for machines without one")
    data = torch.utils.data.TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.int64))
    with pytest.raises(GreencompressError, match="finetune.device: cuda asked for, but PyTorch sees no CUDA GPU"):
        finetune(torch.nn.Linear(4, 2), data, FinetuneConfig(epochs=1, device="cuda"), 0, tmp_path)

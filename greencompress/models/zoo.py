"""Built-in pretrained models that greencompress builds offline: trained on first use, then cached.

No pretrained weights can be downloaded where greencompress runs its own tests, so the default
recipe's checkpoint is made by a deterministic, documented routine on data that ships with
scikit-learn. The file lands in the cache folder (greencompress/core/cache.py) under a name that hashes
the routine's settings, so a changed routine never reuses a stale file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from greencompress.core.cache import cache_dir, mark_used
from greencompress.core.files import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    """How a built-in model is trained: SGD with Nesterov momentum and a one-cycle schedule."""

    epochs: int = 5
    batch_size: int = 64
    max_learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    max_shift_px: int = 6  # random translation, in pixels of the upscaled image
    seed: int = 0


@dataclass(frozen=True)
class BuiltinModel:
    """A torchvision architecture trained on the digits set at a fixed resolution."""

    name: str
    architecture: str
    image_size: int
    num_classes: int
    training: TrainingConfig

    def cache_path(self) -> Path:
        settings = json.dumps({**asdict(self), "torch": torch.__version__.split("+")[0]}, sort_keys=True)
        digest = hashlib.sha256(settings.encode()).hexdigest()[:10]
        return cache_dir() / "models" / f"{self.name}-{digest}.pt"


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "resnet18-digits-64": BuiltinModel(
        name="resnet18-digits-64", architecture="resnet18", image_size=64, num_classes=10, training=TrainingConfig()
    ),
}

# Digits are single-channel ink on a blank page: normalize the replicated channel around 0.
DIGITS_MEAN = (0.5, 0.5, 0.5)
DIGITS_STD = (0.5, 0.5, 0.5)


def build_architecture(spec: BuiltinModel) -> nn.Module:
    import torchvision

    return torchvision.models.get_model(spec.architecture, weights=None, num_classes=spec.num_classes)


def load_builtin(name: str, progress=None) -> tuple[nn.Module, dict]:
    """The built-in model in eval mode and its provenance; trains and caches it when absent."""
    spec = BUILTIN_MODELS[name]
    path = spec.cache_path()
    provenance_path = path.with_suffix(".json")
    if not (path.exists() and provenance_path.exists()):
        log.info("built-in model %s not cached yet: training it once (about 2 minutes on 2 cores)", name)
        model, provenance = train_builtin(spec, progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        torch.save(model.state_dict(), temporary)
        provenance["sha256"] = file_sha256(temporary)
        provenance_path.write_text(json.dumps(provenance, indent=2))
        temporary.replace(path)  # the checkpoint appears only once complete
    mark_used(path)
    model = build_architecture(spec)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    provenance = json.loads(provenance_path.read_text())
    provenance.update(path=str(path), cached=True)
    return model.eval(), provenance


def train_builtin(spec: BuiltinModel, progress=None) -> tuple[nn.Module, dict]:
    """Train the built-in model on the digits training split; returns it and how it was made."""
    from greencompress.models.data import digits_split_indices, digits_tensors

    config = spec.training
    torch.manual_seed(config.seed)
    images, labels = digits_tensors(spec.image_size, DIGITS_MEAN, DIGITS_STD)
    train_index, test_index = digits_split_indices(labels, test_fraction=0.2)
    train_images, train_labels = images[train_index], labels[train_index]

    model = build_architecture(spec)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.max_learning_rate,
        momentum=config.momentum,
        nesterov=True,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = -(-len(train_images) // config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.max_learning_rate, epochs=config.epochs, steps_per_epoch=steps_per_epoch
    )
    loss_function = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    task = progress.add_task(f"training {spec.name}", total=config.epochs * steps_per_epoch) if progress else None
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_images), generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            inputs = _random_shift(train_images[batch], config.max_shift_px, generator)
            loss = loss_function(model(inputs), train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress:
                progress.update(
                    task, advance=1, description=f"training {spec.name} epoch {epoch + 1} loss {loss.item():.3f}"
                )
    seconds = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        predictions = torch.cat([model(chunk).argmax(1) for chunk in images[test_index].split(256)])
    top1 = (predictions == labels[test_index]).float().mean().item()
    log.info("trained %s in %.0f s: top-1 %.2f%% on the digits test split", spec.name, seconds, 100 * top1)
    provenance = {
        "source": "builtin",
        "name": spec.name,
        "description": (
            f"torchvision {spec.architecture} ({spec.num_classes} classes) trained from scratch by greencompress "
            f"on the scikit-learn digits training split ({len(train_index)} images) at "
            f"{spec.image_size}x{spec.image_size}"
        ),
        "training": asdict(config),
        "training_seconds": round(seconds, 1),
        "test_top1_at_build": round(top1, 4),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return model, provenance


def _random_shift(images: torch.Tensor, max_shift_px: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift_px` in x and y, filling with the background value."""
    if max_shift_px == 0:
        return images
    size = images.shape[-1]
    padded = nn.functional.pad(images, [max_shift_px] * 4, value=float(images.amin()))
    offsets = torch.randint(0, 2 * max_shift_px + 1, (len(images), 2), generator=generator)
    return torch.stack([padded[i, :, y : y + size, x : x + size] for i, (y, x) in enumerate(offsets.tolist())])

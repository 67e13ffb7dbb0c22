"""Datasets and splits from a DataSpec: an evaluation split and a calibration split for every kind."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from greencompress.core.config import Section, resolve_path
from greencompress.core.errors import DataError


class DataSpec(Section):
    """The evaluation and calibration data.

    `digits`: scikit-learn's bundled handwritten digits (real, offline), seeded stratified split;
    `imagefolder`: `root/<eval_split>/<class>/*.png` and `root/<calibration_split>/...`;
    `cifar10`: torchvision's CIFAR-10 under `root` (downloaded only if `download: true`);
    `synthetic`: random inputs, for latency and energy only (no accuracy is reported).
    """

    kind: Literal["digits", "imagefolder", "cifar10", "synthetic"]
    root: Path | None = None
    download: bool = False
    eval_split: str = "val"
    calibration_split: str = "train"
    image_size: int = Field(default=224, ge=8)
    resize_to: int | None = Field(default=None, ge=8)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    eval_samples: int | None = Field(default=None, ge=1)
    num_classes: int = Field(default=10, ge=2)
    synthetic_samples: int = Field(default=64, ge=1)
    batch_size: int = Field(default=64, ge=1)

    @field_validator("root")
    @classmethod
    def _root(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = resolve_path(value, info)
        may_be_created = info.data.get("kind") == "cifar10" and info.data.get("download")
        if not may_be_created and not path.is_dir():
            raise ValueError(f"folder not found: {path}")
        return path

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError(f"every std must be > 0, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _root_when_needed(self) -> DataSpec:
        if self.kind in ("imagefolder", "cifar10") and self.root is None:
            raise ValueError(f"kind '{self.kind}' needs 'root'")
        if self.kind == "imagefolder":
            for split in (self.eval_split, self.calibration_split):
                if not (self.root / split).is_dir():
                    raise ValueError(f"split folder not found: {self.root / split}")
        return self

# The digits split never depends on the recipe's seed: the built-in checkpoint is trained on the
# training part, so a different split would leak test images into training.
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class DataSplits:
    """What a run evaluates and calibrates on. `labelled` is False for synthetic data."""

    eval: Dataset
    calibration: Dataset
    train: Dataset | None
    num_classes: int
    labelled: bool
    description: str


def load_data(spec: DataSpec, seed: int) -> DataSplits:
    """Build the splits a DataSpec describes; raises DataError when data is missing or unreadable."""
    builders = {"digits": _digits, "imagefolder": _imagefolder, "cifar10": _cifar10, "synthetic": _synthetic}
    splits = builders[spec.kind](spec, seed)
    if spec.eval_samples is not None and spec.eval_samples < len(splits.eval):
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(splits.eval), generator=generator)[: spec.eval_samples].sort().values
        splits = DataSplits(
            eval=Subset(splits.eval, keep.tolist()),
            calibration=splits.calibration,
            train=splits.train,
            num_classes=splits.num_classes,
            labelled=splits.labelled,
            description=f"{splits.description}; eval subset of {spec.eval_samples} (seed {seed})",
        )
    return splits


def batches(dataset: Dataset, batch_size: int, limit: int | None = None):
    """Yield (inputs as float32 numpy NCHW, labels as int64 numpy) in dataset order, at most `limit` samples."""
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    for inputs, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        yield inputs.numpy().astype(np.float32, copy=False), labels.numpy()


def digits_tensors(image_size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits as normalized 3x`image_size`x`image_size` tensors, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 8x8, values 0..16
    images = torch.nn.functional.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = images.expand(-1, 3, -1, -1)
    images = (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    return images.contiguous(), torch.tensor(digits.target, dtype=torch.int64)


def digits_split_indices(labels: torch.Tensor, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test indices of the digits set, fixed by DIGITS_SPLIT_SEED."""
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    train, test = train_test_split(
        indices, test_size=test_fraction, stratify=labels.numpy(), random_state=DIGITS_SPLIT_SEED
    )
    return np.sort(train), np.sort(test)


def _digits(spec: DataSpec, seed: int) -> DataSplits:
    images, labels = digits_tensors(spec.image_size, spec.mean, spec.std)
    train, test = digits_split_indices(labels, spec.test_fraction)
    train_set = TensorDataset(images[train], labels[train])
    # Calibration draws from the training part in a seeded order, never from the evaluation part.
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return DataSplits(
        eval=TensorDataset(images[test], labels[test]),
        calibration=Subset(train_set, order.tolist()),
        train=train_set,
        num_classes=10,
        labelled=True,
        description=(
            f"scikit-learn digits, {len(test)} test / {len(train)} train images "
            f"(stratified, split seed {DIGITS_SPLIT_SEED}), upscaled 8x8 -> {spec.image_size}x{spec.image_size}"
        ),
    )


def _image_transform(spec: DataSpec):
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(spec.resize_to or spec.image_size),
            transforms.CenterCrop(spec.image_size),
            transforms.ToTensor(),
            transforms.Normalize(spec.mean, spec.std),
        ]
    )


def _imagefolder(spec: DataSpec, seed: int) -> DataSplits:
    from torchvision.datasets import ImageFolder

    transform = _image_transform(spec)
    folders = {}
    for split in (spec.eval_split, spec.calibration_split):
        path = spec.root / split
        try:
            folders[split] = ImageFolder(str(path), transform=transform)
        except (FileNotFoundError, PermissionError, OSError) as error:
            raise DataError(f"{path}: cannot read as an image folder (<split>/<class>/<image>): {error}") from None
    eval_set, calibration_set = folders[spec.eval_split], folders[spec.calibration_split]
    for split, folder in folders.items():
        for name in folder.classes:  # a name the filesystem could not decode carries surrogates
            if any("\udc80" <= char <= "\udcff" for char in name):
                raise DataError(f"{spec.root / split}: class folder {os.fsencode(name)!r} has a name that is not UTF-8 "
                                f"text; rename it (class names go into reports, which are UTF-8)")
    if eval_set.classes != calibration_set.classes:
        raise DataError(
            f"{spec.root}: the class folders of '{spec.eval_split}' and '{spec.calibration_split}' differ: "
            f"{eval_set.classes} vs {calibration_set.classes}"
        )
    order = torch.randperm(len(calibration_set), generator=torch.Generator().manual_seed(seed))
    return DataSplits(
        eval=eval_set,
        calibration=Subset(calibration_set, order.tolist()),
        train=calibration_set,
        num_classes=len(eval_set.classes),
        labelled=True,
        description=(
            f"image folder {spec.root}: {len(eval_set)} images in '{spec.eval_split}', "
            f"{len(calibration_set)} in '{spec.calibration_split}', {len(eval_set.classes)} classes"
        ),
    )


def _cifar10(spec: DataSpec, seed: int) -> DataSplits:
    from torchvision.datasets import CIFAR10

    transform = _image_transform(spec)
    try:
        test = CIFAR10(str(spec.root), train=False, transform=transform, download=spec.download)
        train = CIFAR10(str(spec.root), train=True, transform=transform, download=spec.download)
    except RuntimeError as error:
        hint = "" if spec.download else " (set data.download: true to fetch it, or unpack cifar-10-python.tar.gz there)"
        raise DataError(f"{spec.root}: CIFAR-10 not found: {error}{hint}") from None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return DataSplits(
        eval=test,
        calibration=Subset(train, order.tolist()),
        train=train,
        num_classes=10,
        labelled=True,
        description=f"CIFAR-10 at {spec.root}: {len(test)} test / {len(train)} train images",
    )


def _synthetic(spec: DataSpec, seed: int) -> DataSplits:
    generator = torch.Generator().manual_seed(seed)
    shape = (spec.synthetic_samples, 3, spec.image_size, spec.image_size)
    images = torch.randn(shape, generator=generator)
    no_labels = torch.full((spec.synthetic_samples,), -1, dtype=torch.int64)
    dataset = TensorDataset(images, no_labels)
    return DataSplits(
        eval=dataset,
        calibration=dataset,
        train=None,
        num_classes=spec.num_classes,
        labelled=False,
        description=f"synthetic: {spec.synthetic_samples} random normal inputs (seed {seed}); no accuracy",
    )


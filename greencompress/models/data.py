"""Datasets and splits from a DataSpec: an evaluation split and a calibration split for every kind."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from greencompress.core.config import Section, resolve_existing, resolve_path
from greencompress.core.errors import DataError
from greencompress.models.text import (
    Tokenization,
    TokenizedTexts,
    read_text_table,
    token_lengths,
    tokenize,
)


class DataSpec(Section):
    """The evaluation and calibration data.

    `digits`: scikit-learn's bundled handwritten digits (real, offline), seeded stratified split;
    `imagefolder`: `root/<eval_split>/<class>/*.png` and `root/<calibration_split>/...`;
    `cifar10`: torchvision's CIFAR-10 under `root` (downloaded only if `download: true`);
    `synthetic`: random inputs, for latency and energy only (no accuracy is reported);
    `text`: labelled texts from `path` (CSV with a header row, or JSONL), or the shipped WordNet glosses
    when no path is given, tokenised by the model's tokenizer (a `huggingface` model). Rows whose
    `split_column` is `eval_split` are evaluated, those of `calibration_split` calibrate and train;
    without that column, a seeded stratified split by `test_fraction`.
    A task plugin may read a kind of its own (models/tasks/: `Task.data_kinds`), from `path` or `root`.
    """

    # One of BUILTIN_KINDS or a kind a registered task reads; the recipe checks it against the model's task.
    kind: str = Field(min_length=1)
    root: Path | None = None
    path: Path | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    split_column: str = "split"
    # Text generation: a JSONL prompt set, one {"prompt": text} or {"messages": [{"role", "content"}, ...]} per line
    # (messages rendered with the model's chat template), whose greedy continuations every model is compared on.
    # None: prompts cut from the end of the evaluation text.
    prompts: Path | None = None
    delimiter: str | None = Field(default=None, min_length=1, max_length=1)  # a CSV's; None: sniffed from the file
    max_length: int | None = Field(default=None, ge=2)  # tokens per text, longer ones cut; None: the model's maximum
    # Accuracy batches: padded to the longest text of each batch (`longest`), or every one to max_length.
    padding: Literal["longest", "max_length"] = "longest"
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

    _check_path = field_validator("path", "prompts")(resolve_existing)

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError(f"every std must be > 0, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _root_when_needed(self) -> DataSpec:
        if self.path is not None and self.kind in IMAGE_KINDS:
            raise ValueError(f"'path' is the file of kind 'text'; kind '{self.kind}' reads 'root'")
        if self.kind in ("imagefolder", "cifar10") and self.root is None:
            raise ValueError(f"kind '{self.kind}' needs 'root'")
        if self.kind == "imagefolder":
            for split in (self.eval_split, self.calibration_split):
                if not (self.root / split).is_dir():
                    raise ValueError(f"split folder not found: {self.root / split}")
        return self


# The kinds load_data reads; a task plugin's own kinds are read by its Task.load_data.
IMAGE_KINDS = ("digits", "imagefolder", "cifar10", "synthetic")
BUILTIN_KINDS = (*IMAGE_KINDS, "text")

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
    class_names: tuple[str, ...] | None = None  # image classes in label order (folder names); None when unnamed


def load_data(
    spec: DataSpec, seed: int, tokenization: Tokenization | None = None, head_labels: tuple[str, ...] | None = None
) -> DataSplits:
    """Build the splits a DataSpec describes; raises DataError when data is missing or unreadable.

    Text is tokenised by the model's tokenizer and labelled in its head's label order (when it has a head).
    Images are labelled in `head_labels` order when given (an image model whose head names its labels): each
    class is matched to the head's label of the same name.
    """
    if spec.kind not in BUILTIN_KINDS:
        raise DataError(
            f"data.kind: {spec.kind!r} is read by its task's own load_data, not by greencompress's "
            f"(kinds: {', '.join(BUILTIN_KINDS)})"
        )
    if spec.kind == "text":
        splits = _text(spec, seed, tokenization)
    else:
        builders = {"digits": _digits, "imagefolder": _imagefolder, "cifar10": _cifar10, "synthetic": _synthetic}
        splits = builders[spec.kind](spec, seed)
        if head_labels is not None and splits.class_names is not None:
            splits = _in_head_order(splits, head_labels, spec)
    if spec.eval_samples is not None and spec.eval_samples < len(splits.eval):
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(splits.eval), generator=generator)[: spec.eval_samples].sort().values
        splits = replace(
            splits,
            eval=Subset(splits.eval, keep.tolist()),
            description=f"{splits.description}; eval subset of {spec.eval_samples} (seed {seed})",
        )
    return splits


class _Relabelled(Dataset):
    """A labelled dataset whose labels are looked up in `mapping` (old label -> new)."""

    def __init__(self, dataset: Dataset, mapping: list[int]):
        self.dataset, self.mapping = dataset, mapping

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        item, label = self.dataset[index]
        return item, self.mapping[int(label)]


def _in_head_order(splits: DataSplits, head_labels: tuple[str, ...], spec: DataSpec) -> DataSplits:
    """The splits with each class's label set to the index of the head's label of the same name."""
    index_of = {name: index for index, name in enumerate(head_labels)}
    unknown = [name for name in splits.class_names if name not in index_of]
    if unknown:
        shown = ", ".join(head_labels[:10]) + (f", ... ({len(head_labels)} in all)" if len(head_labels) > 10 else "")
        raise DataError(
            f"data.root: class(es) {', '.join(map(repr, unknown[:5]))} of {spec.root or spec.kind} are not "
            f"labels of the model's head, whose labels are: {shown}; name each class folder after its label"
        )
    mapping = [index_of[name] for name in splits.class_names]
    if mapping == list(range(len(head_labels))):
        return splits
    relabel = [
        _Relabelled(part, mapping) if part is not None else None
        for part in (splits.eval, splits.calibration, splits.train)
    ]
    return replace(
        splits,
        eval=relabel[0],
        calibration=relabel[1],
        train=relabel[2],
        num_classes=len(head_labels),
        class_names=tuple(head_labels),
        description=f"{splits.description}; classes matched by name to the head's {len(head_labels)} labels",
    )


def batches(dataset: Dataset, batch_size: int, limit: int | None = None):
    """Yield (inputs, labels as int64 numpy) in dataset order, at most `limit` samples.

    Inputs are float32 numpy NCHW for images, named int64 arrays padded per batch for text.
    """
    if limit is not None and limit < len(dataset):
        dataset = Subset(dataset, range(limit))
    texts = _texts_under(dataset)
    if texts is not None:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=texts.collate)
        return
    for inputs, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0):
        yield inputs.numpy().astype(np.float32, copy=False), labels.numpy()


def fixed_batch(
    dataset: Dataset, batch_size: int, sequence_length: int | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """One batch of exactly `batch_size` real samples (repeated when the set is smaller), for benchmarks.

    Text is padded (or truncated) to exactly `sequence_length` tokens, the shape being measured.
    """
    texts = _texts_under(dataset)
    if texts is not None:
        items = [dataset[index % len(dataset)] for index in range(batch_size)]
        return texts.collate(items, length=sequence_length)[0]
    sample = next(batches(dataset, batch_size))[0]
    return np.ascontiguousarray(np.resize(sample, (batch_size, *sample.shape[1:])))


def tensor_collate(dataset: Dataset):
    """The collate function that makes training batches of `dataset`: text padded per batch into named int64
    tensors; None (PyTorch's default) for images."""
    texts = _texts_under(dataset)
    if texts is None:
        return None

    def collate(items):
        inputs, labels = texts.collate(items)
        return {name: torch.from_numpy(array) for name, array in inputs.items()}, torch.from_numpy(labels)

    return collate


def _texts_under(dataset: Dataset) -> TokenizedTexts | None:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset if isinstance(dataset, TokenizedTexts) else None


def digits_tensors(image_size: int, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 scikit-learn digits as normalized 3x`image_size`x`image_size` tensors, and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # 8x8, values 0..16
    images = torch.nn.functional.interpolate(
        images, size=(image_size, image_size), mode="bilinear", align_corners=False
    )
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
        class_names=tuple(str(digit) for digit in range(10)),
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


def check_image_folder(spec: DataSpec) -> None:
    """An image folder's layout, read without opening an image: each split's class folders, the same in both, each
    holding an image file. DataError names the folder."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = {}
    for split in dict.fromkeys((spec.eval_split, spec.calibration_split)):
        folder = spec.root / split
        try:
            names = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
        except OSError as error:
            raise DataError(f"data.root: {folder}: cannot list it: {error}") from None
        if not names:
            raise DataError(
                f"data.{'eval' if split == spec.eval_split else 'calibration'}_split: {folder} has no class folders "
                f"(expected {folder}/<class>/<image>)"
            )
        for name in names:
            if not any(file.suffix.lower() in IMG_EXTENSIONS for file in (folder / name).iterdir()):
                raise DataError(f"data.root: {folder / name} holds no image file ({', '.join(IMG_EXTENSIONS)})")
        classes[split] = names
    if len(set(map(tuple, classes.values()))) > 1:
        raise DataError(
            f"data.root: the class folders of '{spec.eval_split}' and '{spec.calibration_split}' differ: "
            f"{classes[spec.eval_split]} vs {classes[spec.calibration_split]}"
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
                raise DataError(
                    f"{spec.root / split}: class folder {os.fsencode(name)!r} has a name that is not UTF-8 "
                    f"text; rename it (class names go into reports, which are UTF-8)"
                )
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
        class_names=tuple(eval_set.classes),
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
        class_names=tuple(test.classes),
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


def check_text_data(spec: DataSpec, label_names: list[str] | None = None) -> None:
    """A text file read as a run reads it, without tokenising: columns, split values, labels against the head's
    `label_names` (when it has them); DataError naming the file and field."""
    table = read_text_table(
        spec.path, spec.text_column, spec.text_pair_column, spec.label_column, spec.split_column, spec.delimiter
    )
    if label_names:
        _label_index(table, tuple(label_names))
    if table.splits is not None:
        _split_rows(spec, table)


def _label_index(table, names: tuple[str, ...]) -> dict[str, int]:
    index_of = {name: index for index, name in enumerate(names)}
    unknown = sorted(set(table.labels) - set(index_of))
    if unknown:
        raise DataError(
            f"{table.source}: data.label_column: label(s) {', '.join(map(repr, unknown[:5]))} are not in "
            f"the model's head, whose labels are: {', '.join(names)}"
        )
    return index_of


def _split_rows(spec: DataSpec, table) -> tuple[list[int], list[int]]:
    """The evaluated and the calibration rows by the split column; DataError when a split has none."""
    rows = {}
    for field, split in (("eval_split", spec.eval_split), ("calibration_split", spec.calibration_split)):
        rows[split] = [index for index, name in enumerate(table.splits) if name == split]
        if not rows[split]:
            raise DataError(
                f"{table.source}: data.{field}: no rows with {spec.split_column} {split!r}; "
                f"splits there: {', '.join(sorted(set(table.splits)))}"
            )
    return rows[spec.eval_split], rows[spec.calibration_split]


def _text(spec: DataSpec, seed: int, model: Tokenization | None) -> DataSplits:
    if model is None:
        raise DataError("data.kind text: needs a model with a tokenizer (model.source: huggingface)")
    table = read_text_table(
        spec.path, spec.text_column, spec.text_pair_column, spec.label_column, spec.split_column, spec.delimiter
    )
    limit = model.max_sequence_length
    max_length = spec.max_length or limit
    if max_length > limit:
        raise DataError(
            f"data.max_length: {spec.max_length} is above the model's maximum sequence length {limit} "
            f"(its config's max_position_embeddings)"
        )
    names = model.label_names or tuple(sorted(set(table.labels)))
    index_of = _label_index(table, names)
    if model.new_head_classes is not None and len(names) != model.new_head_classes:
        raise DataError(
            f"{table.source}: data.label_column: {len(names)} labels ({', '.join(names[:8])}) but "
            f"model.num_classes is {model.new_head_classes}: the new head must have one output per label"
        )
    labels = np.array([index_of[label] for label in table.labels], dtype=np.int64)
    if table.splits is not None:
        eval_rows, train_rows = _split_rows(spec, table)
        how = f"{spec.split_column} column: '{spec.eval_split}' evaluated, '{spec.calibration_split}' calibrates"
    else:
        from sklearn.model_selection import train_test_split

        train_rows, eval_rows = (
            sorted(part)
            for part in train_test_split(
                list(range(len(labels))), test_size=spec.test_fraction, stratify=labels, random_state=seed
            )
        )
        how = f"stratified split, {spec.test_fraction:.0%} evaluated (seed {seed})"

    def part(rows: list[int]) -> TokenizedTexts:
        return TokenizedTexts(
            tokenize(table, rows, model.tokenizer, max_length),
            labels[rows],
            model.input_names,
            model.tokenizer.pad_token_id or 0,
            spec.padding,
            max_length,
        )

    eval_set, train_set = part(eval_rows), part(train_rows)
    lengths = token_lengths(eval_set, model.tokenizer, table, eval_rows)
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
    padding = (
        "each batch padded to its longest text"
        if spec.padding == "longest"
        else f"every text padded to {max_length} tokens"
    )
    return DataSplits(
        eval=eval_set,
        calibration=Subset(train_set, order.tolist()),
        train=train_set,
        num_classes=len(names),
        labelled=True,
        description=(
            f"text {table.source}: {len(eval_rows)} evaluated / {len(train_rows)} training texts, "
            f"{len(names)} classes ({how}); tokens per evaluated text: median {lengths['median']}, p95 "
            f"{lengths['p95']}, max {lengths['max']} (max_length {max_length}, "
            f"{lengths['truncated']} of {lengths['checked_for_truncation']} cut); accuracy: {padding}"
        ),
    )

"""Evaluation and calibration splits for every dataset kind."""

from __future__ import annotations

import pytest
import torch

from greencompress.core.errors import DataError
from greencompress.models.data import (
    DIGITS_SPLIT_SEED,
    DataSpec,
    batches,
    digits_split_indices,
    load_data,
)


def data_spec(**fields) -> DataSpec:
    return DataSpec.model_validate(fields)


def test_digits_split_is_stratified_disjoint_and_independent_of_the_recipe_seed():
    spec = data_spec(kind="digits", image_size=32)
    first, second = load_data(spec, seed=0), load_data(spec, seed=123)
    assert len(first.eval) == 360 and len(first.train) == 1437
    assert torch.equal(first.eval.tensors[1], second.eval.tensors[1])  # same test images whatever the seed
    labels = first.eval.tensors[1]
    assert sorted(labels.unique().tolist()) == list(range(10))
    assert labels.bincount().min() >= 35  # stratified: each digit ~36 times in 360
    train_index, test_index = digits_split_indices(torch.zeros(1797, dtype=torch.int64), 0.2)
    assert not set(train_index) & set(test_index)
    assert DIGITS_SPLIT_SEED == 0


def test_digits_are_resized_three_channel_and_normalized():
    splits = load_data(data_spec(kind="digits", image_size=64, mean=[0.5] * 3, std=[0.5] * 3), seed=0)
    image, label = splits.eval[0]
    assert image.shape == (3, 64, 64)
    assert torch.equal(image[0], image[2])
    assert image.min() >= -1.0 and image.max() <= 1.0 and image.min() < -0.9  # blank page maps to -1
    assert splits.labelled and splits.num_classes == 10


def test_calibration_draws_from_training_images_in_a_seeded_order():
    spec = data_spec(kind="digits", image_size=16)
    first, again, other = (load_data(spec, seed) for seed in (0, 0, 1))
    take = lambda splits: torch.stack([splits.calibration[i][0] for i in range(8)])  # noqa: E731
    assert torch.equal(take(first), take(again))
    assert not torch.equal(take(first), take(other))
    eval_images = first.eval.tensors[0]
    for image in take(first):
        assert not (eval_images == image).flatten(1).all(1).any()


def test_eval_samples_takes_a_seeded_subset():
    splits = load_data(data_spec(kind="digits", image_size=16, eval_samples=50), seed=0)
    assert len(splits.eval) == 50
    assert "eval subset of 50" in splits.description


def test_image_folder_splits(image_folder):
    spec = data_spec(kind="imagefolder", root=str(image_folder), image_size=16, mean=[0, 0, 0], std=[1, 1, 1])
    splits = load_data(spec, seed=0)
    assert len(splits.eval) == 12 and len(splits.calibration) == 12 and splits.num_classes == 2
    inputs, labels = next(batches(splits.eval, batch_size=12))
    assert inputs.shape == (12, 3, 16, 16)
    dark = inputs[labels == 0].mean()
    light = inputs[labels == 1].mean()
    assert dark < 0.3 < 0.7 < light  # the pixels really come from the files


def test_image_folder_with_different_classes_per_split(image_folder):
    (image_folder / "val" / "light").rename(image_folder / "val" / "bright")
    with pytest.raises(DataError, match="class folders of 'val' and 'train' differ"):
        load_data(data_spec(kind="imagefolder", root=str(image_folder), image_size=16), seed=0)


def test_image_folder_without_images(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="cannot read as an image folder"):
        load_data(data_spec(kind="imagefolder", root=str(tmp_path), image_size=16), seed=0)


def test_cifar10_missing_without_download_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 not found.*set data.download: true"):
        load_data(data_spec(kind="cifar10", root=str(tmp_path), image_size=32), seed=0)


def test_synthetic_data_has_no_labels():
    splits = load_data(data_spec(kind="synthetic", image_size=16, synthetic_samples=10), seed=0)
    assert not splits.labelled and len(splits.eval) == 10
    assert "no accuracy" in splits.description

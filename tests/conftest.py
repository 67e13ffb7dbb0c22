"""Shared fixtures: small real things (recipes on disk, a CIFAR ResNet, image folders), and the shared assets."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
SHARED = REPO.parent / "shared"
RESNET20_CHECKPOINT = SHARED / "models" / "resnet20-12fca82f.th"
CIFAR10_FOLDER = SHARED / "data" / "cifar10"


@pytest.fixture
def write_recipe(tmp_path):
    """Write a recipe (YAML text, dedented) into tmp_path and return its path."""

    def write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def shared_assets():
    """The real user checkpoint and CIFAR-10 folder beside the checkout; skip cleanly when absent."""
    if not (RESNET20_CHECKPOINT.is_file() and (CIFAR10_FOLDER / "test").is_dir()):
        pytest.skip("../shared (ResNet-20 checkpoint and CIFAR-10 folder) is not beside this checkout")
    return RESNET20_CHECKPOINT, CIFAR10_FOLDER


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """An ImageNet-style folder: train/ and val/, 2 classes, 6 small PNGs each (class 'dark' vs 'light')."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for split in ("train", "val"):
        for label, base in (("dark", 40), ("light", 210)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(6):
                pixels = np.clip(base + rng.normal(0, 10, (20, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root

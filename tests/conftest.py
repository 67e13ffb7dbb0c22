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
    return make_image_folder(tmp_path / "images")


def make_image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for label, base in (("dark", 40), ("light", 210)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(6):
                pixels = np.clip(base + rng.normal(0, 10, (20, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    return root


TINY_RECIPE = """
name: tiny
seed: 0
model:
  source: callable
  architecture: {architecture}
  checkpoint: {checkpoint}
  num_classes: 2
data: {{kind: imagefolder, root: {root}, image_size: 32, batch_size: 6}}
stages:
  - quantize: {{calibration_samples: 12}}
benchmark: {{batch_sizes: [1, 2], window_s: 0.05, min_iterations: 3, windows: 2, max_windows: 2, warmup_iterations: 1,
            threads: 1, runtimes: [onnxruntime], bf16: false}}
energy: {{idle_s: 0}}
"""


@pytest.fixture
def tiny_recipe(image_folder, tmp_path):
    """A real, fast recipe: a 2-class CIFAR ResNet-20 (random weights) on a small image folder."""
    return write_tiny_recipe(tmp_path, image_folder)


def write_tiny_recipe(tmp_path: Path, image_folder: Path) -> Path:
    import torch

    from greencompress.models.sources import resolve_callable

    architecture = f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20"
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pt"
    torch.save(resolve_callable(architecture)(num_classes=2).state_dict(), checkpoint)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE.format(architecture=architecture, checkpoint=checkpoint, root=image_folder))
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny recipe run through the pipeline once per session: (run folder, RunReport). Treat as read-only."""
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.folder import create_run_dir
    from greencompress.pipeline.recipe import load_recipe

    base = tmp_path_factory.mktemp("tiny-run")
    recipe_path = write_tiny_recipe(base, make_image_folder(base / "images"))
    recipe = load_recipe(recipe_path)
    run_dir = create_run_dir(recipe, base / "runs")
    return run_dir, run(recipe, run_dir, recipe_path=recipe_path, shared_cache=base / "stage-cache")

"""`greencompress init`: a recipe drafted from a model and its data validates and runs, or nothing is written."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from greencompress.core.errors import GreencompressError
from greencompress.pipeline.draft import draft_recipe
from greencompress.pipeline.prepare import preflight
from greencompress.pipeline.recipe import load_recipe
from tests.conftest import RECIPES, make_image_folder
from tests.models.test_huggingface import small_rows, tiny_bert, write_csv


def drafted(tmp_path, model, data, **options):
    draft = draft_recipe(model, data, **options)
    path = tmp_path / "drafted.yaml"
    path.write_text(draft.text)
    recipe = load_recipe(path)
    preflight(recipe)
    return recipe, yaml.safe_load(draft.text), draft


def test_a_hugging_face_folder_and_a_csv_give_a_recipe_that_validates(tmp_path):
    classifier, encoder = tiny_bert(tmp_path / "classifier"), tiny_bert(tmp_path / "encoder", head=False)
    csv_file = write_csv(tmp_path / "texts.csv", small_rows())
    recipe, written, draft = drafted(tmp_path, classifier, csv_file)
    assert recipe.model.task == "text-classification" and recipe.data.eval_split == "test"
    assert written["data"]["text_column"] == "text" and recipe.benchmark.sequence_lengths == [32, 64]  # 64 positions
    assert any("task text-classification" in fact for fact in draft.inferred)
    recipe, written, _ = drafted(tmp_path, encoder, csv_file)
    assert recipe.model.task == "sentence-embedding" and [s.technique for s in recipe.stages] == ["quantize"]
    # An encoder asked to classify gets a new head, sized by the labels, and the stage that trains it.
    recipe, _, _ = drafted(tmp_path, encoder, csv_file, task="text-classification")
    assert recipe.model.num_classes == 6 and [s.technique for s in recipe.stages] == ["finetune", "quantize"]


def test_a_checkpoint_and_an_image_folder_give_a_recipe_that_validates(tmp_path):
    images = make_image_folder(tmp_path / "images")
    checkpoint = tmp_path / "resnet20.pt"
    architecture = f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20"
    from greencompress.models.sources import resolve_callable

    torch.save(resolve_callable(architecture)(num_classes=2).state_dict(), checkpoint)
    recipe, written, draft = drafted(tmp_path, checkpoint, images, architecture=architecture)
    assert recipe.model.source == "callable" and recipe.model.num_classes == 2
    assert recipe.data.kind == "imagefolder" and recipe.data.image_size == 20  # the images' own size
    assert any("ImageNet normalisation (check it)" in fact for fact in draft.inferred)
    with pytest.raises(GreencompressError, match="--architecture resnet18"):
        draft_recipe(checkpoint, images)


def test_what_cannot_be_drafted_is_named(tmp_path):
    csv_file = write_csv(tmp_path / "texts.csv", small_rows())
    folder = tiny_bert(tmp_path / "model")
    odd = tmp_path / "odd.csv"
    odd.write_text(csv_file.read_text().replace(",test\n", ",holdout\n"))
    with pytest.raises(GreencompressError, match="split column 'split' has holdout, train"):
        draft_recipe(folder, odd)
    flat = tmp_path / "flat"
    shutil.copytree(make_image_folder(tmp_path / "split") / "train", flat)
    with pytest.raises(GreencompressError, match="expected split folders"):
        draft_recipe(folder, flat)


@pytest.mark.slow
def test_init_writes_a_recipe_that_runs_and_never_overwrites(tmp_path):
    from tests.test_cli import greencompress

    folder = tiny_bert(tmp_path / "model")
    csv_file = write_csv(tmp_path / "texts.csv", small_rows())
    recipe = tmp_path / "mine.yaml"
    made = greencompress("init", "--model", str(folder), "--data", str(csv_file), "--output", str(recipe))
    assert made.returncode == 0 and "wrote" in made.stdout, made.stderr[-2000:]
    again = greencompress("init", "--model", str(folder), "--data", str(csv_file), "--output", str(recipe))
    assert again.returncode == 2 and "exists" in again.stderr
    text = (
        recipe.read_text()
        .replace(
            "batch_sizes: [1, 8]",
            "batch_sizes: [1]\n  windows: 2\n  max_windows: 2\n  window_s: 0.05\n  min_iterations: 2",
        )
        .replace("runtimes: auto", "runtimes: [onnxruntime]")
    )
    recipe.write_text(text + "energy: {idle_s: 0}\n")
    result = greencompress("run", str(recipe), "--output", str(tmp_path / "runs"), "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]

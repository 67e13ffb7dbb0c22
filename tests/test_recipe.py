"""Recipe validation: every error names the file, the dotted field path and what was expected."""

from __future__ import annotations

import textwrap

import pytest

from greencompress.core.errors import RecipeError
from greencompress.pipeline.recipe import load_recipe
from greencompress.search.spec import SearchRecipe
from tests.conftest import RECIPES, REPO
from tests.fake_gpu import pretend_a_gpu

MINIMAL = textwrap.dedent("""
    name: t
    model: {source: builtin, name: resnet18-digits-64}
    data: {kind: digits, image_size: 64}
    stages:
      - quantize: {}
""")


def error_of(path, overrides=()) -> str:
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, list(overrides))
    return str(caught.value)


def test_shipped_recipes_validate(monkeypatch):
    for path in RECIPES.glob("*.yaml"):
        if "cifar10" in path.name and not (RECIPES.parent.parent / "shared").is_dir():
            continue  # points at ../shared, absent outside this workplace
        recipe = (
            load_recipe(path, schema=SearchRecipe)
            if "device: cuda" not in path.read_text()
            else _on_a_gpu(path, monkeypatch)
        )
        assert recipe.stages, path


def _on_a_gpu(path, monkeypatch):
    """A GPU recipe validates on a GPU (faked here where there is none); without one it says what is missing."""
    import torch

    if not torch.cuda.is_available():
        assert "no runtime can run on cuda here" in error_of(path)
        pretend_a_gpu(monkeypatch)
    recipe = load_recipe(path)
    assert "torch-cuda" in recipe.benchmark.runtimes
    return recipe


def test_defaults_are_filled_in(write_recipe):
    recipe = load_recipe(write_recipe(MINIMAL))
    assert recipe.benchmark.batch_sizes == [1, 8]
    assert recipe.stages[0].technique == "quantize"
    assert recipe.stages[0].config.calibration_method == "minmax"
    assert recipe.energy.meter == "auto"


def test_unknown_key_suggests_the_closest_valid_one(write_recipe):
    message = error_of(write_recipe(MINIMAL + "benchmrk: {threads: 1}\n"))
    assert "recipe.yaml" in message
    assert "benchmrk: unknown field; did you mean 'benchmark'?" in message


def test_unknown_nested_key_names_the_dotted_path(write_recipe):
    text = MINIMAL.replace("quantize: {}", "quantize: {calibraton_samples: 8}")
    message = error_of(write_recipe(text))
    assert "stages.0.quantize.calibraton_samples: unknown field; did you mean 'calibration_samples'?" in message


def test_unknown_stage_technique_is_named(write_recipe):
    message = error_of(write_recipe(MINIMAL.replace("quantize: {}", "quantise: {}")))
    assert "stages.0.quantise: unknown field; did you mean 'quantize'?" in message


def test_wrong_type_says_what_was_expected_and_what_was_given(write_recipe):
    message = error_of(write_recipe(MINIMAL + "seed: lots\n"))
    assert "seed: Input should be a valid integer" in message
    assert "'lots'" in message


def test_batch_size_zero_is_rejected(write_recipe):
    message = error_of(write_recipe(MINIMAL + "benchmark: {batch_sizes: [1, 0]}\n"))
    assert "benchmark.batch_sizes: batch size must be >= 1, got 0" in message


def test_typo_in_torchvision_model_name_suggests_the_real_one(write_recipe):
    text = MINIMAL.replace("{source: builtin, name: resnet18-digits-64}", "{source: torchvision, name: resnt18}")
    message = error_of(write_recipe(text))
    assert "model: unknown torchvision classification model 'resnt18'; did you mean 'resnet18'" in message


def test_unknown_builtin_model_is_rejected(write_recipe):
    message = error_of(write_recipe(MINIMAL.replace("resnet18-digits-64", "resnet18-digits-65")))
    assert "unknown builtin model 'resnet18-digits-65'; did you mean 'resnet18-digits-64'" in message


def test_missing_checkpoint_names_the_resolved_path(write_recipe, tmp_path):
    text = MINIMAL.replace(
        "{source: builtin, name: resnet18-digits-64}",
        "{source: checkpoint, name: resnet18, checkpoint: weights/missing.pt}",
    )
    message = error_of(write_recipe(text))
    assert f"model.checkpoint: file or folder not found: {tmp_path / 'weights' / 'missing.pt'}" in message


def test_source_requires_its_fields(write_recipe):
    text = MINIMAL.replace("{source: builtin, name: resnet18-digits-64}", "{source: callable, architecture: 'm:f'}")
    assert "source 'callable' needs field(s): checkpoint" in error_of(write_recipe(text))


def test_relative_paths_resolve_against_the_recipe_folder(write_recipe, image_folder, monkeypatch, tmp_path):
    monkeypatch.chdir("/")
    text = MINIMAL.replace("{kind: digits, image_size: 64}", "{kind: imagefolder, root: images, image_size: 32}")
    recipe = load_recipe(write_recipe(text))
    assert recipe.data.root == tmp_path / "images"


def test_missing_data_folder_fails_at_load(write_recipe, tmp_path):
    text = MINIMAL.replace("{kind: digits, image_size: 64}", "{kind: imagefolder, root: nowhere}")
    assert f"data.root: folder not found: {tmp_path / 'nowhere'}" in error_of(write_recipe(text))


def test_missing_split_folder_fails_at_load(write_recipe, image_folder):
    text = MINIMAL.replace("{kind: digits, image_size: 64}", "{kind: imagefolder, root: images, eval_split: test}")
    assert f"split folder not found: {image_folder / 'test'}" in error_of(write_recipe(text))


def test_overrides_apply_yaml_values_before_validation(write_recipe):
    recipe = load_recipe(
        write_recipe(MINIMAL), ["benchmark.batch_sizes=[4, 1]", "stages.0.quantize.method=dynamic", "seed=7"]
    )
    assert recipe.benchmark.batch_sizes == [1, 4]
    assert recipe.stages[0].config.method == "dynamic"
    assert recipe.seed == 7


def test_bad_overrides_are_reported(write_recipe):
    path = write_recipe(MINIMAL)
    assert "expected key.path=value" in error_of(path, ["benchmark.threads"])
    assert "stages.3: expected a list index below 1" in error_of(path, ["stages.3.quantize.method=static"])
    assert "benchmark.thread: unknown field; did you mean 'threads'?" in error_of(path, ["benchmark.thread=1"])


def test_stage_with_two_techniques_is_rejected(write_recipe):
    message = error_of(write_recipe(MINIMAL.replace("- quantize: {}", "- {}")))
    assert "stages.0: each stage names exactly one technique" in message
    message = error_of(write_recipe(MINIMAL.replace("- quantize: {}", "- {prune: {}, quantize: {}}")))
    assert "stages.0: each stage names exactly one technique; this one names prune and quantize" in message


def test_a_key_beside_the_stage_s_technique_is_named(write_recipe):
    message = error_of(write_recipe(MINIMAL.replace("- quantize: {}", "- quantize: {}\n    zz_unknown_key: 1")))
    assert "stages.0.zz_unknown_key: unknown key beside the technique 'quantize'" in message


def test_unreadable_or_malformed_files(write_recipe, tmp_path):
    assert "cannot read recipe" in error_of(tmp_path / "absent.yaml")
    assert "not valid YAML" in error_of(write_recipe("name: [unclosed\n"))
    assert "expected a mapping of sections" in error_of(write_recipe("- a\n- b\n"))


@pytest.mark.parametrize("recipe_file", sorted(RECIPES.glob("*.yaml")), ids=lambda path: path.name)
def test_every_shipped_recipe_reloads_from_its_resolved_form(recipe_file, tmp_path, monkeypatch):
    """--resume reads recipe.resolved.yaml, where every default is written out: it must validate to the same recipe."""
    import yaml

    from greencompress.pipeline.recipe import recipe_to_dict

    if "shared" in recipe_file.read_text() and not (REPO.parent / "shared").is_dir():
        pytest.skip("needs ../shared beside the checkout")
    if "device: cuda" in recipe_file.read_text():
        pretend_a_gpu(monkeypatch)
    recipe = load_recipe(recipe_file)
    resolved = tmp_path / "recipe.resolved.yaml"
    resolved.write_text(yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))
    assert load_recipe(resolved) == recipe


def test_an_empty_recipe_a_hub_id_and_a_missing_gpu_are_said_in_their_own_words(write_recipe):
    from greencompress.runtimes.device import no_gpu_here

    with pytest.raises(RecipeError, match="the recipe is empty: it needs at least name, model, data and stages"):
        load_recipe(write_recipe(""))
    hub = (
        "name: t\nmodel: {source: huggingface, path: sentence-transformers/all-MiniLM-L6-v2, task: sentence-embedding}"
    )
    with pytest.raises(RecipeError, match=r"looks like a Hugging Face Hub id: greencompress reads local folders only"):
        load_recipe(write_recipe(hub + "\ndata: {kind: text}\nstages: [{quantize: {}}]\n"))
    if no_gpu_here() is not None:  # this machine: the recipe asks for what is not here, and the error says so
        gpu = MINIMAL.replace("stages:", "benchmark: {device: cuda}\nstages:")
        with pytest.raises(RecipeError, match="benchmark.device asks for a GPU, and there is no GPU here"):
            load_recipe(write_recipe(gpu))

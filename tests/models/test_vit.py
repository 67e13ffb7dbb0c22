"""Vision transformers from a Hugging Face folder (task image-classification): a tiny ViT built here from a config
(random weights), fed the test image folder as a CNN would be, and compressed as an encoder (heads, FFN, layers)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from greencompress.core.errors import DataError, ModelLoadError, RecipeError
from greencompress.pipeline.recipe import load_recipe

# The head names its labels in the reverse of the image folder's order ("dark" < "light"): labels go by name.
HEAD_LABELS = ("light", "dark")


def tiny_vit(folder, head: bool = True, processor: bool = True, layers: int = 3):
    """Save a ViT (32x32 images in 8x8 patches, hidden 64, 4 heads, FFN 128) into `folder`."""
    from transformers import ViTConfig, ViTForImageClassification, ViTModel

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=128,
        num_labels=len(HEAD_LABELS),
        id2label=dict(enumerate(HEAD_LABELS)),
        label2id={name: index for index, name in enumerate(HEAD_LABELS)},
    )
    torch.manual_seed(0)
    (ViTForImageClassification if head else ViTModel)(config).save_pretrained(folder)
    if processor:
        (folder / "preprocessor_config.json").write_text(
            json.dumps(
                {
                    "image_processor_type": "ViTImageProcessor",
                    "do_normalize": True,
                    "image_mean": [0.5, 0.5, 0.5],
                    "image_std": [0.5, 0.5, 0.5],
                    "size": {"height": 32, "width": 32},
                }
            )
        )
    return folder


def vit_recipe(write_recipe, folder, images, stages: str = "  - quantize: {method: dynamic}"):
    return write_recipe(f"""
        name: tinyvit
        seed: 0
        model: {{source: huggingface, path: {folder}, task: image-classification}}
        data: {{kind: imagefolder, root: {images}, image_size: 32, batch_size: 6, mean: [0.5, 0.5, 0.5],
                std: [0.5, 0.5, 0.5]}}
        stages:
        {stages}
        benchmark: {{batch_sizes: [1], window_s: 0.05, min_iterations: 3, windows: 2, max_windows: 2,
                     warmup_iterations: 1, threads: 1, runtimes: [onnxruntime], bf16: false}}
        energy: {{idle_s: 0}}
        """)


def test_a_vit_folder_loads_as_an_image_encoder_and_its_labels_are_matched_by_name(
    tmp_path, image_folder, write_recipe
):
    from greencompress.models.sources import load_model

    recipe = load_recipe(vit_recipe(write_recipe, tiny_vit(tmp_path / "vit"), image_folder))
    loaded = load_model(recipe.model)
    assert (
        loaded.inputs.image_shape == (3, 32, 32)
        and loaded.inputs.structure == "encoder"
        and not loaded.inputs.are_tokens
    )
    assert loaded.tokenizer is None and loaded.label_names == HEAD_LABELS
    data = recipe.task.load_data(loaded, recipe.data, recipe.seed)
    # The folder's "dark" class is the head's label 1, "light" its label 0, whatever the folders' order.
    labels = {int(data.eval[index][1]) for index in range(6)}  # the first six images are ImageFolder's "dark"
    assert labels == {HEAD_LABELS.index("dark")} and "matched by name" in data.description
    with torch.no_grad():
        logits = loaded.module(torch.stack([data.eval[index][0] for index in range(4)]))
    assert logits.shape == (4, 2)


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"image_size": 24}, RecipeError, "data.image_size: the model in .* takes 32x32 images"),
        ({"mean": [0.485, 0.456, 0.406]}, RecipeError, r"data.mean: .* normalises images with mean \[0.5, 0.5, 0.5\]"),
    ],
)
def test_image_data_prepared_otherwise_than_the_processor_says_is_refused(
    tmp_path, image_folder, write_recipe, change, error, message
):
    from greencompress.models.sources import load_model

    recipe = load_recipe(vit_recipe(write_recipe, tiny_vit(tmp_path / "vit"), image_folder))
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update=change)})
    with pytest.raises(error, match=message):
        recipe.task.load_data(load_model(recipe.model), recipe.data, recipe.seed)


def test_bad_vit_inputs_name_the_field(tmp_path, image_folder, write_recipe):
    from greencompress.models.sources import load_model

    # A class folder the head has no label for.
    (image_folder / "val" / "grey").mkdir()
    (image_folder / "train" / "grey").mkdir()
    for split in ("val", "train"):
        source = next((image_folder / split / "dark").iterdir())
        (image_folder / split / "grey" / source.name).write_bytes(source.read_bytes())
    recipe = load_recipe(vit_recipe(write_recipe, tiny_vit(tmp_path / "vit"), image_folder))
    with pytest.raises(
        DataError, match="class\\(es\\) 'grey' .* not labels of the model's head, whose labels are: light, dark"
    ):
        recipe.task.load_data(load_model(recipe.model), recipe.data, recipe.seed)
    # An encoder without a head, and no num_classes for a new one.
    bare = load_recipe(vit_recipe(write_recipe, tiny_vit(tmp_path / "bare", head=False), image_folder))
    with pytest.raises(ModelLoadError, match="no image-classification head"):
        load_model(bare.model)
    # Text data for an image model.
    text_path = vit_recipe(write_recipe, tmp_path / "vit", image_folder)
    text_path.write_text(text_path.read_text().replace("kind: imagefolder", "kind: text"))
    with pytest.raises(RecipeError, match="image-classification models are fed data of kind digits"):
        load_recipe(text_path)


@pytest.mark.slow
def test_a_vit_loses_layers_heads_and_ffn_neurons_trains_quantizes_and_reloads_with_plain_transformers(
    tmp_path, image_folder, write_recipe
):
    import onnxruntime
    from transformers import AutoModelForImageClassification

    from greencompress.models.sources import load_model
    from greencompress.pipeline.execute import run
    from greencompress.pipeline.folder import create_run_dir

    stages = """  - depth: {remove: 1}
          - prune: {heads: 0.5, ffn: 0.5, importance: activation}
          - finetune: {epochs: 3, batch_size: 4, distillation: {}}
          - quantize: {method: static, calibration_samples: 12}"""
    path = vit_recipe(write_recipe, tiny_vit(tmp_path / "vit"), image_folder, stages)
    recipe = load_recipe(path)
    run_dir = create_run_dir(recipe, tmp_path / "runs")
    report = run(recipe, run_dir, recipe_path=path, shared_cache=tmp_path / "cache")
    saved = json.loads((run_dir / "report.json").read_text())
    depth, prune = saved["stages"][0]["metrics"], saved["stages"][1]["metrics"]
    assert (depth["what"], depth["before"], depth["after"]) == ("encoder layers", 3, 2)
    assert (prune["heads_before"], prune["heads_after"], prune["ffn_before"], prune["ffn_after"]) == (4, 2, 128, 64)
    # Smaller products for real in the exported file, in 2 layers: 2 heads x 16 wide attention, an FFN of 64.
    graph = onnx.load(str(run_dir / "model_compressed_fp32.onnx")).graph
    biases = {init.name: tuple(init.dims) for init in graph.initializer if init.name.endswith(".bias")}
    assert {shape for name, shape in biases.items() if "q_proj" in name or "v_proj" in name} == {(32,)}
    assert [shape for name, shape in biases.items() if "mlp.fc1" in name] == [(64,), (64,)]
    # Static int8 of an encoder: its matrix products int8, LayerNorm and Softmax in float.
    quantize = saved["stages"][-1]["settings"]
    assert {"LayerNormalization", "Softmax"} <= set(quantize["float_operators"])
    top1 = {item["name"]: item["accuracy"]["top1"] for item in saved["artifacts"]}
    assert top1["onnxruntime-shallower-pruned-finetuned-int8"] >= 0.75  # dark vs light, after 3 epochs
    # The compressed model as a Hugging Face folder: plain transformers reloads it (heads, FFN and layers stated by
    # its config) and computes what the exported file computes.
    assert (run_dir / "model_compressed_hf" / "preprocessor_config.json").is_file()
    reloaded = AutoModelForImageClassification.from_pretrained(run_dir / "model_compressed_hf").eval()
    assert reloaded.config.num_attention_heads == 2 and reloaded.config.num_hidden_layers == 2
    images = torch.stack(
        [item[0] for item in recipe.task.load_data(load_model(recipe.model), recipe.data, recipe.seed).eval]
    )
    session = onnxruntime.InferenceSession(str(run_dir / "model_compressed_fp32.onnx"))
    exported = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    with torch.no_grad():
        assert np.abs(reloaded(pixel_values=images).logits.numpy() - exported).max() < 1e-4
    assert report.artifacts


def test_the_bring_your_own_vit_template_names_what_to_edit():
    from tests.conftest import RECIPES

    with pytest.raises(RecipeError) as caught:
        load_recipe(RECIPES / "templates" / "vit_own.yaml")
    message = str(caught.value)
    assert "model.path: folder or zip not found: /path/to/your/vit-folder" in message
    assert "/path/to/your/images" in message

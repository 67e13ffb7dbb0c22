"""A GGUF file (llama.cpp's format) as a Hugging Face folder: dequantized once, saved, and cached by the file's hash.

transformers reads a GGUF file (`from_pretrained(folder, gguf_file=name)`, with the `gguf` package) into an
FP32 model, but will not `save_pretrained` it while it carries the file's quantization config. The model is
rebuilt from its config without that, given the dequantized weights and saved with its tokenizer (and chat
template) as a plain folder, which every loader here then reads as any other. The weights passed through the
file's quantization once (Q4_1 blocks, say): `gguf.json` in the folder records which, and reports carry it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from pathlib import Path

from greencompress.core.cache import cache_dir
from greencompress.core.errors import ModelLoadError

log = logging.getLogger(__name__)

PROVENANCE_FILE = "gguf.json"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_facts(path: Path) -> dict:
    """What the file says of itself without loading its tensors: architecture, name, tensor types and counts."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ModelLoadError(f"model.path: {path} is a GGUF file; reading it needs `pip install gguf`") from None
    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as error:
        raise ModelLoadError(f"model.path: {path}: not a readable GGUF file: {error}") from None

    def text(key: str) -> str | None:
        field = reader.fields.get(key)
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace") if field is not None else None

    types: dict[str, int] = {}
    for tensor in reader.tensors:
        types[tensor.tensor_type.name] = types.get(tensor.tensor_type.name, 0) + 1
    return {
        "architecture": text("general.architecture"),
        "name": text("general.name"),
        "tensor_types": types,
        "parameters": int(sum(int(tensor.n_elements) for tensor in reader.tensors)),
        "has_chat_template": "tokenizer.chat_template" in reader.fields,
    }


def folder_from_gguf(path: Path) -> Path:
    """The Hugging Face folder of a GGUF file: made once (a minute for a 135M-parameter model on 2 cores), then read
    from greencompress's cache, keyed by the file's SHA-256."""
    digest = file_digest(path)
    target = cache_dir() / "gguf" / digest[:16]
    if (target / PROVENANCE_FILE).is_file():
        return target
    facts = gguf_facts(path)
    log.info("model: dequantizing %s (%s, %s) into a folder, once", path.name, facts["architecture"], facts["name"])
    scratch = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    _convert(path, scratch)
    (scratch / PROVENANCE_FILE).write_text(
        json.dumps({"file": path.name, "sha256": digest, **facts}, indent=2) + "\n", encoding="utf-8"
    )
    shutil.rmtree(target, ignore_errors=True)
    scratch.rename(target)
    return target


def _convert(path: Path, folder: Path) -> None:
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        with _quiet():
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
    except (ValueError, OSError, KeyError, RuntimeError) as error:  # an architecture transformers cannot dequantize
        raise ModelLoadError(
            f"model.path: {path}: transformers {transformers.__version__} cannot read this GGUF file: {error}"
        ) from None
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"})
    model = AutoModelForCausalLM.from_config(config, dtype="float32")
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@contextlib.contextmanager
def _quiet():
    """transformers logs every tensor it dequantizes; keep the terminal for greencompress's own lines."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)

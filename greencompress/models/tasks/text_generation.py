"""text-generation: a causal language model (a Hugging Face folder, or a GGUF file), judged by perplexity and
measured per generated token.

Its data is text (models/corpus.py: a file, a folder, JSONL, or the shipped Shakespeare); its budget is the
perplexity increase over the original model on evaluation windows no calibration saw; its workload is prompts
of `benchmark.sequence_lengths` tokens each followed by generated tokens, prefill and decode measured apart
(pipeline/generate.py, measure/generation.py). Its techniques are weight-only (compress/weight_only.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from greencompress.core.errors import ModelLoadError
from greencompress.models.tasks.base import Structure, Task, Workload

if TYPE_CHECKING:
    from greencompress.models.data import DataSpec
    from greencompress.models.sources import LoadedModel, ModelSpec


LOADING = """from transformers import AutoModelForCausalLM, AutoTokenizer

folder = "FOLDER"
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
ids = tokenizer("Your prompt here.", return_tensors="pt")
print(tokenizer.decode(model.generate(**ids, max_new_tokens=32, do_sample=False)[0]))
# or, the built ONNX Runtime GenAI folder: onnxruntime_genai.Model(f"{folder}/genai")"""


PERPLEXITY_WINDOW = 256  # tokens per perplexity window; evaluation text must hold more than one


class TextGeneration(Task):
    name = "text-generation"
    aliases = ("causal-lm",)
    sources = ("huggingface",)
    data_kinds = ("text",)
    takes_tokens = True
    primary_metric = "perplexity"
    workload_kind = "generate"

    def structure(self, model: ModelSpec) -> Structure:
        return "decoder"

    def preflight(self, model: ModelSpec, data: DataSpec, workload: Workload) -> None:
        """The folder is a causal LM whose context holds the longest prompt with its new tokens, and a perplexity
        window; the text can be read and holds more than one window of evaluation tokens, and some calibration
        text."""
        from greencompress.models.corpus import load_corpus
        from greencompress.models.huggingface import inspect_folder, model_folder

        folder = model_folder(model.path, model.package)
        config = inspect_folder(folder, self.name, model.trust_remote_code)
        architectures = [str(name) for name in config.get("architectures") or ()]
        if not any(name.endswith("ForCausalLM") or name.endswith("LMHeadModel") for name in architectures):
            raise ModelLoadError(
                f"model.task: text-generation needs a causal language model; {folder / 'config.json'} declares "
                f"{architectures or 'no architecture'}"
            )
        context = config.get("max_position_embeddings") or config.get("n_positions")
        if isinstance(context, int):
            where = f"max_position_embeddings in {folder / 'config.json'}"
            for length in workload.sequence_lengths:
                if length + workload.new_tokens > context:
                    raise ModelLoadError(
                        f"benchmark.sequence_lengths: a prompt of {length} tokens and benchmark.new_tokens "
                        f"{workload.new_tokens} need {length + workload.new_tokens} positions; the model's context "
                        f"is {context} ({where})"
                    )
            if PERPLEXITY_WINDOW > context:
                raise ModelLoadError(
                    f"model.path: perplexity is measured over windows of {PERPLEXITY_WINDOW} tokens; the model's "
                    f"context is {context} ({where})"
                )
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(
            folder, local_files_only=True, trust_remote_code=model.trust_remote_code
        )
        # Refuses empty text, text shorter than one window, and a prompt set the model cannot take.
        load_corpus(data, tokenizer, PERPLEXITY_WINDOW, context if isinstance(context, int) else None)

    def load(self, spec: ModelSpec, progress=None) -> LoadedModel:
        from greencompress.models.huggingface import inspect_folder, model_folder
        from greencompress.models.sources import LoadedModel

        folder = model_folder(spec.path, spec.package)
        inspect_folder(folder, self.name, spec.trust_remote_code)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        options = {"local_files_only": True, "trust_remote_code": spec.trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **options)
            module = AutoModelForCausalLM.from_pretrained(folder, dtype="float32", **options).eval()
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(f"model.path: {folder}: cannot load it as a causal LM: {error}") from None
        origin = f"{spec.path} in the installed package {spec.package}" if spec.package else str(spec.path)
        provenance = {
            "source": "huggingface",
            "task": self.name,
            "folder": str(folder),
            "origin": origin,
            "architecture": type(module).__name__,
            "parameters": sum(p.numel() for p in module.parameters()),
            "description": f"{type(module).__name__} from {origin}",
        }
        gguf = folder / "gguf.json"
        if gguf.is_file():  # a GGUF file's weights were rounded once already: every report says so
            facts = json.loads(gguf.read_text(encoding="utf-8"))
            provenance["gguf"] = facts
            provenance["description"] += f" (dequantized to FP32 from the GGUF file {facts.get('file')})"
        return LoadedModel(module, provenance, tokenizer)

    def loading_snippet(self, folder: str) -> str:
        return LOADING.replace("FOLDER", folder)

    def check_inputs(self, inputs, sequence_lengths: list[int]) -> None:
        """Prompt lengths are checked against the context in `preflight`."""


def folder_of(loaded: LoadedModel) -> Path:
    return Path(loaded.provenance["folder"])

"""text-classification: a Hugging Face encoder with a sequence-classification head, fed token tensors.

Top-1 on labelled text is the primary metric. `TokenTask` is what every task over a text encoder shares:
text data tokenised by the model's tokenizer, benchmarks per sequence length, lengths checked against the
model's positions; sentence_embedding.py builds on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from greencompress.core.errors import RecipeError
from greencompress.models.tasks.base import Structure, Task, Workload

if TYPE_CHECKING:
    from greencompress.models.data import DataSpec, DataSplits
    from greencompress.models.inputs import ModelInputs
    from greencompress.models.sources import LoadedModel, ModelSpec
    from greencompress.models.text import Tokenization


class TokenTask(Task):
    """A task over a Hugging Face text encoder: token inputs of any length, text data."""

    sources = ("huggingface",)
    data_kinds = ("text",)
    takes_tokens = True

    def structure(self, model: ModelSpec) -> Structure:
        return "encoder"

    def preflight(self, model: ModelSpec, data: DataSpec, workload: Workload) -> None:
        """The folder, its positions against the lengths asked for, and the text file's columns, splits and labels."""
        from greencompress.models.data import check_text_data
        from greencompress.models.sources import check_model_files

        config = check_model_files(model)
        positions = config.get("max_position_embeddings")
        if isinstance(positions, int):
            for field, length in (
                ("data.max_length", data.max_length),
                *(("benchmark.sequence_lengths", length) for length in workload.sequence_lengths),
            ):
                if length is not None and length > positions:
                    raise RecipeError(
                        f"{field}: {length} is above the model's maximum sequence length {positions} "
                        f"(its config's max_position_embeddings)"
                    )
        labels = config.get("id2label") if model.num_classes is None and self.name == "text-classification" else None
        names = [str(labels[key]) for key in sorted(labels, key=int)] if isinstance(labels, dict) else None
        check_text_data(data, names)

    def inputs(self, loaded: LoadedModel, data: DataSpec) -> ModelInputs:
        return loaded.inputs

    def load_data(self, loaded: LoadedModel, data: DataSpec, seed: int) -> DataSplits:
        """Text tokenised by the model's tokenizer and labelled in its head's label order (when it has one)."""
        from greencompress.models.data import load_data

        return load_data(data, seed, tokenization(loaded))

    def check_inputs(self, inputs: ModelInputs, sequence_lengths: list[int]) -> None:
        too_long = [length for length in sequence_lengths if length > inputs.max_sequence_length]
        if too_long:
            raise RecipeError(
                f"benchmark.sequence_lengths: {too_long[0]} is above the model's maximum sequence "
                f"length {inputs.max_sequence_length} (its config's max_position_embeddings)"
            )

    def serving_files(self, loaded, data, splits, module, folder) -> list[str]:
        """The config and tokenizer (and an embedder's sentence-transformers modules): a Hugging Face folder."""
        from greencompress.models.huggingface import write_serving_files

        length = data.max_length or loaded.inputs.max_sequence_length
        return write_serving_files(module, loaded.tokenizer, folder, loaded.hugging_face_folder, length)

    def workload_note(self, sequence_lengths: list[int]) -> str | None:
        lengths = ", ".join(map(str, sequence_lengths))
        return (
            f"Transformer benchmarks (shape: batch x sequence): every input is a real evaluated text padded "
            f"(or cut) to the sequence length ({lengths} tokens), attention_mask 0 on padding. Real text "
            f"lengths are in the data line."
        )


def tokenization(loaded: LoadedModel) -> Tokenization:
    """What text data takes from a text encoder: its tokenizer, input names, length limit and head labels."""
    from greencompress.models.text import Tokenization

    inputs = loaded.inputs
    return Tokenization(
        loaded.tokenizer,
        inputs.names,
        inputs.max_sequence_length,
        loaded.label_names,
        loaded.provenance.get("new_head"),
    )


class TextClassification(TokenTask):
    name = "text-classification"
    aliases = ("sentiment-analysis",)  # Hugging Face's pipeline alias

    def needs_new_head(self, config: dict) -> bool:
        return not any(str(name).endswith("ForSequenceClassification") for name in config.get("architectures") or ())

    def loading_snippet(self, folder: str) -> str:
        return "\n".join(
            [
                "import onnxruntime",
                "from transformers import AutoConfig, AutoTokenizer",
                "",
                f'folder = "{folder}"',
                "tokenizer = AutoTokenizer.from_pretrained(folder)",
                "labels = AutoConfig.from_pretrained(folder).id2label",
                'session = onnxruntime.InferenceSession(f"{folder}/onnx/model.onnx")',
                'tokens = tokenizer(["Your text here."], return_tensors="np")',
                "feed = {i.name: tokens[i.name] for i in session.get_inputs()}",
                'logits = session.run(["logits"], feed)[0]',
                "print(labels[int(logits.argmax())])",
                '# or, with Optimum: ORTModelForSequenceClassification.from_pretrained(folder, subfolder="onnx")',
            ]
        )

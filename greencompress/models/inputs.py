"""What a model takes: one image tensor, or named token tensors of any length. Tracing, counting and export read it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

TOKEN_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class FusionHint:
    """What ONNX Runtime's transformer optimizer needs to know: its name for the architecture, heads and width.

    Given rather than detected: its detection failed on MiniLM's graph and then fused no attention at all.
    """

    model_type: str  # "bert", ...
    num_heads: int
    hidden_size: int


@dataclass(frozen=True)
class ModelInputs:
    """The inputs of a model, in the order its forward takes them.

    An image model takes one `input` of `image_shape` (channels first). A transformer takes token
    tensors (`input_ids`, `attention_mask`, and `token_type_ids` where its config has token types),
    each batch x sequence int64; `max_sequence_length` is its position-embedding limit.
    `fusion` says how ONNX Runtime's transformer optimizer can fuse it, None when it has no fusions for it.
    `structure` is what the structural techniques remove, as the model's task states it (models/tasks/):
    a CNN's channels and residual blocks, or a transformer encoder's heads, FFN neurons and layers.
    """

    names: tuple[str, ...]
    image_shape: tuple[int, ...] | None = None
    max_sequence_length: int = 0
    fusion: FusionHint | None = None
    structure: Literal["channels", "encoder"] = "channels"

    @classmethod
    def image(cls, shape: tuple[int, ...], structure: Literal["channels", "encoder"] = "channels") -> ModelInputs:
        return cls(("input",), tuple(shape), structure=structure)

    @classmethod
    def tokens(cls, names: tuple[str, ...], max_sequence_length: int, fusion: FusionHint | None) -> ModelInputs:
        return cls(tuple(names), None, max_sequence_length, fusion, structure="encoder")

    @property
    def are_tokens(self) -> bool:
        """Token tensors of any length (a dynamic sequence axis), rather than one fixed-size image."""
        return self.image_shape is None

    def example(self, batch_size: int = 1, sequence_length: int = 16) -> tuple[torch.Tensor, ...]:
        """Tensors of the right shapes and types to trace the model with (values do not matter to tracing)."""
        if not self.are_tokens:
            return (torch.zeros(batch_size, *self.image_shape),)
        shape = (batch_size, sequence_length)
        # Token 101 is BERT's [CLS], but any id below the vocabulary size would do.
        made = {
            "input_ids": torch.full(shape, 101, dtype=torch.int64),
            "attention_mask": torch.ones(shape, dtype=torch.int64),
            "token_type_ids": torch.zeros(shape, dtype=torch.int64),
        }
        return tuple(made[name] for name in self.names)

    def describe(self) -> str:
        if not self.are_tokens:
            return "x".join(str(size) for size in self.image_shape)
        return f"tokens ({', '.join(self.names)}), up to {self.max_sequence_length} per sequence"

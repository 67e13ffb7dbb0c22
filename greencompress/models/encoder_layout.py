"""Where the parts of a Hugging Face encoder live: its layer list, and in each layer the attention's
projections and the FFN's two products (BERT-like, ViT and DistilBERT layouts).

Compression (heads, FFN neurons and layers removed) and export (ONNX Runtime's fusion needs the
head count) both read it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from greencompress.core.errors import GreencompressError

# Where the parts of one encoder layer live, per family: BERT (MiniLM, RoBERTa, ELECTRA, XLM-R), ViT before
# transformers 5.x rewrote it, DistilBERT, and the q_proj/o_proj/mlp layout transformers 5 gives ViT.
# The first path that exists wins.
LAYER_PARTS = {
    "attention": ("attention.self", "attention.attention", "attention"),
    "query": ("attention.self.query", "attention.attention.query", "attention.q_lin", "attention.q_proj"),
    "key": ("attention.self.key", "attention.attention.key", "attention.k_lin", "attention.k_proj"),
    "value": ("attention.self.value", "attention.attention.value", "attention.v_lin", "attention.v_proj"),
    "attention_output": ("attention.output.dense", "attention.out_lin", "attention.o_proj"),
    "ffn_in": ("intermediate.dense", "ffn.lin1", "mlp.fc1"),
    "ffn_out": ("output.dense", "ffn.lin2", "mlp.fc2"),
}
_LAYER_LISTS = ("encoder.layer", "transformer.layer", "vit.layers")
_HEAD_SIZE = ("attention_head_size", "head_dim")  # the attribute of the attention module that holds one head's width


@dataclass(frozen=True)
class EncoderLayer:
    """The modules of one encoder layer that head and FFN removal change."""

    attention: nn.Module
    query: nn.Linear
    key: nn.Linear
    value: nn.Linear
    attention_output: nn.Linear
    ffn_in: nn.Linear
    ffn_out: nn.Linear

    @property
    def head_size(self) -> int:
        return int(next(getattr(self.attention, name) for name in _HEAD_SIZE if hasattr(self.attention, name)))

    @property
    def heads(self) -> int:
        return self.query.out_features // self.head_size

    @property
    def ffn_width(self) -> int:
        return self.ffn_in.out_features


def find_module(module: nn.Module, dotted: str) -> nn.Module | None:
    for name in dotted.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


def layer_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(owner, attribute, the ModuleList of encoder layers) of a Hugging Face encoder inside `model`."""
    for name, module in model.named_modules():
        for path in _LAYER_LISTS:
            owner_path, attribute = path.rsplit(".", 1)
            if (name == owner_path or name.endswith("." + owner_path)) and isinstance(
                getattr(module, attribute, None), nn.ModuleList
            ):
                return module, attribute, getattr(module, attribute)
    raise GreencompressError(
        f"no encoder layers found in {type(model).__name__} (looked for "
        f"{' or '.join(_LAYER_LISTS)}): heads, FFN and layer removal support BERT-like, "
        f"DistilBERT and ViT encoders"
    )


def encoder_layers(model: nn.Module) -> list[EncoderLayer]:
    """The parts of every encoder layer of `model`, in order."""
    found = []
    for index, layer in enumerate(layer_list(model)[2]):
        parts = {
            part: next((m for m in (find_module(layer, path) for path in paths) if m is not None), None)
            for part, paths in LAYER_PARTS.items()
        }
        missing = [part for part, module in parts.items() if module is None]
        if missing or not any(hasattr(parts["attention"], name) for name in _HEAD_SIZE):
            raise GreencompressError(
                f"encoder layer {index} ({type(layer).__name__}): no {', '.join(missing) or 'head size'}"
                f": this architecture's layout is not known to greencompress's head/FFN removal"
            )
        found.append(EncoderLayer(**parts))
    return found


def attention_shape(model: nn.Module) -> tuple[int, int] | None:
    """(heads, heads x head size) shared by every layer; None when layers differ (ONNX Runtime's fusion needs one)."""
    shapes = {(parts.heads, parts.heads * parts.head_size) for parts in encoder_layers(model)}
    return next(iter(shapes)) if len(shapes) == 1 else None

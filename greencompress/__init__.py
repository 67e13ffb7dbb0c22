"""greencompress: compress a pretrained PyTorch model from a YAML recipe, and prove the saving."""

from greencompress.core import __version__

__all__ = ["energy", "__version__"]


def __getattr__(name: str):
    # `greencompress.energy.measure()` after a bare `import greencompress`, without loading pydantic or torch
    # for every `import greencompress.<anything>`.
    if name == "energy":
        import importlib

        return importlib.import_module("greencompress.energy")
    raise AttributeError(f"module 'greencompress' has no attribute {name!r}")

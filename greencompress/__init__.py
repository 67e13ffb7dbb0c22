"""greencompress: compress a pretrained PyTorch model from a YAML recipe, and prove the saving."""

__version__ = "0.1.0"

from greencompress import energy  # noqa: E402  (`greencompress.energy.measure()` after `import greencompress`)

__all__ = ["energy", "__version__"]

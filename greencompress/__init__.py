"""greencompress: compress a pretrained PyTorch model from a YAML recipe, and prove the saving."""

__version__ = "0.1.0"

"""Errors a user can act on. The CLI prints them without a traceback and exits with `exit_code`."""

from __future__ import annotations


class GreencompressError(Exception):
    """Base class: something the user can fix (bad recipe, missing file, unreadable data)."""

    exit_code = 2


class RecipeError(GreencompressError):
    """A recipe that does not validate: names the file, the dotted field path and what was expected."""


class ModelLoadError(GreencompressError):
    """A model or checkpoint that cannot be built or loaded safely."""


class DataError(GreencompressError):
    """A dataset that cannot be found or read."""


class ParityError(GreencompressError):
    """The exported ONNX model does not compute what the PyTorch model computes."""

    exit_code = 4

"""Reading a checkpoint file the user gives: tensors only, unless the user trusts the file (unpickling runs code)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from greencompress.core.errors import ModelLoadError


def load_state_dict(path: Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from `state_dict`/`model` and stripped of `module.` prefixes.

    The file is untrusted: it is read with `weights_only=True`. A file that needs arbitrary
    unpickling is refused unless `trust` is set, because unpickling can run code stored in it.
    """
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        needed_global = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if needed_global is None:  # not a pickle the unpickler understands at all
            raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint: {_last_line(error)}") from None
        if not trust:
            raise ModelLoadError(
                f"{path}: refused: the checkpoint holds a Python object ({needed_global.group(1)}), not only tensors "
                f"and plain containers. Loading it would unpickle arbitrary objects, which can run code stored in "
                f"the file.\nIf you trust where the file comes from, set 'model.trust_checkpoint: true' in the "
                f"recipe; better, re-save it as a plain state_dict: torch.save(model.state_dict(), path)"
            ) from None
        content = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint: {error}") from None
    if isinstance(content, nn.Module):
        content = content.state_dict()
    for wrapper_key in ("state_dict", "model", "model_state_dict"):
        if isinstance(content, dict) and isinstance(content.get(wrapper_key), (dict, nn.Module)):
            inner = content[wrapper_key]
            content = inner.state_dict() if isinstance(inner, nn.Module) else inner
            break
    if not isinstance(content, dict) or not all(isinstance(value, torch.Tensor) for value in content.values()):
        raise ModelLoadError(
            f"{path}: expected a state_dict (names -> tensors), or one under 'state_dict' or 'model'; "
            f"found {type(content).__name__} with keys {few(list(content)) if isinstance(content, dict) else '-'}"
        )
    return {_strip_wrappers(name): tensor for name, tensor in content.items()}


def _strip_wrappers(name: str) -> str:
    # DataParallel/DistributedDataParallel save 'module.'; torch.compile saves '_orig_mod.'.
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (
        lines[-2]
        if len(lines) > 1 and lines[-1].startswith("Check the documentation")
        else (lines[-1] if lines else "")
    )


def few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")

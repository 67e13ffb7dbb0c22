"""Build or load the pretrained model a ModelSpec describes, with a record of where it came from."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import nn

from greencompress.core.config import Section, resolve_existing, resolve_path
from greencompress.core.errors import ModelLoadError
from greencompress.core.files import file_sha256
from greencompress.core.registry import unknown_choice


class ModelSpec(Section):
    """Where the pretrained model comes from.

    `builtin`: a model greencompress can build offline (trained on first use, then cached);
    `torchvision`: a torchvision classifier by name, with a weights enum or none;
    `checkpoint`: a torchvision architecture by name, with weights from a local checkpoint file;
    `callable`: the user's own architecture, `package.module:function` (or `file.py:function`,
    relative to the recipe), plus a local checkpoint.
    """

    source: Literal["builtin", "torchvision", "checkpoint", "callable"]
    name: str | None = None
    weights: str | None = None
    num_classes: int | None = Field(default=None, ge=1)
    architecture: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Path | None = None
    trust_checkpoint: bool = False

    _check_checkpoint = field_validator("checkpoint")(resolve_existing)

    @field_validator("architecture")
    @classmethod
    def _architecture_form(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"[^:\s]+:[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"expected 'package.module:function' or 'file.py:function', got {value!r}")
        module, function = value.split(":")
        if module.endswith(".py"):  # a file path: resolve it now so a typo fails before any work
            file = resolve_path(Path(module), info)
            if not file.is_file():
                raise ValueError(f"file not found: {file}")
            return f"{file}:{function}"
        return value

    @model_validator(mode="after")
    def _fields_for_source(self) -> ModelSpec:
        needed = {
            "builtin": ("name",),
            "torchvision": ("name",),
            "checkpoint": ("name", "checkpoint"),
            "callable": ("architecture", "checkpoint"),
        }[self.source]
        missing = [field for field in needed if getattr(self, field) is None]
        if missing:
            raise ValueError(f"source '{self.source}' needs field(s): {', '.join(missing)}")
        if self.source in ("torchvision", "checkpoint"):
            _check_torchvision_name(self.name)
        if self.source == "builtin":
            from greencompress.models.zoo import BUILTIN_MODELS

            if self.name not in BUILTIN_MODELS:
                raise ValueError(unknown_choice("builtin model", self.name, sorted(BUILTIN_MODELS)))
        if self.weights is not None and self.source != "torchvision":
            raise ValueError("'weights' applies to source 'torchvision' only; use 'checkpoint' for a file")
        return self


def _check_torchvision_name(name: str) -> None:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(unknown_choice("torchvision classification model", name, known))


@dataclass(frozen=True)
class LoadedModel:
    """A model in eval mode and its provenance (source, file, sha256, how it was made)."""

    module: nn.Module
    provenance: dict


def load_model(spec: ModelSpec, progress=None) -> LoadedModel:
    """Build the model of a ModelSpec in eval mode; raises ModelLoadError with what to do when it cannot."""
    module, provenance = _SOURCES[spec.source](spec, progress)
    return LoadedModel(module=module.eval(), provenance=provenance)


def _from_builtin(spec: ModelSpec, progress) -> tuple[nn.Module, dict]:
    from greencompress.models.zoo import load_builtin

    return load_builtin(spec.name, progress)


def _from_torchvision(spec: ModelSpec, progress) -> tuple[nn.Module, dict]:
    import torchvision

    kwargs = dict(spec.kwargs)
    if spec.num_classes is not None:
        kwargs["num_classes"] = spec.num_classes
    if spec.weights is None:
        model = torchvision.models.get_model(spec.name, weights=None, **kwargs)
        return model, {"source": "torchvision", "name": spec.name, "weights": None,
                       "description": f"torchvision {spec.name} with random weights (no pretrained weights asked for)"}
    weights = _weights_enum(spec.name, spec.weights)
    _require_cached_or_downloadable(weights)
    try:
        model = torchvision.models.get_model(spec.name, weights=weights, **kwargs)
    except ValueError as error:  # e.g. num_classes that the weights do not have
        raise ModelLoadError(f"model: torchvision {spec.name} with {weights}: {error}") from None
    return model, {"source": "torchvision", "name": spec.name, "weights": str(weights), "url": weights.url,
                   "description": f"torchvision {spec.name} with pretrained weights {weights}"}


def _weights_enum(name: str, weights: str):
    import torchvision

    enum = torchvision.models.get_model_weights(name)
    if weights == "DEFAULT":
        return enum.DEFAULT
    try:
        return enum[weights]
    except KeyError:
        known = ", ".join(["DEFAULT", *enum.__members__])
        raise ModelLoadError(f"model.weights: {name} has no weights {weights!r}; expected one of: {known}") from None


def _require_cached_or_downloadable(weights) -> None:
    """Fetch the weights file into the torch hub cache, or say exactly which file to put where."""
    from torch.hub import get_dir, load_state_dict_from_url

    file_name = Path(weights.url).name
    target = Path(get_dir()) / "checkpoints" / file_name
    if target.exists():
        return
    try:
        load_state_dict_from_url(weights.url, map_location="cpu", progress=False, check_hash=True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad hash is a RuntimeError
        raise ModelLoadError(
            f"model.weights: {weights} is not in the local torch hub cache and could not be downloaded "
            f"({error}).\nPut the file '{file_name}' (from {weights.url}) at:\n  {target}\n"
            f"(the folder follows $TORCH_HOME; default ~/.cache/torch/hub/checkpoints)"
        ) from None


def _from_checkpoint(spec: ModelSpec, progress) -> tuple[nn.Module, dict]:
    import torchvision

    kwargs = dict(spec.kwargs)
    if spec.num_classes is not None:
        kwargs["num_classes"] = spec.num_classes
    model = torchvision.models.get_model(spec.name, weights=None, **kwargs)
    return _with_checkpoint(model, spec, f"torchvision {spec.name} architecture")


def _from_callable(spec: ModelSpec, progress) -> tuple[nn.Module, dict]:
    factory = resolve_callable(spec.architecture)
    kwargs = dict(spec.kwargs)
    if spec.num_classes is not None:
        kwargs["num_classes"] = spec.num_classes
    try:
        model = factory(**kwargs)
    except Exception as error:  # user code: report it with its own words, never hide it
        raise ModelLoadError(f"model.architecture: {spec.architecture}(**{kwargs}) raised {error!r}") from error
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"model.architecture: {spec.architecture} returned {type(model).__name__}, not a torch.nn.Module")
    return _with_checkpoint(model, spec, f"user architecture {spec.architecture}")


def resolve_callable(reference: str) -> Callable:
    """Import `package.module:function` or `/path/file.py:function` and return the function."""
    module_name, function_name = reference.rsplit(":", 1)
    try:
        if module_name.endswith(".py"):
            module_spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_spec.name] = module  # so dataclasses and pickling inside it can find it
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except Exception as error:
        raise ModelLoadError(f"model.architecture: cannot import {module_name!r}: {error!r}") from error
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ModelLoadError(f"model.architecture: {module_name!r} has no callable {function_name!r}")
    return factory


def _with_checkpoint(model: nn.Module, spec: ModelSpec, architecture: str) -> tuple[nn.Module, dict]:
    state = load_state_dict(spec.checkpoint, trust=spec.trust_checkpoint)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shapes that differ (e.g. another num_classes)
        raise ModelLoadError(f"{spec.checkpoint}: does not fit the {architecture}: {error}") from None
    problems = []
    if result.missing_keys:
        problems.append(f"missing from the checkpoint: {_few(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"not in the architecture: {_few(result.unexpected_keys)}")
    if problems:
        raise ModelLoadError(f"{spec.checkpoint}: does not fit the {architecture}: " + "; ".join(problems))
    return model, {"source": spec.source, "architecture": spec.architecture or spec.name,
                   "checkpoint": str(spec.checkpoint), "sha256": file_sha256(spec.checkpoint),
                   "description": f"{architecture} with weights from {spec.checkpoint.name}"}


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
            f"found {type(content).__name__} with keys {_few(list(content)) if isinstance(content, dict) else '-'}"
        )
    return {_strip_wrappers(name): tensor for name, tensor in content.items()}


def _strip_wrappers(name: str) -> str:
    # DataParallel/DistributedDataParallel save 'module.'; torch.compile saves '_orig_mod.'.
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


def _last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-2] if len(lines) > 1 and lines[-1].startswith("Check the documentation") else (lines[-1] if lines else "")


def _few(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")


_SOURCES = {
    "builtin": _from_builtin,
    "torchvision": _from_torchvision,
    "checkpoint": _from_checkpoint,
    "callable": _from_callable,
}

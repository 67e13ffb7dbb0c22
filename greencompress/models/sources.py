"""Build or load the pretrained model a ModelSpec describes, with a record of where it came from."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import nn

from greencompress.core.config import Section, resolve_existing, resolve_path
from greencompress.core.errors import ModelLoadError
from greencompress.core.files import file_sha256
from greencompress.core.registry import unknown_choice
from greencompress.models.checkpoints import few, load_state_dict
from greencompress.models.inputs import ModelInputs

if TYPE_CHECKING:
    from greencompress.models.huggingface import ImagePreprocessing


class ModelSpec(Section):
    """Where the pretrained model comes from.

    `builtin`: a model greencompress can build offline (trained on first use, then cached);
    `torchvision`: a torchvision classifier by name, with a weights enum or none;
    `checkpoint`: a torchvision architecture by name, with weights from a local checkpoint file;
    `callable`: the user's own architecture, `package.module:function` (or `file.py:function`,
    relative to the recipe), plus a local checkpoint;
    `huggingface`: a local folder that `from_pretrained` accepts (or a zip of one; with `package`, the
    path is inside that installed Python package), for a `task`: text-classification (the folder's
    head), sentence-embedding (its pooling, scored by a nearest-centroid head fitted on the data) or
    image-classification (a ViT-family model and its head, on image data prepared as its processor says).
    Offline only; a config that asks for custom code is refused unless `trust_remote_code`.
    """

    source: Literal["builtin", "torchvision", "checkpoint", "callable", "huggingface"]
    name: str | None = None
    weights: str | None = None
    num_classes: int | None = Field(default=None, ge=2)  # a classifier's outputs; two at least
    architecture: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Path | None = None
    trust_checkpoint: bool = False
    package: str | None = None
    path: Path | None = None
    # What kind of model this is (models/tasks/): the recipe checks the name and fills in image-classification
    # for sources other than huggingface, which must name one.
    task: str | None = None
    trust_remote_code: bool = False

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

    @field_validator("path")
    @classmethod
    def _path_beside_recipe(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None or info.data.get("package"):
            return value  # inside the package, found when the model loads
        path = resolve_path(value, info)
        if not path.exists():
            if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", str(value)):  # organisation/name: a Hub id
                raise ValueError(
                    f"folder or zip not found: {path}. {value} looks like a Hugging Face Hub id: greencompress reads "
                    f"local folders only, never the network. Download it once where there is a network "
                    f"(hf download {value} --local-dir {Path(str(value)).name}) and set model.path to that folder"
                )
            raise ValueError(f"folder or zip not found: {path}")
        return path

    @model_validator(mode="after")
    def _fields_for_source(self) -> ModelSpec:
        needed = {
            "builtin": ("name",),
            "torchvision": ("name",),
            "checkpoint": ("name", "checkpoint"),
            "callable": ("architecture", "checkpoint"),
            "huggingface": ("path", "task"),
        }[self.source]
        missing = [field for field in needed if getattr(self, field) is None]
        if missing:
            raise ValueError(f"source '{self.source}' needs field(s): {', '.join(missing)}")
        if self.source == "checkpoint" and self.num_classes is None:
            # A torchvision architecture is built with 1,000 ImageNet outputs unless told: the checkpoint's head
            # would not fit, and only loading its weights would tell.
            raise ValueError(
                "source 'checkpoint' needs field num_classes: the number of outputs the checkpoint's head has "
                "(1000 for an ImageNet checkpoint)"
            )
        if self.source in ("torchvision", "checkpoint"):
            _check_torchvision_name(self.name)
        if self.source == "builtin":
            from greencompress.models.zoo import BUILTIN_MODELS

            if self.name not in BUILTIN_MODELS:
                raise ValueError(unknown_choice("builtin model", self.name, sorted(BUILTIN_MODELS)))
        hugging_only = [f for f in ("path", "package") if getattr(self, f) is not None]
        if self.trust_remote_code:
            hugging_only.append("trust_remote_code")
        if hugging_only and self.source != "huggingface":
            raise ValueError(f"{', '.join(hugging_only)}: for source 'huggingface' only")
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
    """A model in eval mode and its provenance (source, file, sha256, how it was made).

    A transformer also brings its tokenizer (text), its inputs and its head's label names; a vision
    transformer, how its processor prepares images. `inputs` is None for CNNs: their shape is the
    data's (the task decides it: models/tasks/).
    """

    module: nn.Module
    provenance: dict
    tokenizer: object | None = None
    inputs: ModelInputs | None = None
    label_names: tuple[str, ...] | None = None
    image_preprocessing: ImagePreprocessing | None = None

    @property
    def hugging_face_folder(self) -> Path | None:
        """The folder `from_pretrained` loaded the model from; None for models of other sources."""
        return Path(self.provenance["folder"]) if self.provenance.get("source") == "huggingface" else None


def check_model_files(spec: ModelSpec) -> dict:
    """What a run would read of the model, checked without loading weights: a Hugging Face folder's files, config,
    head and custom code (its config.json returned), torchvision weight names, a user's architecture importable.
    ModelLoadError names the file and field."""
    if spec.source == "huggingface":
        from greencompress.models.huggingface import inspect_folder, model_folder

        folder = model_folder(spec.path, spec.package)
        return inspect_folder(folder, spec.task, spec.trust_remote_code, spec.num_classes)
    if spec.source == "torchvision" and spec.weights is not None:
        _weights_enum(spec.name, spec.weights)
    if spec.source == "callable":
        resolve_callable(spec.architecture)
    return {}


def load_model(spec: ModelSpec, progress=None) -> LoadedModel:
    """Build the model of a ModelSpec in eval mode; raises ModelLoadError with what to do when it cannot."""
    if spec.source == "huggingface":
        from greencompress.models.huggingface import load_huggingface, model_folder

        loaded = load_huggingface(
            model_folder(spec.path, spec.package),
            spec.task,
            spec.trust_remote_code,
            spec.trust_checkpoint,
            spec.num_classes,
        )
        origin = f"{spec.path} in the installed package {spec.package}" if spec.package else str(spec.path)
        provenance = {
            **loaded.provenance,
            "origin": origin,
            "description": f"{loaded.provenance['description']}, from {origin}",
        }
        return LoadedModel(
            loaded.module, provenance, loaded.tokenizer, loaded.inputs, loaded.label_names, loaded.image_preprocessing
        )
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
        return model, {
            "source": "torchvision",
            "name": spec.name,
            "weights": None,
            "description": f"torchvision {spec.name} with random weights (no pretrained weights asked for)",
        }
    weights = _weights_enum(spec.name, spec.weights)
    _require_cached_or_downloadable(weights)
    try:
        model = torchvision.models.get_model(spec.name, weights=weights, **kwargs)
    except ValueError as error:  # e.g. num_classes that the weights do not have
        raise ModelLoadError(f"model: torchvision {spec.name} with {weights}: {error}") from None
    return model, {
        "source": "torchvision",
        "name": spec.name,
        "weights": str(weights),
        "url": weights.url,
        "description": f"torchvision {spec.name} with pretrained weights {weights}",
    }


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
        raise ModelLoadError(
            f"model.architecture: {spec.architecture} returned {type(model).__name__}, not a torch.nn.Module"
        )
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
        problems.append(f"missing from the checkpoint: {few(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"not in the architecture: {few(result.unexpected_keys)}")
    if problems:
        raise ModelLoadError(f"{spec.checkpoint}: does not fit the {architecture}: " + "; ".join(problems))
    return model, {
        "source": spec.source,
        "architecture": spec.architecture or spec.name,
        "checkpoint": str(spec.checkpoint),
        "sha256": file_sha256(spec.checkpoint),
        "description": f"{architecture} with weights from {spec.checkpoint.name}",
    }


_SOURCES = {
    "builtin": _from_builtin,
    "torchvision": _from_torchvision,
    "checkpoint": _from_checkpoint,
    "callable": _from_callable,
}

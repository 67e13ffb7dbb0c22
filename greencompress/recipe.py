"""Recipe: the YAML schema of a run, validated once at load time.

After `load_recipe` returns, every path is absolute and checked, every number is in range, and
the rest of greencompress trusts the object. A recipe that does not validate raises `RecipeError`
naming the file, the dotted field path and what was expected.
"""

from __future__ import annotations

import difflib
import re
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from greencompress.errors import RecipeError
from greencompress.files import read_utf8

_BASE_DIR_KEY = "base_dir"


class _Section(BaseModel):
    """Every recipe section rejects unknown keys and is immutable once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve_existing(value: Path | None, info: ValidationInfo) -> Path | None:
    """Resolve a recipe path against the recipe's folder and require that it exists."""
    if value is None:
        return None
    path = _resolve(value, info)
    if not path.exists():
        raise ValueError(f"file or folder not found: {path}")
    return path


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base_dir = (info.context or {}).get(_BASE_DIR_KEY, Path.cwd())
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path(base_dir) / path).resolve()


class ModelSpec(_Section):
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

    _check_checkpoint = field_validator("checkpoint")(_resolve_existing)

    @field_validator("architecture")
    @classmethod
    def _architecture_form(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"[^:\s]+:[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(f"expected 'package.module:function' or 'file.py:function', got {value!r}")
        module, function = value.split(":")
        if module.endswith(".py"):  # a file path: resolve it now so a typo fails before any work
            file = _resolve(Path(module), info)
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
            from greencompress.zoo import BUILTIN_MODELS

            if self.name not in BUILTIN_MODELS:
                raise ValueError(_unknown_choice("builtin model", self.name, sorted(BUILTIN_MODELS)))
        if self.weights is not None and self.source != "torchvision":
            raise ValueError("'weights' applies to source 'torchvision' only; use 'checkpoint' for a file")
        return self


def _check_torchvision_name(name: str) -> None:
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(_unknown_choice("torchvision classification model", name, known))


def _unknown_choice(what: str, given: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(given, choices, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {what} {given!r}{hint}"


class DataSpec(_Section):
    """The evaluation and calibration data.

    `digits`: scikit-learn's bundled handwritten digits (real, offline), seeded stratified split;
    `imagefolder`: `root/<eval_split>/<class>/*.png` and `root/<calibration_split>/...`;
    `cifar10`: torchvision's CIFAR-10 under `root` (downloaded only if `download: true`);
    `synthetic`: random inputs, for latency and energy only (no accuracy is reported).
    """

    kind: Literal["digits", "imagefolder", "cifar10", "synthetic"]
    root: Path | None = None
    download: bool = False
    eval_split: str = "val"
    calibration_split: str = "train"
    image_size: int = Field(default=224, ge=8)
    resize_to: int | None = Field(default=None, ge=8)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    eval_samples: int | None = Field(default=None, ge=1)
    num_classes: int = Field(default=10, ge=2)
    synthetic_samples: int = Field(default=64, ge=1)
    batch_size: int = Field(default=64, ge=1)

    @field_validator("root")
    @classmethod
    def _root(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = _resolve(value, info)
        may_be_created = info.data.get("kind") == "cifar10" and info.data.get("download")
        if not may_be_created and not path.is_dir():
            raise ValueError(f"folder not found: {path}")
        return path

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(value) <= 0:
            raise ValueError(f"every std must be > 0, got {list(value)}")
        return value

    @model_validator(mode="after")
    def _root_when_needed(self) -> DataSpec:
        if self.kind in ("imagefolder", "cifar10") and self.root is None:
            raise ValueError(f"kind '{self.kind}' needs 'root'")
        if self.kind == "imagefolder":
            for split in (self.eval_split, self.calibration_split):
                if not (self.root / split).is_dir():
                    raise ValueError(f"split folder not found: {self.root / split}")
        return self




class DistillationConfig(_Section):
    """Knowledge distillation from the unpruned model: loss = alpha * KD(T) + (1 - alpha) * cross-entropy."""

    temperature: float = Field(default=4.0, gt=0)
    alpha: float = Field(default=0.5, ge=0, le=1)


class FinetuneConfig(_Section):
    """Fine-tuning of the PyTorch model (after pruning) on the training split, best epoch kept."""

    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    learning_rate: float = Field(default=0.01, gt=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    warmup_epochs: float = Field(default=0.0, ge=0)  # linear warm-up, then cosine decay to 0
    label_smoothing: float = Field(default=0.1, ge=0, lt=1)
    distillation: DistillationConfig | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)  # held out of the training split to pick the best epoch
    early_stopping_patience: int | None = Field(default=None, ge=1)  # epochs without a better validation top-1
    # Training-time augmentation of each batch: 'random_crop' (pad 1/8 of the side, crop back), 'horizontal_flip'
    # (not for data whose meaning flips, such as digits).
    augment: list[Literal["random_crop", "horizontal_flip"]] = Field(default_factory=list)


class PruneConfig(_Section):
    """Pruning of the PyTorch model before export: `structured` removes channels, `unstructured` zeros weights.

    `iterative_steps` reaches the final ratio (or sparsity) in steps, following `schedule`; with
    `finetune_between`, a short fine-tune after each step but the last lets the model recover before
    more is removed.
    """

    method: Literal["structured", "unstructured"] = "structured"
    importance: Literal["l1", "l2", "bn_scale", "taylor", "random"] = "l1"  # structured: channel score
    # structured: share of each prunable layer's channels removed (0.5 when neither this nor target_macs is set)
    ratio: float | None = Field(default=None, gt=0, lt=1)
    target_macs: float | None = Field(default=None, gt=0, lt=1)  # structured: instead of ratio, MACs kept vs baseline
    global_pruning: bool = False  # structured: rank channels across layers instead of within each
    ignore: list[str] | None = None  # structured: layers never pruned (default: the final classifier)
    round_to: int | None = Field(default=None, ge=1)  # structured: keep channel counts multiples of this
    iterative_steps: int = Field(default=1, ge=1)
    schedule: Literal["linear", "cubic"] = "linear"  # per-step targets; cubic removes most early (Zhu & Gupta, 2017)
    finetune_between: FinetuneConfig | None = None  # fine-tuning after every step but the last
    sparsity: float = Field(default=0.5, gt=0, lt=1)  # unstructured: share of weights set to zero
    scope: Literal["global", "layer"] = "global"  # unstructured: one threshold for all layers, or per layer

    # Checked on values, not on which keys were given: recipe.resolved.yaml (all defaults written out)
    # must load again for --resume.
    @model_validator(mode="after")
    def _one_target(self) -> PruneConfig:
        if self.target_macs is not None and self.ratio is not None:
            raise ValueError("set either ratio or target_macs, not both")
        if self.method == "unstructured" and (self.ratio, self.target_macs, self.round_to) != (None, None, None):
            raise ValueError("ratio, target_macs and round_to apply to structured pruning; "
                             "unstructured pruning takes sparsity and scope")
        return self

    @property
    def structured_ratio(self) -> float:
        """The ratio to prune at when target_macs does not decide it."""
        return 0.5 if self.ratio is None else self.ratio



class QuantizeConfig(_Section):
    """int8 quantization with ONNX Runtime (QDQ format): post-training, or after quantization-aware fine-tuning.

    `qat` (a fine-tuning section; a learning rate near 1e-3 suits it) first fine-tunes the PyTorch
    model under simulated int8 rounding, for when post-training int8 loses too much accuracy.
    """

    method: Literal["static", "dynamic"] = "static"
    calibration_samples: int = Field(default=256, ge=1)
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    reduce_range: Literal["auto"] | bool = "auto"
    qat: FinetuneConfig | None = None

    @model_validator(mode="after")
    def _qat_needs_static_per_channel(self) -> QuantizeConfig:
        if self.qat is not None and (self.method != "static" or not self.per_channel):
            raise ValueError("qat simulates static, per-channel int8: it needs method: static and per_channel: true")
        return self

class StageSpec(_Section):
    """One entry of `stages`: a mapping with exactly one key, the technique, whose value is its config."""

    prune: PruneConfig | None = None
    finetune: FinetuneConfig | None = None
    quantize: QuantizeConfig | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StageSpec:
        chosen = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"each stage names exactly one technique (one of: {', '.join(type(self).model_fields)})")
        return self

    @property
    def technique(self) -> str:
        return next(name for name in type(self).model_fields if getattr(self, name) is not None)

    @property
    def config(self) -> BaseModel:
        return getattr(self, self.technique)


class BenchmarkSpec(_Section):
    """Latency and energy measurement: per batch size, interleaved windows of back-to-back runs (docs/energy.md)."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8], min_length=1)
    warmup_iterations: int = Field(default=10, ge=0)
    window_s: float = Field(default=1.0, gt=0)  # raised to the meter's shortest supported window
    min_iterations: int = Field(default=10, ge=1)  # per window
    max_window_s: float = Field(default=30.0, gt=0)  # a window ends here even if a slow model ran fewer times
    windows: int = Field(default=5, ge=2)
    max_windows: int = Field(default=10, ge=2)
    target_relative_ci: float = Field(default=0.05, gt=0)  # 95% CI half-width / mean, on joules per inference
    threads: int = Field(default=2, ge=1)
    # ONNX Runtime workers spin-wait for work when true; off, they sleep: same latency on a quiet machine, less
    # CPU time, and far less harm on a busy one (docs/BENCHMARKS.md, scripts/bench_spinning.py).
    allow_spinning: bool = False
    # Runtimes that run every exported model; onnxruntime is the reference and always listed.
    runtimes: list[Literal["onnxruntime", "openvino"]] = Field(default_factory=lambda: ["onnxruntime"])

    @field_validator("runtimes")
    @classmethod
    def _runtimes_available(cls, value: list[str]) -> list[str]:
        import importlib.util

        if "onnxruntime" not in value:
            raise ValueError("onnxruntime runs every exported model and must be listed (add others beside it)")
        if "openvino" in value and importlib.util.find_spec("openvino") is None:
            raise ValueError("openvino is not installed: pip install 'greencompress[openvino]' (about 180 MB)")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _window_counts(self) -> BenchmarkSpec:
        if self.max_windows < self.windows:
            raise ValueError(f"max_windows ({self.max_windows}) must be >= windows ({self.windows})")
        return self

    @field_validator("batch_sizes")
    @classmethod
    def _positive_batches(cls, value: list[int]) -> list[int]:
        for index, size in enumerate(value):
            if size < 1:
                raise ValueError(f"batch size must be >= 1, got {size} at position {index}")
        return sorted(set(value))


class EnergySpec(_Section):
    """How energy is obtained: `auto` takes the best meter available (RAPL, else the estimate)."""

    meter: Literal["auto", "rapl", "estimate"] = "auto"
    cpu_watts_per_core: float | None = Field(default=None, gt=0)
    idle_s: float = Field(default=3.0, ge=0)  # idle-power measurement before benchmarking
    region: str = "world"  # a key of greencompress/resources/carbon_intensity.csv
    carbon_intensity: float | None = Field(default=None, ge=0)  # gCO2e/kWh; overrides region
    pue: float = Field(default=1.0, ge=1.0)
    electricity_price_per_kwh: float | None = Field(default=None, ge=0)
    currency: str = "USD"

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        from greencompress.measure.energy.carbon import lookup_region

        return lookup_region(value).key


class ExportSpec(_Section):
    """ONNX export and the parity check against PyTorch."""

    opset: int = Field(default=18, ge=13)
    parity_samples: int = Field(default=64, ge=1)
    parity_max_abs_diff: float = Field(default=1e-3, gt=0)
    parity_min_top1_agreement: float = Field(default=0.99, gt=0, le=1)


class GatesSpec(_Section):
    """Budgets that make `run` exit 3 when a compressed artifact breaks them (for CI pipelines)."""

    max_accuracy_drop: float | None = Field(default=None, ge=0)  # top-1, in percentage points
    min_energy_saving: float | None = Field(default=None, le=1)  # fraction of joules per inference, e.g. 0.3
    # An energy gate on an estimate (CPU time x assumed watts) judges CPU time, not energy: refused unless allowed.
    allow_estimated_energy: bool = False


class OutputSpec(_Section):
    """Where run folders go: `<dir>/<recipe name>/<timestamp>/`. A relative dir is relative to the working directory."""

    dir: Path = Path("runs")


class Recipe(_Section):
    """A whole run: what to compress, with which data, how, and how to measure it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    model: ModelSpec
    data: DataSpec
    stages: list[StageSpec] = Field(min_length=1)
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    energy: EnergySpec = Field(default_factory=EnergySpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)

    @model_validator(mode="after")
    def _stage_order(self) -> Recipe:
        # prune and finetune change the PyTorch model, so they must come before quantize, which works on its export.
        techniques = [stage.technique for stage in self.stages]
        if "quantize" in techniques and any(t != "quantize" for t in techniques[techniques.index("quantize"):]):
            raise ValueError(f"stages: prune and finetune must come before quantize, got {' -> '.join(techniques)}")
        if techniques.count("quantize") > 1:
            raise ValueError("stages: at most one quantize stage")
        needs_labels = "finetune" in techniques or any(
            (stage.prune is not None and (stage.prune.importance == "taylor" or stage.prune.finetune_between))
            or (stage.quantize is not None and stage.quantize.qat is not None) for stage in self.stages)
        if needs_labels and self.data.kind == "synthetic":
            raise ValueError("stages: finetune, quantize.qat and taylor pruning need labelled training data; "
                             "data.kind synthetic has none")
        return self

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one input image, channels first."""
        return (3, self.data.image_size, self.data.image_size)


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read, override (`key.path=value`, value parsed as YAML) and validate a recipe file."""
    path = Path(path)
    text = read_utf8(path, "recipe", RecipeError)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override, path)
    try:
        return Recipe.model_validate(raw, context={_BASE_DIR_KEY: path.resolve().parent})
    except ValidationError as error:
        lines = [f"  {_format_error(item)}" for item in error.errors()]
        raise RecipeError(f"{path}: invalid recipe\n" + "\n".join(lines)) from None


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The validated recipe as plain YAML/JSON-ready data (paths as strings, defaults filled in)."""
    return recipe.model_dump(mode="json")


def _apply_override(raw: dict, override: str, path: Path) -> None:
    key_path, sep, value_text = override.partition("=")
    if not sep or not key_path:
        raise RecipeError(f"{path}: --set {override!r}: expected key.path=value")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: --set {override!r}: value is not valid YAML: {error}") from None
    keys = key_path.split(".")
    node: Any = raw
    for depth, key in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = node[_list_index(key, node, keys[: depth + 1], path)]
        else:
            node = node.setdefault(key, {})
        if not isinstance(node, (dict, list)):
            raise RecipeError(f"{path}: --set {key_path}: '{'.'.join(keys[: depth + 1])}' is not a section")
    last = keys[-1]
    if isinstance(node, list):
        node[_list_index(last, node, keys, path)] = value
    else:
        node[last] = value


def _list_index(key: str, node: list, keys: list[str], path: Path) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise RecipeError(f"{path}: --set {'.'.join(keys)}: expected a list index below {len(node)}, got {key!r}")
    return int(key)


def _format_error(error: dict) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = _field_names_at(error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(known)}"
        return f"{location}: unknown field{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{location}: required field is missing"
    if error["type"] in ("value_error", "assertion_error"):
        return f"{location}: {message}"
    return f"{location}: {message} (got {error.get('input')!r})"


def _field_names_at(location: tuple) -> list[str]:
    """Valid keys of the section at a validation-error location, for 'did you mean' hints."""
    model: type[BaseModel] | None = Recipe
    for part in location:
        if model is None:
            return []
        if isinstance(part, int):
            continue  # list index: the item type was already selected from the list annotation
        field = model.model_fields.get(part)
        model = _section_type(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (list, Union, types.UnionType):
        for argument in get_args(annotation):
            found = _section_type(argument)
            if found:
                return found
    return None

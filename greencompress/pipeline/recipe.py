"""Recipe: the YAML schema of a run, assembled from the sections each module defines, validated once at load time.

After `load_recipe` returns, every path is absolute and checked, every number is in range, and
the rest of greencompress trusts the object. A recipe that does not validate raises `RecipeError`
naming the file, the dotted field path and what was expected.

Sections live beside the code that reads them (models/sources.py, models/data.py, compress/*.py,
measure/..., runtimes/export.py, pipeline/gates.py); `stages` is a list of one-key mappings whose key is
a registered technique (compress/technique.py) and whose value is that technique's config. `model.task`
names a registered task (models/tasks/), which checks the model and data sections it is given.
"""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from greencompress.compress.finetune import DistillationConfig, FinetuneConfig
from greencompress.compress.prune import PruneConfig
from greencompress.compress.quantize import QuantizeConfig
from greencompress.compress.technique import TECHNIQUES, NotForThisModel, Technique
from greencompress.core.config import BASE_DIR_KEY, Section
from greencompress.core.errors import RecipeError
from greencompress.core.files import read_utf8
from greencompress.core.registry import unknown_choice
from greencompress.measure.benchmark import BenchmarkSpec
from greencompress.measure.energy import EnergySpec
from greencompress.measure.quality import QualityBudget, quality_budget
from greencompress.models.data import DataSpec
from greencompress.models.sources import ModelSpec
from greencompress.models.tasks import Task, task_named, task_names
from greencompress.pipeline.gates import GatesSpec
from greencompress.runtimes import RUNTIMES
from greencompress.runtimes.export import ExportSpec, runtimes_without_fusion

__all__ = [
    "BenchmarkSpec",
    "DataSpec",
    "DistillationConfig",
    "EnergySpec",
    "ExportSpec",
    "FinetuneConfig",
    "GatesSpec",
    "ModelSpec",
    "OutputSpec",
    "PruneConfig",
    "QuantizeConfig",
    "Recipe",
    "Stage",
    "load_recipe",
    "recipe_to_dict",
]


@dataclass(frozen=True)
class Stage:
    """One entry of `stages`: the technique's name and its validated config."""

    technique: str
    config: BaseModel

    @property
    def method(self) -> Technique:
        return TECHNIQUES.get(self.technique)


class OutputSpec(Section):
    """Where run folders go: `<dir>/<recipe name>/<timestamp>/`. A relative dir is relative to the working directory."""

    dir: Path = Path("runs")


class Recipe(Section):
    """A whole run: what to compress, with which data, how, and how to measure it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    seed: int = 0
    model: ModelSpec
    data: DataSpec
    # None (`stages: []`): the model as given, exported and measured on every runtime, to see where it runs best.
    stages: list[Stage]
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    energy: EnergySpec = Field(default_factory=EnergySpec)
    export: ExportSpec = Field(default_factory=ExportSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    # `greencompress search` varies the rest of the recipe within this section's space (search/spec.py's
    # SearchRecipe validates it); `run` ignores it.
    search: dict[str, Any] | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _task_by_its_name(cls, value: Any) -> Any:
        """`model.task`: a registered task or one of its aliases, written as the task's own name; models of other
        sources than huggingface are image classifiers unless the recipe names a (plugin) task."""
        if not isinstance(value, dict):
            return value
        task = value.get("task")
        if task is None and value.get("source") != "huggingface":
            return {**value, "task": "image-classification"}
        if not isinstance(task, str):
            return value  # missing (ModelSpec names it) or of the wrong type (pydantic reports it)
        if task not in task_names():
            raise ValueError(unknown_choice("task", task, task_names()))
        return {**value, "task": task_named(task).name}

    @field_validator("stages", mode="before")
    @classmethod
    def _stages_from_registry(cls, value: Any, info: ValidationInfo) -> Any:
        """Each `{technique: settings}` validated by that technique's config, errors located at stages.N.technique."""
        if not isinstance(value, list):
            return value  # pydantic reports the type
        stages, errors = [], []
        for index, item in enumerate(value):
            if isinstance(item, Stage):
                stages.append(item)
                continue
            if isinstance(item, dict) and len(item) > 1:
                errors += _extra_stage_keys(index, item)
                continue
            if not isinstance(item, dict) or len(item) != 1:
                errors.append(
                    _error(
                        f"each stage names exactly one technique (one of: {', '.join(TECHNIQUES.names())})",
                        (index,),
                        item,
                    )
                )
                continue
            ((name, settings),) = item.items()
            if name not in TECHNIQUES:  # an unknown key of the stage mapping, hinted like any other
                errors.append(InitErrorDetails(type="extra_forbidden", loc=(index, name), input=settings))
                continue
            try:
                stages.append(Stage(name, TECHNIQUES.get(name).parse(settings or {}, context=info.context)))
            except ValidationError as error:
                errors += [
                    _error(e["msg"].removeprefix("Value error, "), (index, name, *e["loc"]), e["input"])
                    if e["type"] == "value_error"
                    else InitErrorDetails(
                        type=e["type"], loc=(index, name, *e["loc"]), input=e["input"], ctx=e.get("ctx", {})
                    )
                    for e in error.errors()
                ]
        if errors:
            raise ValidationError.from_exception_data("stages", errors)
        return stages

    @field_serializer("stages")
    def _stages_as_written(self, stages: list[Stage]) -> list[dict]:
        return [{stage.technique: stage.config.model_dump(mode="json")} for stage in stages]

    @model_validator(mode="after")
    def _stage_order(self) -> Recipe:
        # Techniques on the PyTorch model (prune, finetune) come before those on its exported file (quantize).
        kinds = [stage.method.works_on for stage in self.stages]
        names = [stage.technique for stage in self.stages]
        if "onnx" in kinds and "torch" in kinds[kinds.index("onnx") :]:
            on_model, on_file = ([t.name for t in TECHNIQUES if t.works_on == kind] for kind in ("torch", "onnx"))
            raise ValueError(
                f"stages: {' and '.join(on_model)} must come before {' and '.join(on_file)} (they "
                f"change the PyTorch model, which is then exported), got {' -> '.join(names)}"
            )
        for name in dict.fromkeys(names):
            if names.count(name) > 1 and kinds[names.index(name)] == "onnx":
                # Several stages of one file technique each make their own file from the same export, told apart by
                # their variant (quantize: dynamic and static); two alike would make the same file twice.
                variants = [stage.method.variant(stage.config) for stage in self.stages if stage.technique == name]
                if "" in variants or len(set(variants)) < len(variants):
                    raise ValueError(
                        f"stages: several {name} stages must differ in kind (for quantize: one `method: "
                        f"dynamic`, one `method: static`), got {', '.join(v or '-' for v in variants)}"
                    )
        self.task.check_recipe(self.model, self.data)
        embedding_gates = [
            name
            for name in ("min_embedding_cosine", "min_neighbour_agreement")
            if getattr(self.gates, name) is not None
        ]
        if embedding_gates and self.task.primary_metric != "embedding":
            raise ValueError(
                f"gates.{embedding_gates[0]}: judges a sentence embedder's embeddings; a "
                f"{self.task.name} model is judged by gates.max_accuracy_drop (top-1)"
            )
        generating = [name for name in self.benchmark.runtimes if RUNTIMES.get(name).runs == "generate"]
        if generating and self.task.workload_kind != "generate":
            raise ValueError(
                f"benchmark.runtimes: {generating[0]} generates text; a {self.task.name} model is measured on "
                f"runtimes of files or PyTorch"
            )
        if self.data.prompts is not None and self.task.workload_kind != "generate":
            raise ValueError(f"data.prompts: a prompt set is for a language model; a {self.task.name} model reads none")
        if self.gates.max_perplexity_increase is not None and self.task.primary_metric != "perplexity":
            raise ValueError(
                f"gates.max_perplexity_increase: judges a language model; a {self.task.name} model is judged by "
                "gates.max_accuracy_drop"
            )
        structure = self.task.structure(self.model)
        for index, stage in enumerate(self.stages):
            if structure not in stage.method.structures:
                kinds = {"channels": "a CNN", "encoder": "a transformer encoder", "decoder": "a causal language model"}
                raise ValueError(
                    f"stages.{index}.{stage.technique}: acts on "
                    f"{' or '.join(kinds[s] for s in stage.method.structures)}"
                    f"; this {self.task.name} model is {kinds[structure]} (it takes "
                    f"{', '.join(t.name for t in TECHNIQUES if structure in t.structures)})"
                )
            try:
                stage.method.check(stage.config, structure)
            except NotForThisModel as error:
                raise ValueError(f"stages.{index}.{stage.technique}.{error.field}: {error}") from None
        labelled = [stage.technique for stage in self.stages if stage.method.needs_labels(stage.config)]
        if labelled and self.data.kind == "synthetic":
            raise ValueError(
                f"stages: {', '.join(dict.fromkeys(labelled))} need labelled training data; "
                "data.kind synthetic has none"
            )
        return self

    @model_validator(mode="after")
    def _fusion_readable_by_every_runtime(self) -> Recipe:
        others = runtimes_without_fusion(self.benchmark.runtimes)
        if self.export.transformer_fusion is True and others:
            raise ValueError(
                f"benchmark.runtimes: {', '.join(others)} cannot read the file export.transformer_fusion "
                f"writes (it holds ONNX Runtime's own fused operators): list only onnxruntime, or set "
                f"export.transformer_fusion: auto or false to measure the portable graph on every runtime"
            )
        return self

    @property
    def task(self) -> Task:
        """What kind of model this recipe compresses (models/tasks/)."""
        return task_named(self.model.task)

    def quality_budget(self) -> QualityBudget:
        """What keeps an artifact eligible: the task's primary metric, with the gates' limits where set."""
        return quality_budget(
            self.task.primary_metric,
            self.gates.max_accuracy_drop,
            self.gates.min_embedding_cosine,
            self.gates.min_neighbour_agreement,
            self.gates.max_perplexity_increase,
        )

    def stage(self, technique: str) -> BaseModel | None:
        """The config of the recipe's first stage of `technique`, or None when it has none."""
        return next((stage.config for stage in self.stages if stage.technique == technique), None)


def load_recipe(path: str | Path, overrides: list[str] = (), schema: type[Recipe] = Recipe) -> Recipe:
    """Read, override (`key.path=value`, value parsed as YAML) and validate a recipe file against `schema`.

    `schema` is Recipe or a subclass that validates more (search/spec.py's SearchRecipe checks `search:` too).
    """
    path = Path(path)
    text = read_utf8(path, "recipe", RecipeError)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML{_where(error)}") from None
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty: it needs at least name, model, data and stages")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override, path)
    try:
        return schema.model_validate(raw, context={BASE_DIR_KEY: path.resolve().parent})
    except ValidationError as error:
        problems = [_format_error(item, schema) for item in error.errors()]
        if len(problems) == 1:  # one mistake, one line: the file, the field, what was expected
            raise RecipeError(f"{path}: invalid recipe: {problems[0]}") from None
        raise RecipeError(f"{path}: invalid recipe\n" + "\n".join(f"  {line}" for line in problems)) from None


def _where(error: yaml.YAMLError) -> str:
    """Where and what a YAML error is, on one line: ' at line 2, column 8: expected ',' or ']' ...'."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return (f" at line {mark.line + 1}, column {mark.column + 1}" if mark else "") + f": {problem}"


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


def _format_error(error: dict, schema: type[BaseModel]) -> str:
    location = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        known = _field_names_at(error["loc"][:-1], schema)
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(known)}"
        return f"{location}: unknown field{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{location}: required field is missing"
    if error["type"] in ("value_error", "assertion_error"):
        return f"{location}: {message}"
    return f"{location}: {message} (got {error.get('input')!r})"


def _field_names_at(location: tuple, schema: type[BaseModel]) -> list[str]:
    """Valid keys of the section at a validation-error location, for 'did you mean' hints."""
    model: type[BaseModel] | None = schema
    if location[:1] == ("stages",) and len(location) >= 2:  # stages.N.<technique>: the registered techniques' keys
        if len(location) == 2:
            return TECHNIQUES.names()
        if location[2] not in TECHNIQUES:
            return []
        method = TECHNIQUES.get(location[2])
        if len(location) == 3 and method.schemes:  # a stage's own keys: those of every scheme it may take
            return list(dict.fromkeys(name for scheme in method.schemes for name in scheme.model_fields))
        model, location = method.config, location[3:]
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


def _extra_stage_keys(index: int, stage: dict) -> list[InitErrorDetails]:
    """A stage mapping with several keys: name each key that should not be there, at its own location."""
    named = [key for key in stage if key in TECHNIQUES]
    if len(named) > 1:
        return [
            _error(
                f"each stage names exactly one technique; this one names {' and '.join(named)}: write one "
                f"stage per technique",
                (index,),
                list(stage),
            )
        ]
    if not named:
        return [InitErrorDetails(type="extra_forbidden", loc=(index, key), input=stage[key]) for key in stage]
    return [
        _error(
            f"unknown key beside the technique {named[0]!r}: a stage names exactly one technique (its settings "
            f"go under it, indented)",
            (index, key),
            stage[key],
        )
        for key in stage
        if key != named[0]
    ]


def _error(message: str, location: tuple, given: Any) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("value_error", message), loc=location, input=given)

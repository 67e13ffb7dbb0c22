"""The `search:` recipe section: what may vary, what is optimised, and the budget.

The rest of the recipe is the base every trial starts from; the space names which of its settings
vary. A list is a set of choices; a mapping `{low, high}` (with an optional `step`) is a range.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from greencompress.compress.finetune import FinetuneConfig
from greencompress.core.config import Section
from greencompress.measure.quality import QualityBudget, quality_budget
from greencompress.pipeline.recipe import Recipe


class Range(Section):
    """A numeric range sampled uniformly, on a grid of `step` when given."""

    low: float = Field(gt=0, lt=1)
    high: float = Field(gt=0, lt=1)
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class SearchSpace(Section):
    """The settings that vary between trials; a setting left out keeps the base recipe's value."""

    prune_ratio: Range | None = None  # stages.prune.ratio: share of each prunable layer's channels removed
    target_macs: Range | None = None  # stages.prune.target_macs: MACs kept, instead of prune_ratio
    # Transformers (model.source huggingface): stages.prune.heads and .ffn, the share of every encoder layer's
    # attention heads and FFN neurons removed; a list of choices may hold 0 (none removed).
    heads: Range | list[float] | None = None
    ffn: Range | list[float] | None = None
    importance: list[Literal["l1", "l2", "bn_scale", "taylor", "random", "activation"]] | None = Field(
        default=None, min_length=1
    )
    round_to: list[int] | None = Field(default=None, min_length=1)  # 1 keeps any channel count
    # Alternative `stages.prune.ignore` lists: which layers are never pruned (the classifier is kept regardless).
    layers: list[list[str]] | None = Field(default=None, min_length=1)
    # Whole residual blocks (CNNs) or encoder layers removed by a `depth` stage before pruning; 0 removes none. The
    # stage is added to trials that draw more than 0 when the base recipe has none (its settings: depth.py's defaults).
    depth: list[int] | None = Field(default=None, min_length=1)
    finetune_epochs: list[int] | None = Field(default=None, min_length=1)
    calibration_method: list[Literal["minmax", "entropy", "percentile"]] | None = Field(default=None, min_length=1)
    qat: list[bool] | None = Field(default=None, min_length=1)  # quantization-aware fine-tuning on/off
    # A causal LM's last `weight_only` stage: its bit width and group size (inputs per scale).
    bits: list[Literal[4, 8]] | None = Field(default=None, min_length=1)
    group_size: list[int] | None = Field(default=None, min_length=1)
    # The runtimes a candidate may be served on. Not drawn: every trial measures its model on each (in the same
    # interleaved rounds) and is scored on the cheapest, so no trained model is judged on the costlier one alone.
    # Left out: the base recipe's benchmark.runtimes (every installed runtime by default).
    runtime: list[str] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_pruning_target(self) -> SearchSpace:
        if self.prune_ratio is not None and self.target_macs is not None:
            raise ValueError("give prune_ratio or target_macs, not both")
        return self

    @field_validator("round_to", "finetune_epochs")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"every choice must be >= 1, got {value}")
        return value

    @field_validator("runtime")
    @classmethod
    def _registered_cpu_runtimes(cls, value: list[str] | None) -> list[str] | None:
        from greencompress.core.registry import unknown_choice
        from greencompress.runtimes import RUNTIMES

        for name in value or ():
            if name not in RUNTIMES:
                raise ValueError(unknown_choice("runtime", name, RUNTIMES.names()))
            spec = RUNTIMES.get(name)
            if spec.runs != "onnx":
                raise ValueError(f"{name} runs PyTorch models; the search serves exported files (onnxruntime, ...)")
            if reason := spec.unavailable():
                raise ValueError(reason)
        return value

    @field_validator("group_size")
    @classmethod
    def _groups(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and min(value) < 16:
            raise ValueError(f"every group size must be >= 16 inputs, got {value}")
        return value

    @field_validator("heads", "ffn")
    @classmethod
    def _shares(cls, value):
        if isinstance(value, list) and (not value or min(value) < 0 or max(value) >= 1):
            raise ValueError(f"expected shares removed, each >= 0 and < 1, got {value}")
        return value

    @field_validator("depth")
    @classmethod
    def _not_negative(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and min(value) < 0:
            raise ValueError(f"every choice must be >= 0 (layers or blocks removed), got {value}")
        return value

    def dimensions(self) -> list[str]:
        """The settings drawn for each trial (the serving runtimes are measured, not drawn)."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None and name != "runtime"]


class Objectives(Section):
    """What the search minimises and maximises, all read at one batch size (and, for a text transformer, one
    sequence length: the base recipe's longest benchmarked one unless given; for a language model, the prompt's
    tokens, with the base recipe's benchmark.new_tokens generated) on the candidate's runtime.

    Energy is J per inference, or a language model's decode J per generated token; latency is latency p50, or its
    time per output token."""

    batch_size: int = Field(default=1, ge=1)
    sequence_length: int | None = Field(default=None, ge=1)
    # Quality: maximise top-1 (minimise a language model's perplexity increase); false: quality is only the budget's
    # constraint (one objective: TPE).
    accuracy: bool = True
    latency: bool = False  # also minimise latency p50 (time per output token)
    size: bool = False  # also minimise the file's size
    prefill: bool = False  # a language model: also minimise the prefill's J per prompt token


class Budget(Section):
    """Limits: quality lost against the unpruned model (by the task's primary metric), trials, and wall-clock time."""

    max_accuracy_drop: float = Field(default=1.0, ge=0)  # top-1 percentage points below the unpruned model
    # A language model's perplexity increase over the original's (percent, on the evaluation windows); None: the
    # recipe's gates.max_perplexity_increase where set, else measure/quality.py's default.
    max_perplexity_increase: float | None = Field(default=None, ge=0)
    # A sentence embedder's fidelity to the original FP32 model's embeddings (its primary metric); None: the recipe's
    # gates where set, else measure/quality.py's defaults.
    min_embedding_cosine: float | None = Field(default=None, gt=0, le=1)
    min_neighbour_agreement: float | None = Field(default=None, ge=0, le=1)
    max_trials: int = Field(default=20, ge=1)  # finished trials (complete or stopped early), across every worker
    max_time: float | None = None  # seconds, or a string such as "30m" or "2h"; per process

    @field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value):
        if isinstance(value, str):
            match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", value)
            if not match:
                raise ValueError(f"expected seconds or a duration such as '30m' or '2h', got {value!r}")
            return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
        if value is not None and value <= 0:
            raise ValueError(f"must be > 0, got {value}")
        return value


class ProxySpec(Section):
    """The cheap test before any training: the pruned, untrained model's latency against the unpruned one."""

    enabled: bool = True
    # A candidate whose untrained latency ratio (pruned / unpruned, same precision, same runtime) is not below
    # this is dropped before fine-tuning: its channel counts buy no speed on the runtime.
    max_latency_ratio: float = Field(default=0.97, gt=0)
    rounds: int = Field(default=7, ge=3)  # interleaved pairs of timing windows
    window_s: float = Field(default=0.25, gt=0)


class EarlyStop(Section):
    """Stopping hopeless trials: validation top-1 part-way through fine-tuning, far below the budget.

    Not after the first epoch: that one ends at the warm-up's peak learning rate, where a heavily
    pruned model can still be at chance (8% on digits) and recover to 98% by the last epoch. The
    validation images are held out of the training split, which the pretrained model may have seen
    (it then scores near 100% there): only a candidate far below is stopped.
    """

    enabled: bool = True
    at_fraction: float = Field(default=0.5, gt=0, le=1)  # checked after this share of the epochs (rounded up)
    # Stopped when validation top-1 then is below the unpruned model's minus the budget minus this.
    margin_points: float = Field(default=20.0, ge=0)


class SearchSpec(Section):
    """`search:` in a recipe: `greencompress search RECIPE` runs trials of the rest of the recipe with these varied."""

    space: SearchSpace
    objectives: Objectives = Field(default_factory=Objectives)
    budget: Budget = Field(default_factory=Budget)
    proxy: ProxySpec = Field(default_factory=ProxySpec)
    early_stop: EarlyStop = Field(default_factory=EarlyStop)
    # nsga2 for several objectives, tpe for one (auto picks so); random for a baseline of the search itself.
    sampler: Literal["auto", "nsga2", "tpe", "random"] = "auto"
    # Fine-tuning under simulated int8 when `qat: true` is drawn (a learning rate near 1e-3 suits it).
    qat_settings: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig(epochs=2, learning_rate=1e-3))
    # The quality objective, named by the task's primary metric: set by SearchRecipe (a language model's is
    # `perplexity_increase`, minimised).
    _quality: str = PrivateAttr("top1")

    @model_validator(mode="after")
    def _something_to_optimise(self) -> SearchSpec:
        if not self.space.dimensions():
            raise ValueError(
                "space: name at least one setting to vary (runtime names where each trial is measured; "
                "it is not varied)"
            )
        return self

    def serving_runtimes(self, measured: list[str]) -> list[str]:
        """The runtimes each trial is scored on, cheapest first wins: space.runtime, else all that a trial measures."""
        return list(self.space.runtime or measured)

    @property
    def objective_names(self) -> list[str]:
        """Energy and latency as paired ratios to the anchor each trial measures (search/trial.py: Outcome)."""
        names = [self._quality] if self.objectives.accuracy else []
        names.append("energy_ratio")
        return names + [
            name
            for name, on in (
                ("prefill_energy_ratio", self.objectives.prefill),
                ("latency_ratio", self.objectives.latency),
                ("size_bytes", self.objectives.size),
            )
            if on
        ]

    @property
    def directions(self) -> list[str]:
        return ["maximize" if name == "top1" else "minimize" for name in self.objective_names]

    @property
    def sampler_name(self) -> str:
        if self.sampler != "auto":
            return self.sampler
        return "nsga2" if len(self.objective_names) > 1 else "tpe"


class SearchRecipe(Recipe):
    """A recipe whose `search:` section is validated: what `greencompress search` (and `run`, `validate`) load."""

    search: SearchSpec | None = None

    @model_validator(mode="after")
    def _budget_is_measurable(self) -> SearchRecipe:
        if self.search is not None:
            self._dimensions_fit_the_task(self.search)
        if self.search is not None and self.data.kind == "synthetic":
            raise ValueError("search: the budget is an accuracy drop, which synthetic data cannot measure")
        if self.search is not None:
            self._space_fits_the_model(self.search.space)
        if self.search is not None and any(getattr(stage.config, "round_to", None) == "auto" for stage in self.stages):
            raise ValueError(
                "stages.prune.round_to: auto times roundings in one run; a search draws them "
                "(search.space.round_to, timed by its proxy): give the base recipe a number"
            )
        return self

    def _dimensions_fit_the_task(self, spec: SearchSpec) -> None:
        """A language model's trials vary its structure and weight grid; a classifier's or encoder's do not take its
        weight grid, and a language model takes none of their settings (it is not fine-tuned on labels, its int8 is
        the weight grid)."""
        generating = self.task.workload_kind == "generate"
        takes = GENERATION_DIMENSIONS if generating else set(DIMENSION_SETTINGS) - {"bits", "group_size"} | {"runtime"}
        dimensions = spec.space.dimensions() + (["runtime"] if spec.space.runtime else [])
        if wrong := [name for name in dimensions if name not in takes]:
            raise ValueError(
                f"search.space.{wrong[0]}: not a setting a {self.task.name} model's search varies (it varies "
                f"{', '.join(sorted(takes))})"
            )
        if generating:
            spec._quality = "perplexity_increase"
        if spec.objectives.prefill and not generating:
            raise ValueError("search.objectives.prefill: the prefill's J per prompt token is a language model's")
        if spec.budget.max_perplexity_increase is not None and not generating:
            raise ValueError(
                f"search.budget.max_perplexity_increase: judges a language model; a {self.task.name} model's budget "
                "is max_accuracy_drop"
            )

    def _space_fits_the_model(self, space: SearchSpace) -> None:
        """Dimensions the model cannot take are refused here, not trial by trial: each drawn value is checked by the
        technique whose setting it is, as that technique checks a recipe's stage."""
        from greencompress.compress.technique import TECHNIQUES, NotForThisModel

        structure = self.task.structure(self.model)
        for dimension, (technique, field) in DIMENSION_SETTINGS.items():
            method = TECHNIQUES.get(technique)
            base = self.stage(technique) or method.config()
            for value in _drawn_values(getattr(space, dimension)):
                try:
                    method.check(base.model_copy(update={field: value}), structure)
                except NotForThisModel as error:
                    raise ValueError(f"search.space.{dimension}: {error}") from None

    def search_budget(self) -> QualityBudget:
        """What keeps a trial feasible: the task's primary metric within the search's budget."""
        budget = self.search.budget
        return quality_budget(
            self.task.primary_metric,
            budget.max_accuracy_drop,
            budget.min_embedding_cosine or self.gates.min_embedding_cosine,
            budget.min_neighbour_agreement or self.gates.min_neighbour_agreement,
            budget.max_perplexity_increase
            if budget.max_perplexity_increase is not None
            else self.gates.max_perplexity_increase,
        )

    def scored_sequence_length(self) -> int | None:
        """The sequence length trials are scored (and measured) at; None for models that take images."""
        if not self.task.takes_tokens:
            return None
        return self.search.objectives.sequence_length or max(self.benchmark.sequence_lengths)


# Each dimension of the space is a setting of one technique's config: (technique, field).
DIMENSION_SETTINGS = {
    "prune_ratio": ("prune", "ratio"),
    "target_macs": ("prune", "target_macs"),
    "heads": ("prune", "heads"),
    "ffn": ("prune", "ffn"),
    "importance": ("prune", "importance"),
    "round_to": ("prune", "round_to"),
    "layers": ("prune", "ignore"),
    "depth": ("depth", "remove"),
    "finetune_epochs": ("finetune", "epochs"),
    "calibration_method": ("quantize", "calibration_method"),
    "qat": ("quantize", "qat"),
    "bits": ("weight_only", "bits"),
    "group_size": ("weight_only", "group_size"),
}
# What a causal LM's search varies: layers removed, the share of FFN neurons and of key/value groups removed (with
# the importance that ranks them), and its weight grid (the last `weight_only` stage's).
GENERATION_DIMENSIONS = {"depth", "heads", "ffn", "importance", "bits", "group_size"}


def _drawn_values(dimension) -> list:
    """The values a trial may draw for a dimension, as its technique's config holds them (a range: its ends)."""
    if dimension is None:
        return []
    if isinstance(dimension, Range):
        return [dimension.low, dimension.high]
    values = []
    for choice in dimension:
        if choice is True:
            values.append(FinetuneConfig())  # qat on: a fine-tuning section
        elif choice not in (False, 0):  # off, none removed: nothing to check
            values.append(choice)
    return values

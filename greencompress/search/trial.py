"""A trial: a point of the space written into the base recipe, run as an ordinary run, and read back.

Each trial's recipe is a complete recipe without the `search:` section, saved in its run folder
like any run's, so every point of the front can be re-run with `greencompress run` and inspected.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

from greencompress.core.errors import GreencompressError
from greencompress.pipeline.recipe import Recipe
from greencompress.search.spec import Range, SearchSpec

# Which stage of the base recipe each dimension of the space changes.
STAGE_OF = {
    "prune_ratio": "prune",
    "target_macs": "prune",
    "heads": "prune",
    "ffn": "prune",
    "importance": "prune",
    "round_to": "prune",
    "layers": "prune",
    "finetune_epochs": "finetune",
    "calibration_method": "quantize",
    "qat": "quantize",
    "bits": "weight_only",
    "group_size": "weight_only",
}
# A language model's trial adds or takes out these stages as its draw needs them (depth too, as for any model).
ADDED_WHEN_DRAWN = {"heads": "prune", "ffn": "prune"}


def sample(space, trial) -> dict[str, Any]:
    """Draw one value for each dimension of `space` from an Optuna trial (choices as their index-free values)."""
    params = {}
    for name in space.dimensions():
        choices = getattr(space, name)
        if isinstance(choices, Range):
            params[name] = trial.suggest_float(name, choices.low, choices.high, step=choices.step)
        elif name == "layers":  # lists are not valid Optuna choices: draw the index, record the list
            index = trial.suggest_categorical("layers", list(range(len(choices))))
            params[name] = list(choices[index])
        else:
            params[name] = trial.suggest_categorical(name, list(choices))
    return params


def missing_stages(recipe: Recipe, spec: SearchSpec) -> list[str]:
    """Dimensions of the space whose stage the base recipe lacks, as 'dimension needs a stage' messages."""
    present = {stage.technique for stage in recipe.stages}
    added = ADDED_WHEN_DRAWN if recipe.task.workload_kind == "generate" else {}
    return [
        f"search.space.{name} varies stages.{STAGE_OF[name]}, which the recipe does not have"
        for name in spec.space.dimensions()
        if name in STAGE_OF and STAGE_OF[name] not in present and name not in added
    ]


def trial_recipe(
    base: dict,
    spec: SearchSpec,
    params: dict[str, Any],
    name: str,
    sequence_length: int | None = None,
    generating: bool = False,
) -> dict:
    """The base recipe (as plain data, `search` dropped) with `params` written into its stages and benchmark.

    `sequence_length`: a text transformer's trials measure that one length, the one they are scored at (a language
    model's: its prompt's tokens). `generating`: the base recipe is a language model's (_generation_trial)."""
    recipe = copy.deepcopy(base)
    recipe.pop("search", None)
    recipe["name"] = name
    if generating:
        return _generation_trial(recipe, spec, params, sequence_length)
    stages = {next(iter(stage)): next(iter(stage.values())) for stage in recipe["stages"]}
    prune, finetune, quantize = stages.get("prune"), stages.get("finetune"), stages.get("quantize")
    if "prune_ratio" in params:
        prune.update(ratio=round(params["prune_ratio"], 4), target_macs=None)
    if "target_macs" in params:
        prune.update(target_macs=round(params["target_macs"], 4), ratio=None)
    if "heads" in params or "ffn" in params:  # a transformer: the share not drawn keeps the base recipe's
        heads, ffn = _encoder_shares(prune)
        prune.update(heads=round(params.get("heads", heads), 4), ffn=round(params.get("ffn", ffn), 4), ratio=None)
    if "importance" in params:
        prune["importance"] = params["importance"]
    if "round_to" in params:
        prune["round_to"] = params["round_to"] if params["round_to"] > 1 else None  # 1: any channel count
    if "layers" in params:
        prune["ignore"] = params["layers"] + [layer for layer in base_ignore(base) if layer not in params["layers"]]
    if "depth" in params:
        _set_depth(recipe["stages"], params["depth"])
    if "finetune_epochs" in params:
        finetune["epochs"] = params["finetune_epochs"]
    if "calibration_method" in params:
        quantize["calibration_method"] = params["calibration_method"]
    if "qat" in params:
        quantize["qat"] = spec.qat_settings.model_dump(mode="json") if params["qat"] else None
    benchmark = recipe.setdefault("benchmark", {})
    benchmark["batch_sizes"] = [spec.objectives.batch_size]
    if sequence_length is not None:
        benchmark["sequence_lengths"] = [sequence_length]
    benchmark["bf16"] = False  # the candidate is served in int8 or FP32; bf16 artifacts would only add windows
    if spec.space.runtime:  # every serving runtime measured in the same rounds (ONNX Runtime is always listed)
        benchmark["runtimes"] = list(dict.fromkeys(["onnxruntime", *spec.space.runtime]))
    return recipe


def _generation_trial(recipe: dict, spec: SearchSpec, params: dict[str, Any], prompt_tokens: int | None) -> dict:
    """A language model's trial makes one candidate: the structural stages as drawn (depth and prune added where the
    draw removes something and taken out where it removes nothing; distillation only when something was removed, as
    there is nothing to heal otherwise), then the base recipe's last stage after them (a weight grid, its bits and
    group size as drawn). Only the original on PyTorch (the anchor) and the candidate are measured, at one shape."""
    stages = recipe["stages"]
    if "depth" in params:
        _set_depth(stages, params["depth"])
        for stage in stages:
            # Block Influence: one forward pass over the calibration windows; the output change bypasses each layer
            # in turn, minutes per layer for SmolLM2 on 2 cores.
            if "depth" in stage:
                stage["depth"].setdefault("importance", "similarity")
    if {"heads", "ffn", "importance"} & set(params):
        _set_prune(stages, params)
    structural = [s for s in stages if next(iter(s)) in ("depth", "prune", "distill")]
    if not any(next(iter(s)) in ("depth", "prune") for s in structural):
        structural = [s for s in structural if "distill" not in s]
    last = [s for s in stages if next(iter(s)) not in ("depth", "prune", "distill")][-1:]
    recipe["stages"] = structural + last
    grid = next((s["weight_only"] for s in last if "weight_only" in s), None)
    if grid is not None:
        if "bits" in params:
            grid["bits"] = params["bits"]
            if params["bits"] == 8:  # every layer is int8 already
                grid.pop("int8_layers", None)
        if "group_size" in params:
            grid["group_size"] = params["group_size"]
    benchmark = recipe.setdefault("benchmark", {})
    benchmark["batch_sizes"] = [spec.objectives.batch_size]
    if prompt_tokens is not None:
        benchmark["sequence_lengths"] = [prompt_tokens]
    benchmark["measure"] = "last"
    return recipe


def _set_prune(stages: list[dict], params: dict[str, Any]) -> None:
    """A language model's `prune` stage removes the drawn shares of FFN neurons and key/value groups: updated, added
    after depth, or (both shares 0) taken out."""
    index = next((i for i, stage in enumerate(stages) if "prune" in stage), None)
    prune = dict(stages[index]["prune"] or {}) if index is not None else {}
    heads, ffn = _encoder_shares(prune) if index is not None else (0.0, 0.0)
    heads, ffn = round(params.get("heads", heads), 4), round(params.get("ffn", ffn), 4)
    if "importance" in params:
        prune["importance"] = params["importance"]
    if index is not None:
        stages.pop(index)
    if heads == 0 and ffn == 0:
        return
    prune.update(heads=heads, ffn=ffn, ratio=None)
    # A stage the draw adds ranks by measured contribution: weight norms rank a decoder's FFN neurons badly
    # (SmolLM2, a quarter removed, unhealed: +77% perplexity by activation, +762,671% by l2; docs/BENCHMARKS.md).
    prune.setdefault("importance", "activation")
    after_depth = next((i + 1 for i, stage in enumerate(stages) if "depth" in stage), 0)
    stages.insert(index if index is not None else after_depth, {"prune": prune})


def _set_depth(stages: list[dict], remove: int) -> None:
    """The trial's `depth` stage removes `remove` layers or blocks: updated, added first, or (for 0) taken out."""
    index = next((i for i, stage in enumerate(stages) if "depth" in stage), None)
    if remove == 0:
        if index is not None:
            stages.pop(index)
    elif index is None:
        stages.insert(0, {"depth": {"remove": remove}})
    else:
        stages[index]["depth"] = {**(stages[index]["depth"] or {}), "remove": remove}


def _encoder_shares(prune: dict) -> tuple[float, float]:
    """(heads, FFN) shares a prune stage's settings remove from a transformer, as PruneConfig.transformer_ratios reads
    them: `ratio` for both unless either is set."""
    if prune.get("heads") is None and prune.get("ffn") is None:
        ratio = prune.get("ratio") or 0.5
        return ratio, ratio
    return prune.get("heads") or 0.0, prune.get("ffn") or 0.0


def base_ignore(base: dict) -> list[str]:
    """The layers the base recipe never prunes (its explicit `ignore`), kept in every trial."""
    for stage in base["stages"]:
        if "prune" in stage:
            return list(stage["prune"].get("ignore") or [])
    return []


@dataclass(frozen=True)
class Outcome:
    """What a finished trial measured: the candidate on its runtime, paired with references of the same rounds.

    Trials are ranked by ratios, never by absolute joules: the same artifact's J/inference moved 30% between two
    searches on a shared machine while its ratio to a model measured in the same interleaved rounds held. The
    reference that ranks is the *anchor*, one model every trial measures: the original FP32 model on ONNX Runtime
    (on the candidate's runtime where ONNX Runtime is not measured). `baseline` (the unpruned model at the
    candidate's precision on its runtime) says what the pruning bought there.

    A language model's trial (`unit`: generated token) reads the same way: energy is decode J per generated token,
    latency the time per output token, the anchor the original FP32 model on PyTorch (which every such run
    measures), quality its perplexity increase over the original's; it has no top-1 and no unpruned twin.
    """

    candidate: str  # artifact name in the trial's report
    baseline: str  # the unpruned model at the candidate's precision on the same runtime
    runtime: str
    batch_size: int
    top1: float | None  # percent (None: a language model)
    baseline_top1: float | None  # percent, the unpruned model at the candidate's precision
    reference_top1: float | None  # percent, the unpruned FP32 model on the runtime: what the budget is counted against
    joules_per_inference: float  # absolute: shown, never ranked (per generated token for a language model)
    joules_ci95: float
    latency_p50_ms: float
    size_bytes: int
    energy_method: str
    measured: bool
    latency_ratio: dict | None  # paired interval against `baseline`: {ratio, ci95, rounds, within_noise}
    energy_ratio: dict | None
    anchor: str | None = None  # the model every trial measures; None in studies written before anchors
    anchor_energy_ratio: dict | None = None  # paired J/inference interval against `anchor`: what ranks trials
    anchor_latency_ratio: dict | None = None
    sequence_length: int | None = None  # a text transformer's: tokens per input at which it was scored
    # A sentence embedder's candidate against the original FP32 model's embeddings (what its budget judges).
    embedding_cosine: float | None = None
    neighbour_agreement: float | None = None
    recall_at_10: float | None = None
    unit: str = "inference"  # what joules_per_inference is per: "generated token" for a language model
    # A language model's: its perplexity, the original's, the increase in percent (the budget's metric), its greedy
    # continuations' agreement with the original's; the prefill's J per prompt token and its paired ratio to the
    # anchor; the structure its model lacks; the served file (a GenAI folder) or, on PyTorch, the model's folder.
    perplexity: float | None = None
    reference_perplexity: float | None = None
    perplexity_increase: float | None = None
    continuation_agreement: float | None = None
    joules_per_prompt_token: float | None = None
    time_to_first_token_ms: float | None = None
    anchor_prefill_energy_ratio: dict | None = None
    structure_removed: tuple[str, ...] = ()
    path: str | None = None

    def objectives(self, spec: SearchSpec) -> list[float]:
        return [self.objective(name) for name in spec.objective_names]

    def objective(self, name: str) -> float:
        if name == "energy_ratio":
            return float(self.anchor_energy_ratio["ratio"]) if self.anchor_energy_ratio else float("inf")
        if name == "latency_ratio":
            return float(self.anchor_latency_ratio["ratio"]) if self.anchor_latency_ratio else float("inf")
        if name == "prefill_energy_ratio":
            return (
                float(self.anchor_prefill_energy_ratio["ratio"]) if self.anchor_prefill_energy_ratio else float("inf")
            )
        return float(getattr(self, name))

    @property
    def accuracy_drop(self) -> float | None:
        return None if self.top1 is None else self.reference_top1 - self.top1

    @property
    def quality_excess_args(self) -> dict:
        """What QualityBudget.excess reads of this outcome, for whichever metric the task is judged by."""
        return {
            "top1_drop_points": self.accuracy_drop,
            "embedding_cosine": self.embedding_cosine,
            "neighbour_agreement": self.neighbour_agreement,
            "perplexity_increase": self.perplexity_increase,
        }


def read_outcome(report, runtimes: list[str], batch_size: int, sequence_length: int | None = None) -> Outcome:
    """The trial's candidate on the cheapest of `runtimes` at `batch_size` (and `sequence_length`: a text
    transformer's) (lowest J/inference against the anchor, all measured in the same interleaved rounds), with its
    paired comparisons to the anchor and to the unpruned model on that runtime."""
    measured = [
        runtime
        for runtime in runtimes
        if any(r.artifact.runtime == runtime and not r.artifact.is_original_model for r in report.artifacts)
    ]
    if not measured:
        raise GreencompressError(f"trial {report.name}: no compressed artifact on {', '.join(runtimes)} in its report")
    outcomes = [_outcome_on(report, runtime, batch_size, sequence_length) for runtime in measured]
    return min(outcomes, key=lambda outcome: outcome.objective("energy_ratio"))


def _original_fp32(report, runtime: str):
    return next(
        (
            r
            for r in report.artifacts
            if r.artifact.runtime == runtime
            and r.artifact.is_original_model
            and r.artifact.precision == "fp32"
            and not r.artifact.file_techniques
        ),
        None,
    )


def _outcome_on(report, runtime: str, batch_size: int, sequence_length: int | None = None) -> Outcome:
    """The trial's candidate on `runtime`: its most compressed artifact, paired with the anchor and the unpruned one."""
    from greencompress.report.schema import compare_pair, interval_to_dict

    results = {result.artifact.name: result for result in report.artifacts}
    on_runtime = [r for r in report.artifacts if r.artifact.runtime == runtime and not r.artifact.is_original_model]
    # The last made is the most compressed (model techniques, then file techniques such as quantize).
    candidate = max(on_runtime, key=lambda r: (len(r.artifact.techniques), r.artifact.precision != "fp32"))
    bench = candidate.at_batch(batch_size, sequence_length)
    comparison = next(
        (
            c
            for c in report.comparisons
            if c.candidate == candidate.artifact.name
            and c.batch_size == batch_size
            and c.sequence_length == sequence_length
            and results[c.baseline].artifact.precision == candidate.artifact.precision
        ),
        None,
    )
    reference = _original_fp32(report, runtime)
    baseline = results[comparison.baseline] if comparison else reference
    anchor = _original_fp32(report, "onnxruntime") or reference
    paired = (
        compare_pair(anchor, candidate, batch_size, sequence_length)
        if anchor.at_batch(batch_size, sequence_length) is not None
        else None
    )
    return Outcome(
        candidate=candidate.artifact.name,
        baseline=baseline.artifact.name,
        runtime=runtime,
        batch_size=batch_size,
        top1=100 * candidate.accuracy.top1,
        baseline_top1=100 * baseline.accuracy.top1,
        reference_top1=100 * reference.accuracy.top1,
        joules_per_inference=bench.joules_per_inference,
        joules_ci95=bench.energy.ci95_j,
        latency_p50_ms=bench.latency.p50_ms,
        size_bytes=candidate.artifact.size_bytes or 0,
        energy_method=bench.energy.method,
        measured=bench.energy.measured,
        latency_ratio=interval_to_dict(comparison.latency_p50) if comparison else None,
        energy_ratio=interval_to_dict(comparison.joules_per_inference) if comparison else None,
        anchor=anchor.artifact.name,
        anchor_energy_ratio=interval_to_dict(paired.joules_per_inference) if paired else None,
        anchor_latency_ratio=interval_to_dict(paired.latency_p50) if paired else None,
        sequence_length=sequence_length,
        embedding_cosine=candidate.accuracy.embedding_cosine,
        neighbour_agreement=candidate.accuracy.neighbour_agreement,
        recall_at_10=candidate.accuracy.recall_at_10,
    )


ANCHOR_LM = "fp32@torch"  # the original FP32 model on PyTorch: every language model run measures it


def read_generation_outcome(report, batch_size: int, prompt_tokens: int) -> Outcome:
    """A language model trial's candidate (the last model its stages made) on the runtime where its decode J per
    generated token is lowest against the anchor, from the paired ratios of its run's interleaved rounds."""
    shape = next(
        (s for s in report.shapes if s.shape["batch_size"] == batch_size and s.shape["prompt_tokens"] == prompt_tokens),
        None,
    )
    if shape is None:
        raise GreencompressError(f"trial {report.recipe}: not measured at batch {batch_size}, prompt {prompt_tokens}")
    candidates = [a for a in report.artifacts if a.model != "fp32" and a.measured_speed and a.name in shape.results]
    if not candidates:
        raise GreencompressError(f"trial {report.recipe}: no compressed model measured for speed in its report")
    candidate = min(candidates, key=lambda a: _versus_anchor(shape, a.name, "joules_per_generated_token")["ratio"])
    figures, anchor = shape.results[candidate.name], next(a for a in report.artifacts if a.name == ANCHOR_LM)
    return Outcome(
        candidate=candidate.name,
        baseline=ANCHOR_LM,
        runtime=candidate.runtime,
        batch_size=batch_size,
        top1=None,
        baseline_top1=None,
        reference_top1=None,
        joules_per_inference=figures["joules_per_generated_token"],
        joules_ci95=0.0,  # ranked by the paired ratio, whose interval is kept
        latency_p50_ms=figures["time_per_output_token_ms"]["p50"],
        size_bytes=candidate.size_bytes or 0,
        energy_method=figures["energy_method"],
        measured=figures["energy_measured"],
        latency_ratio=None,
        energy_ratio=None,
        anchor=ANCHOR_LM,
        anchor_energy_ratio=_versus_anchor(shape, candidate.name, "joules_per_generated_token"),
        anchor_latency_ratio=_versus_anchor(shape, candidate.name, "time_per_output_token_ms"),
        sequence_length=prompt_tokens,
        unit="generated token",
        perplexity=candidate.perplexity,
        reference_perplexity=anchor.perplexity,
        perplexity_increase=100 * candidate.perplexity_change,
        continuation_agreement=candidate.continuation_agreement,
        joules_per_prompt_token=figures["joules_per_prompt_token"],
        time_to_first_token_ms=figures["time_to_first_token_ms"],
        anchor_prefill_energy_ratio=_versus_anchor(shape, candidate.name, "joules_per_prompt_token"),
        structure_removed=tuple(candidate.structure_removed),
        path=candidate.stage.get("folder") if candidate.runtime == "torch" else candidate.path,
    )


def _versus_anchor(shape, name: str, figure: str) -> dict:
    """The paired interval of `name`'s `figure` against the anchor's in the run's rounds, as Outcome keeps it."""
    from greencompress.measure.stats import RatioInterval
    from greencompress.report.schema import interval_to_dict

    saved = shape.ratios.get(name, {}).get(f"vs_torch_fp32:{figure}")
    if saved is None:
        raise GreencompressError(f"{name}: no paired {figure} against {ANCHOR_LM} in its run (too few rounds?)")
    return interval_to_dict(RatioInterval(**saved))


def recipe_name(base_name: str, number: int) -> str:
    return f"{base_name}-trial{number:03d}"


def host_name() -> str:
    """This machine's name, recorded with each trial's process id to tell later whether its worker still lives."""
    import socket

    return socket.gethostname()


def worker_gone(trial_attrs: dict) -> str | None:
    """Why a RUNNING trial's worker is known dead (its process on this host is gone), or None (alive, or elsewhere)."""
    pid, host = trial_attrs.get("pid"), trial_attrs.get("host")
    if pid is None or host != host_name() or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)  # signal 0: is there such a process?
    except ProcessLookupError:
        return f"its worker (pid {pid} on {host}) was killed or crashed before finishing it"
    except PermissionError:
        pass  # it exists, owned by someone else
    return None

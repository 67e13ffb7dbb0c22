"""A text-generation run: the causal LM and its compressed versions, judged by perplexity, measured per token.

Order: preflight (meter, model and text files), the model and its text (models/corpus.py); the stages in the
recipe's order: structural ones change the model the later stages start from (`depth` removes decoder layers:
compress/decoder_surgery.py; `prune` FFN neurons and key/value groups: compress/decoder_prune.py; `distill` heals:
compress/distill.py), each saved as a folder plain transformers loads and reloaded on `run --resume`; each
`weight_only` stage rounds a copy of the model so far on calibration text (compress/weight_only.py), each
`dynamic_int8` stage makes a W8A8 copy on PyTorch's int8 kernels (compress/dynamic_int8.py); every model is built
for each generation runtime the recipe lists that can run it (PyTorch eager with its KV cache for the FP32 and W8A8
models; ONNX Runtime GenAI for FP32 and weight-only models: runtimes/genai.py; OpenVINO on the file that builder
wrote: runtimes/openvino_generate.py); perplexity and next-token agreement
with the FP32 model are measured on the file each runtime runs, on evaluation windows, and greedy continuations on
the prompt set; then all generators are measured together, prefill and decode apart, in interleaved rounds on
never-repeated prompts (measure/generation.py), and set against the FP32 model on PyTorch, the fastest FP32 runtime
and its dense twin (a model with structure removed) by paired ratios. A weight-only model in PyTorch computes on
FP32 kernels: its quality is measured there, its speed is not claimed.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from greencompress.compress import distributed
from greencompress.compress.decoder_prune import prune_decoder
from greencompress.compress.decoder_surgery import choose_layers, decoder_layers, remove_decoder_layers
from greencompress.compress.distill import DistillConfig, distill
from greencompress.compress.dynamic_int8 import quantize_dynamic_int8
from greencompress.compress.weight_only import quantize_weights
from greencompress.core.errors import RecipeError
from greencompress.core.hardware import cpu_info
from greencompress.measure.generation import (
    GenerationResult,
    GenerationShape,
    TorchGenerator,
    benchmark_generation,
    paired,
)
from greencompress.measure.memory import MEMORY_AS_IS, keep_freed_memory
from greencompress.measure.perplexity import Perplexity, perplexity, torch_logits
from greencompress.models.corpus import CONTINUATION_TOKENS, Corpus, load_corpus
from greencompress.models.tasks.text_generation import PERPLEXITY_WINDOW
from greencompress.pipeline.folder import save_recipe
from greencompress.pipeline.prepare import preflight
from greencompress.pipeline.recipe import Recipe
from greencompress.pipeline.stages import StageStore, stage_key
from greencompress.report.generation import (
    GeneratedArtifact,
    GenerationReport,
    ShapeResult,
    perplexity_gates,
    write_generation_reports,
)
from greencompress.runtimes import RUNTIMES, genai, openvino_generate
from greencompress.runtimes.pytorch import set_threads

log = logging.getLogger(__name__)

# What a text-generation run can measure generating. OpenVINO reads the GenAI builder's file: it needs the builder.
GENERATION_RUNTIMES = ("torch", genai.RUNTIME.name, openvino_generate.RUNTIME_NAME)
GENAI_FOR = {"onnxruntime": "onnxruntime-genai"}  # a runtime and the loop it generates text through
PERPLEXITY_STRIDE = 128


@dataclass
class _Model:
    name: str  # "fp32", or the stage's variant after the structural stages' (`depth6-int4-g64-asym-rtn`)
    module: torch.nn.Module
    stage: dict = field(default_factory=dict)  # what the stage did (without its grids)
    checkpoint: genai.QuantizedCheckpoint | None = None
    # Why ONNX Runtime GenAI cannot run it, where it cannot (no grouped grid, or no MatMulNBits form at all).
    not_for_genai: str | None = None
    # What PyTorch computes it in where that is the model's own (FP32 with fewer layers, int8 W8A8): its speed there
    # is measured. None: FP32 kernels with rounded weights, quality only.
    torch_precision: str | None = None
    # A folder of its FP32 weights that plain transformers loads (the original's, or a structural stage's own);
    # the next stages start from it.
    folder: Path | None = None
    # The original's decoder layer each of its layers came from (depth removes some; the others keep theirs).
    origin: tuple[int, ...] = ()
    removed: tuple[str, ...] = ()  # the structure it lacks against the original, stage by stage


def runtimes_for(recipe: Recipe) -> tuple[list[str], dict[str, str]]:
    """The generation runtimes a run measures (PyTorch eager always), and why each other listed runtime is left out.
    ONNX Runtime generates through its GenAI loop: `onnxruntime` (which `runtimes: auto` always lists) stands for
    `onnxruntime-genai` here."""
    listed = ["torch", *(GENAI_FOR.get(name, name) for name in recipe.benchmark.runtimes)]
    chosen, left = [], {}
    for name in dict.fromkeys(listed):
        if name not in GENERATION_RUNTIMES:
            left[name] = "does not generate text in greencompress yet"
        elif name != "torch" and (missing := _unavailable(name)):
            left[name] = missing
        else:
            chosen.append(name)
    return chosen, left


def _unavailable(runtime: str) -> str | None:
    """Why a generation runtime cannot run here: its package, and for OpenVINO the builder whose file it reads."""
    missing = genai.RUNTIME.unavailable()
    if runtime == openvino_generate.RUNTIME_NAME:
        own = RUNTIMES.get(runtime).unavailable()
        return own or (missing and f"it reads the file ONNX Runtime GenAI's model builder writes, and {missing}")
    return missing


def run_generation(recipe: Recipe, run_dir: Path, recipe_path: Path | None = None, progress=None) -> GenerationReport:
    """Execute a text-generation recipe into `run_dir`; writes report.json and report.md and returns the report."""
    started = time.perf_counter()
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    save_recipe(recipe, run_dir, recipe_path)
    torch.manual_seed(recipe.seed)
    set_threads(recipe.benchmark.threads)
    threads = recipe.benchmark.threads
    _, meter, reason = preflight(recipe)
    runtimes, left_out = runtimes_for(recipe)
    task = recipe.task
    log.info("stage load: causal LM (%s) and its text", recipe.model.path)
    loaded = task.load(recipe.model, progress)
    folder = Path(loaded.provenance["folder"])
    context = getattr(loaded.module.config, "max_position_embeddings", None)
    corpus = load_corpus(recipe.data, loaded.tokenizer, PERPLEXITY_WINDOW, context)
    log.info(
        "text: %d evaluation tokens, %d calibration tokens (%s)",
        len(corpus.evaluation),
        len(corpus.calibration),
        corpus.description,
    )
    # Structural stages (depth, prune, distill) change the model the stages after them start from; weight-only and W8A8
    # stages make versions of it. Each stage's model is measured.
    layers = len(decoder_layers(loaded.module)[2])
    base = _Model("fp32", loaded.module, torch_precision="fp32", folder=folder, origin=tuple(range(layers)))
    models = [base]
    inputs = _StageInputs(corpus, run_dir, loaded, recipe.seed, StageStore(run_dir, None), _source_key(recipe))
    twins = {}  # a model with structure removed -> the dense one at its precision (ShapeResult.dense_twins)
    for index, stage in enumerate(recipe.stages):
        made = _made(index, stage, base, inputs)
        if any(model.name == made.name for model in models):
            raise RecipeError(f"stages: two stages make the same model, {made.name}: change one's settings")
        models.append(made)
        if stage.technique in STRUCTURAL:
            twins[made.name], base = "fp32", made
        elif base.name != "fp32":  # the same stage applied to the original, if the recipe made that too
            twins[made.name] = made.name.removeprefix(f"{base.name}-")

    windows = recipe.data.eval_samples or 8
    reference = perplexity(
        torch_logits(loaded.module), corpus.evaluation, PERPLEXITY_WINDOW, PERPLEXITY_STRIDE, windows
    )
    log.info("fp32 (PyTorch): perplexity %.3f on %d tokens", reference.perplexity, reference.tokens)
    artifacts: list[GeneratedArtifact] = []
    generators, built, genai_builds = {}, {}, {}
    max_new_tokens = max(recipe.benchmark.new_tokens, CONTINUATION_TOKENS) + 1
    for model in models:
        for runtime in runtimes:
            name = f"{model.name}@{runtime}"
            if recipe.benchmark.measure == "last" and not _measured_when_last(model, runtime, models):
                continue
            path = size = note = None
            if runtime == "torch":
                measured = reference if model is models[0] else _perplexity(torch_logits(model.module), corpus, windows)
                if model.torch_precision is not None:  # its own kernels: its speed is measured
                    generators[name] = TorchGenerator(model.module)
                else:
                    note = "FP32 kernels with rounded weights: quality only, its speed is an FP32 model's"
            elif runtime in left_out:
                continue
            elif model.not_for_genai is not None:
                log.info("%s: left out: %s", name, model.not_for_genai)
                continue
            else:
                try:
                    target, build = _built_for_genai(model, folder, run_dir, threads, genai_builds)
                except genai.NotBuildable as why:
                    log.info("%s: left out: %s", runtime, why)
                    left_out[runtime] = str(why)
                    continue
                if runtime == genai.RUNTIME.name:
                    measured = _perplexity(genai.onnx_logits(target, threads), corpus, windows)
                    generators[name] = genai.GenAIGenerator(target, max_new_tokens)
                else:
                    log.info("compiling %s with OpenVINO", name)
                    generator = openvino_generate.OpenVINOGenerator(target, threads)
                    build = {**build, "runtime": openvino_generate.settings(generator.decoder)}
                    measured = _perplexity(generator.scorer(), corpus, windows)
                    generators[name] = generator
                built[name] = build
                path, size = str(target), build["bytes"]
                if model.checkpoint is not None and runtime == genai.RUNTIME.name:
                    note = f"MatMulNBits accuracy_level {build['accuracy_level']}"
                elif model.checkpoint is not None:
                    group = build["runtime"]["dynamic_quantization_group_size"]
                    note = f"the MatMulNBits codes; activations quantized to int8 in groups of {group} on the fly"
            change = measured.perplexity / reference.perplexity - 1
            log.info("%s: perplexity %.3f (%+.2f%%)", name, measured.perplexity, 100 * change)
            artifacts.append(
                GeneratedArtifact(
                    name=name,
                    model=model.name,
                    runtime=runtime,
                    precision=_precision(model, runtime),
                    path=path,
                    size_bytes=size,
                    perplexity=measured.perplexity,
                    perplexity_change=change,
                    next_token_agreement=measured.agreement(reference),
                    continuation_agreement=None,
                    measured_speed=name in generators,
                    stage=model.stage,
                    note=note,
                    structure_removed=model.removed,
                )
            )
    continuation = _continuations(generators, corpus)
    artifacts = [replace(a, continuation_agreement=continuation.get(a.name)) for a in artifacts]
    shapes = []
    memory = keep_freed_memory() or MEMORY_AS_IS  # benchmark_generation keeps it too; the report says which held
    workload = [(b, t) for b in recipe.benchmark.batch_sizes for t in recipe.benchmark.sequence_lengths]
    for number, (batch_size, prompt_tokens) in enumerate(workload):
        shape = GenerationShape(batch_size, prompt_tokens, recipe.benchmark.new_tokens)
        log.info(
            "measuring generation: batch %d, prompt %d tokens, %d new tokens, %d generators",
            batch_size,
            prompt_tokens,
            shape.new_tokens,
            len(generators),
        )

        def prompt(n: int, tokens=prompt_tokens, batch=batch_size, first=1000 * number) -> np.ndarray:
            # each shape's queries start at their own index; within one, no two prompts are the same
            return corpus.prompt(first + n, tokens, batch)

        fitting, unfit = _generators_for(shape, generators)
        results = benchmark_generation(fitting, prompt, shape, meter, rounds=recipe.benchmark.windows)
        shapes.append(replace(_shape_result(shape, results, twins), left_out=unfit))
    budget = recipe.gates.max_perplexity_increase
    report = GenerationReport(
        recipe=recipe.name,
        created_utc=created,
        model=loaded.provenance,
        corpus=corpus.description,
        continuations=f"{CONTINUATION_TOKENS} greedy tokens after {corpus.prompts_description}",
        perplexity_setting={
            "window": PERPLEXITY_WINDOW,
            "stride": PERPLEXITY_STRIDE,
            "windows": reference.windows,
            "tokens": reference.tokens,
        },
        cpu=asdict(cpu_info()),
        threads=threads,
        energy={"method": meter.method, "why": reason, "measured": meter.describe().measured},
        runtimes=[runtime for runtime in runtimes if runtime not in left_out],
        runtimes_left_out=left_out,
        builds=built,
        artifacts=tuple(artifacts),
        shapes=tuple(shapes),
        budget_percent=budget,
        seconds=time.perf_counter() - started,
        gates=perplexity_gates(budget, tuple(artifacts)),
        memory=memory,
    )
    write_generation_reports(report, run_dir)
    return report


@dataclass(frozen=True)
class _StageInputs:
    """What every LM stage may read besides the model it starts from: the text, where to save, the original."""

    corpus: Corpus
    run_dir: Path
    loaded: object  # models/sources.LoadedModel: the original model (the teacher) and its tokenizer
    seed: int
    store: StageStore  # the structural stages' records, so that `run --resume` reloads what they saved
    source: str  # a key of what every stage's result depends on besides its own settings (model, text, seed)


def _source_key(recipe: Recipe) -> str:
    return stage_key(recipe.model.model_dump(mode="json"), recipe.data.model_dump(mode="json"), recipe.seed)


def _made(index: int, stage, base: _Model, inputs: _StageInputs) -> _Model:
    """The model stage `index` makes from `base`; a structural stage that finished before in this run folder (an
    interrupted run resumed) is reloaded from the folder it saved instead of made again."""
    if stage.technique not in STRUCTURAL:
        return replace(DECODER_STAGES[stage.technique](stage, base, inputs), removed=base.removed)
    record = f"lm-{index}-{stage.technique}"
    key = stage_key(inputs.source, stage.technique, stage.config.model_dump(mode="json"), base.name)
    done = inputs.store.finished(record, key)
    if done is not None and (inputs.run_dir / done["folder"] / "config.json").is_file():
        from transformers import AutoModelForCausalLM

        folder = inputs.run_dir / done["folder"]
        log.info("stage %s: reusing %s, saved by this run before it stopped", stage.technique, folder)
        module = AutoModelForCausalLM.from_pretrained(folder).eval()
        origin, removed = tuple(done["origin"]), tuple(done["removed"])
        return _Model(
            done["name"], module, done["stage"], torch_precision="fp32", folder=folder, origin=origin, removed=removed
        )
    made = DECODER_STAGES[stage.technique](stage, base, inputs)
    made = replace(made, removed=base.removed + _structure_removed(stage.technique, made.stage))
    folder = str(made.folder.relative_to(inputs.run_dir))
    inputs.store.save(
        record,
        key,
        {"name": made.name, "stage": made.stage, "folder": folder, "origin": made.origin, "removed": made.removed},
    )
    return made


def _structure_removed(technique: str, done: dict) -> tuple[str, ...]:
    """What a structural stage took away, in words (the report's front names it per model)."""
    if technique == "depth":
        return (f"decoder layers {done['before']} -> {done['after']} (removed {', '.join(done['removed'])})",)
    if technique == "prune":
        words = [f"FFN neurons {done['ffn_before']} -> {done['ffn_after']} per layer"]
        if done["kv_groups_after"] != done["kv_groups_before"]:
            words.append(
                f"key/value groups {done['kv_groups_before']} -> {done['kv_groups_after']} (query heads "
                f"{done['heads_before']} -> {done['heads_after']}) per layer"
            )
        return tuple(words) if done["ffn_after"] != done["ffn_before"] else tuple(words[1:])
    return ()


def _save(module: torch.nn.Module, name: str, inputs: _StageInputs) -> Path:
    """A structural stage's model as a folder plain transformers loads: `models/<name>/` in the run folder."""
    saved = inputs.run_dir / "models" / name
    module.save_pretrained(saved)
    inputs.loaded.tokenizer.save_pretrained(saved)
    return saved


def _named(base: _Model, variant: str) -> str:
    return variant if base.name == "fp32" else f"{base.name}-{variant}"


def _weight_only(stage, base: _Model, inputs: _StageInputs) -> _Model:
    config, corpus = stage.config, inputs.corpus
    name = _named(base, stage.method.variant(config))
    log.info("stage weight_only: %s on %d calibration windows", name, config.calibration_windows)
    module = copy.deepcopy(base.module)
    windows = [
        torch.from_numpy(ids)
        for ids in corpus.calibration_windows(config.calibration_windows, config.calibration_tokens)
    ]
    try:
        done = quantize_weights(module, config, windows)
    except ValueError as problem:  # a method this architecture cannot take (activation-aware scales need norms)
        raise RecipeError(f"stages: weight_only {name}: {problem}") from None
    checkpoint, not_for_genai = None, None
    if config.group_size is not None:
        checkpoint = genai.QuantizedCheckpoint(module, done["grids"], done.get("head"))
    else:
        not_for_genai = "MatMulNBits stores weights in groups; this grid has one scale per row"
    summary = {key: value for key, value in done.items() if key not in ("grids", "alphas", "head")}
    summary["head"] = f"rounded to {done['head'].grid.name}" if "head" in done else "kept as it is"
    if "alphas" in done:
        alphas = list(done["alphas"].values())
        summary["alphas"] = {str(a): alphas.count(a) for a in sorted(set(alphas))}
    summary["calibration_tokens"] = sum(w.shape[1] for w in windows)
    return _Model(name, module, summary, checkpoint, not_for_genai)


def _dynamic_int8(stage, base: _Model, inputs: _StageInputs) -> _Model:
    name = _named(base, stage.method.variant(stage.config))
    log.info("stage dynamic_int8: %s (PyTorch int8 kernels)", name)
    try:
        module, done = quantize_dynamic_int8(base.module, stage.config)
    except ValueError as problem:
        raise RecipeError(f"stages: dynamic_int8: {problem}") from None
    why = "dynamic int8 runs on PyTorch's int8 kernels here; the GenAI model builder has no W8A8 form"
    return _Model(name, module, done, not_for_genai=why, torch_precision="int8 W8A8 dynamic")


def _depth(stage, base: _Model, inputs: _StageInputs) -> _Model:
    """Whole decoder layers removed, the least important on calibration windows first; the result saved as a folder
    plain transformers loads (`models/<name>/` in the run folder), which the stages after it start from."""
    config = stage.config
    count = config.samples or DEPTH_WINDOWS  # a causal LM's samples are calibration windows of 256 tokens
    windows = [torch.from_numpy(ids) for ids in inputs.corpus.calibration_windows(count, PERPLEXITY_WINDOW)]
    module = copy.deepcopy(base.module).eval()
    before = len(decoder_layers(module)[2])
    log.info("stage depth: ranking %d decoder layers by %s on %d windows", before, config.importance, len(windows))
    chosen, measured = choose_layers(module, windows, config.remove, config.importance)
    kept = remove_decoder_layers(module, chosen)
    name = _named(base, f"depth{config.remove}")
    saved = _save(module, name, inputs)
    what = (
        "Block Influence (1 - cosine of each layer's input and output)"
        if config.importance == "similarity"
        else "KL divergence of the next-token distributions with the layer bypassed (greedy)"
    )
    log.info("depth: removed layers %s (%d -> %d), saved to %s", sorted(chosen), before, before - len(chosen), saved)
    summary = {
        "removed": [f"layer {index}" for index in sorted(chosen)],
        "before": before,
        "after": before - len(chosen),
        "importance": what,
        "ranking": [index for index in sorted(measured, key=measured.get)],
        "calibration_tokens": sum(w.shape[1] for w in windows),
        "folder": str(saved),
    }
    origin = tuple(base.origin[index] for index in kept)
    return _Model(name, module, summary, torch_precision="fp32", folder=saved, origin=origin)


def _prune(stage, base: _Model, inputs: _StageInputs) -> _Model:
    """FFN neurons and key/value groups removed, the same number from every layer, the least important on
    calibration windows first; saved like depth's."""
    config = stage.config
    groups, ffn = config.transformer_ratios
    # A kept FFN width that int4 groups of 32 and 64 divide, unless the recipe says otherwise.
    round_to = config.round_to or FFN_MULTIPLE
    windows = [torch.from_numpy(ids) for ids in inputs.corpus.calibration_windows(WIDTH_WINDOWS, PERPLEXITY_WINDOW)]
    module = copy.deepcopy(base.module).eval()
    log.info(
        "stage prune: scoring FFN neurons and key/value groups by %s on %d windows", config.importance, len(windows)
    )
    done = prune_decoder(module, groups, ffn, config.importance, windows, round_to, inputs.seed)
    variant = f"ffn{done.ffn_after}" + (f"-kv{done.kv_groups_after}" if groups > 0 else "")
    name = _named(base, variant)
    summary = {**asdict(done), "calibration_tokens": sum(w.shape[1] for w in windows)}
    summary["folder"] = str(_save(module, name, inputs))
    return _Model(name, module, summary, torch_precision="fp32", folder=Path(summary["folder"]), origin=base.origin)


def _distill(stage, base: _Model, inputs: _StageInputs) -> _Model:
    """The model so far healed by distillation from the original on calibration text, saved like depth's."""
    config = stage.config
    bf16 = config.precision == "bf16" or (config.precision == "auto" and cpu_info().has_bf16)
    name = _named(base, "distilled")
    log.info("stage distill: %s, %d tokens of calibration text (%s)", name, config.tokens, "bf16" if bf16 else "fp32")
    module = copy.deepcopy(base.module)
    checkpoint = inputs.run_dir / "models" / f"{name}.checkpoint.pt"  # every tenth of the steps, for --resume
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if distributed.world_size() > 1:  # the other torchrun ranks take their share of each step (serve_distillation)
        distributed.share(
            {
                "kind": "distill",
                "folder": str(base.folder),
                "config": config.model_dump(mode="json"),
                "seed": inputs.seed,
                "bf16": bf16,
                "origin": list(base.origin),
                "checkpoint": str(checkpoint),
            }
        )
    done = distill(
        module, inputs.loaded.module, inputs.corpus.calibration, config, inputs.seed, bf16, base.origin, checkpoint
    )
    done["folder"] = str(_save(module, name, inputs))
    return _Model(name, module, done, torch_precision="fp32", folder=Path(done["folder"]), origin=base.origin)


def serve_distillation(recipe: Recipe) -> None:
    """The loop of a torchrun rank other than 0 in a text-generation run: load the original and the text as rank 0
    does, then distil along with it whenever it distils (the student from the folder rank 0 names), until it is
    done. Writes nothing: the checkpoint and the healed model are rank 0's."""
    from transformers import AutoModelForCausalLM

    set_threads(recipe.benchmark.threads)
    loaded = recipe.task.load(recipe.model, None)
    context = getattr(loaded.module.config, "max_position_embeddings", None)
    corpus = load_corpus(recipe.data, loaded.tokenizer, PERPLEXITY_WINDOW, context)
    while (command := distributed.share(None))["kind"] != "done":
        student = AutoModelForCausalLM.from_pretrained(command["folder"]).float()
        config = DistillConfig(**command["config"])
        checkpoint = Path(command["checkpoint"])  # rank 0 reads and writes it; every rank resumes from its state
        seed, bf16, origin = command["seed"], command["bf16"], command["origin"]
        distill(student, loaded.module, corpus.calibration, config, seed, bf16, origin, checkpoint)


# How each technique a decoder takes makes its model (compress/: Technique.structures holds "decoder"); the
# structural ones change the model the later stages start from.
DECODER_STAGES = {
    "depth": _depth,
    "prune": _prune,
    "distill": _distill,
    "weight_only": _weight_only,
    "dynamic_int8": _dynamic_int8,
}
STRUCTURAL = ("depth", "prune", "distill")
DEPTH_WINDOWS = WIDTH_WINDOWS = 8  # calibration windows of 256 tokens that layers, neurons and groups are scored on
FFN_MULTIPLE = 64
# The figures each generator is paired on against its references (decode time and energy, prefill time and energy).
FIGURES_PAIRED = (
    "time_per_output_token_ms",
    "time_to_first_token_ms",
    "joules_per_generated_token",
    "joules_per_prompt_token",
)


def _built_for_genai(model: _Model, original: Path, run_dir: Path, threads: int, cache: dict) -> tuple[Path, dict]:
    """The model's GenAI folder (ONNX Runtime GenAI's and OpenVINO's file), built once for both runtimes."""
    target = run_dir / "genai" / model.name
    if model.name not in cache:
        log.info("building %s with ONNX Runtime GenAI's model builder", model.name)
        source = model.folder if model.checkpoint is None else original  # the tokenizer's files, at least
        try:
            cache[model.name] = genai.build(source, target, threads, model.checkpoint)
        except genai.NotBuildable as why:
            cache[model.name] = why  # said once for each runtime reading the file, built once
    if isinstance(cache[model.name], genai.NotBuildable):
        raise cache[model.name]
    return target, cache[model.name]


def _measured_when_last(model: _Model, runtime: str, models: list[_Model]) -> bool:
    """`benchmark.measure: last`: the original on PyTorch (every ratio's reference) and the last model everywhere."""
    return model is models[-1] or (model is models[0] and runtime == "torch")


def _precision(model: _Model, runtime: str) -> str:
    if runtime == "torch":
        return model.torch_precision or "fp32 (rounded weights)"
    return model.checkpoint.precision if model.checkpoint is not None else "fp32"


def _perplexity(logits_of, corpus: Corpus, windows: int) -> Perplexity:
    return perplexity(logits_of, corpus.evaluation, PERPLEXITY_WINDOW, PERPLEXITY_STRIDE, windows)


def _continuations(generators: dict, corpus: Corpus) -> dict[str, float]:
    """Each generator's share of greedy continuation tokens equal to PyTorch FP32's, over the first
    CONTINUATION_TOKENS after each of the corpus's prompts to continue (its prompt set, or the evaluation text's)."""
    produced = {}
    prompts = corpus.prompts_to_continue()
    for name, generator in generators.items():
        outputs = []
        for prompt in prompts:
            state = generator.prefill(prompt)
            for _ in range(CONTINUATION_TOKENS - 1):
                state = generator.step(state)
            outputs.append(generator.tokens(state)[0, :CONTINUATION_TOKENS])
        produced[name] = np.stack(outputs)
    reference = produced.get("fp32@torch")
    if reference is None:
        return {}
    return {name: float(np.mean(tokens == reference)) for name, tokens in produced.items()}


def _generators_for(shape: GenerationShape, generators: dict) -> tuple[dict, dict]:
    """The generators that run batches of this shape's size, and why each other one is left out of it."""
    fitting, unfit = {}, {}
    for name, generator in generators.items():
        most = getattr(generator, "max_batch_size", None)
        if most is not None and shape.batch_size > most:
            unfit[name] = f"it generates batches of at most {most} ({generator.max_batch_reason})"
            log.info("%s: left out at batch %d: %s", name, shape.batch_size, unfit[name])
        else:
            fitting[name] = generator
    return fitting, unfit


def _shape_result(shape: GenerationShape, results: dict[str, GenerationResult], twins: dict[str, str]) -> ShapeResult:
    fp32 = {name: r for name, r in results.items() if name.startswith("fp32@")}
    fastest = min(fp32, key=lambda name: np.median(fp32[name].time_per_output_token_ms))
    versus, dense = {}, {}
    for name, result in results.items():
        model, _, runtime = name.rpartition("@")
        if f"{twins.get(model)}@{runtime}" in results:
            dense[name] = f"{twins[model]}@{runtime}"
        entry = {}
        for label, base in (
            ("vs_torch_fp32", "fp32@torch"),
            ("vs_fastest_fp32", fastest),
            ("vs_dense", dense.get(name)),
        ):
            if base in results and base != name:
                for figure in FIGURES_PAIRED:
                    ratio = paired(getattr(result, figure), getattr(results[base], figure))
                    if ratio is not None:
                        entry[f"{label}:{figure}"] = asdict(ratio)
        versus[name] = entry
    return ShapeResult(asdict(shape), fastest, {name: _result_dict(r) for name, r in results.items()}, versus, dense)


def _result_dict(result: GenerationResult) -> dict:
    return {
        "rounds": result.rounds,
        "warmup_steps": result.warmup_steps,
        "time_to_first_token_ms": float(np.median(result.time_to_first_token_ms)),
        "time_per_output_token_ms": {f"p{q}": result.percentile_step_ms(q) for q in (50, 90, 99)},
        "tokens_per_s": result.tokens_per_s,
        "joules_per_prompt_token": float(np.median(result.joules_per_prompt_token)),
        "joules_per_generated_token": float(np.median(result.joules_per_generated_token)),
        "wh_per_1000_queries": result.wh_per_1000_queries(),
        "energy_method": result.method,
        "energy_measured": result.measured,
    }

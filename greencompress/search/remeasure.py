"""A language model search's front, measured again: every front model and the anchor in one set of rounds.

Each trial ranks its candidate by a ratio to the anchor from its own run. Those ratios compare well, but the front's
models were never measured beside each other; here they are, on prompts no trial used, so that the choice among them
(and the BENCHMARKS table a user copies) rests on figures from one run.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from greencompress.search.summary import Summary
from greencompress.search.trial import ANCHOR_LM

log = logging.getLogger(__name__)

FIGURES = {
    "energy_ratio": "joules_per_generated_token",
    "latency_ratio": "time_per_output_token_ms",
    "prefill_energy_ratio": "joules_per_prompt_token",
    "ttft_ratio": "time_to_first_token_ms",
}


def remeasure_front(recipe, summary: Summary, progress=None) -> tuple[dict, dict]:
    """({trial number: its candidate's paired ratios to the anchor and medians}, the shape measured) for every front
    trial whose served file or folder still exists; ({}, {}) when none does."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    from greencompress.measure.generation import GenerationShape, TorchGenerator, benchmark_generation, paired
    from greencompress.models.corpus import load_corpus
    from greencompress.models.tasks.text_generation import PERPLEXITY_WINDOW
    from greencompress.pipeline.prepare import preflight
    from greencompress.report.schema import interval_to_dict
    from greencompress.runtimes import genai
    from greencompress.runtimes.pytorch import set_threads

    front = [
        row
        for row in summary.rows
        if row.number in summary.front and row.outcome is not None and _served(row.outcome.path)
    ]
    for row in summary.rows:
        if row.number in summary.front and row not in front:
            log.info("re-measure: trial %d's model is gone from %s; it is left out", row.number, row.outcome.path)
    if not front:
        return {}, {}
    set_threads(recipe.benchmark.threads)
    _, meter, _ = preflight(recipe)
    loaded = recipe.task.load(recipe.model, progress)
    context = getattr(loaded.module.config, "max_position_embeddings", None)
    corpus = load_corpus(recipe.data, loaded.tokenizer, PERPLEXITY_WINDOW, context)
    shape = GenerationShape(summary.batch_size, summary.sequence_length, recipe.benchmark.new_tokens)
    generators = {ANCHOR_LM: TorchGenerator(loaded.module.eval())}
    for row in front:
        outcome = row.outcome
        if outcome.runtime == "torch":
            module = AutoModelForCausalLM.from_pretrained(outcome.path).eval()
            generators[_name(row.number)] = TorchGenerator(module)
        else:
            generators[_name(row.number)] = genai.GenAIGenerator(Path(outcome.path), shape.new_tokens + 1)
    rounds = max(recipe.benchmark.windows, 5)
    log.info(
        "re-measuring the front (trials %s) with %s: batch %d, prompt %d tokens, %d new tokens, %d rounds",
        ", ".join(str(row.number) for row in front),
        ANCHOR_LM,
        shape.batch_size,
        shape.prompt_tokens,
        shape.new_tokens,
        rounds,
    )

    # The trials' runs drew their prompts from the first on; these come from the second half of those the text holds.
    first = corpus.distinct_prompts(shape.prompt_tokens, shape.batch_size) // 2

    def prompt(n: int) -> np.ndarray:
        return corpus.prompt(first + n, shape.prompt_tokens, shape.batch_size)

    results = benchmark_generation(generators, prompt, shape, meter, rounds=rounds)
    anchor = results[ANCHOR_LM]
    measured = {}
    for row in front:
        result = results[_name(row.number)]
        entry = {"candidate": row.outcome.candidate, "runtime": row.outcome.runtime}
        for key, figure in FIGURES.items():
            entry[key] = interval_to_dict(paired(getattr(result, figure), getattr(anchor, figure)))
        entry["joules_per_generated_token"] = float(np.median(result.joules_per_generated_token))
        entry["energy_method"], entry["energy_measured"] = result.method, result.measured
        measured[row.number] = entry
    return measured, {**asdict(shape), "rounds": rounds}


def _served(path: str | None) -> bool:
    return path is not None and Path(path).is_dir()


def _name(number: int) -> str:
    return f"trial {number}"

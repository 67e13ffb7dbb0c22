"""How much a generated token costs: prefill and decode of a causal language model measured apart.

A query is a prompt of `prompt_tokens` (prefill: one forward over the whole prompt, which fills the KV
cache and gives the first token) followed by `new_tokens - 1` decode steps (one token each, reading the
cache). Their costs differ in kind, compute-bound against memory-bound, so they are timed and metered in
separate windows: time to first token and joules per prompt token for prefill; time per output token
(p50/p90/p99 over steps) and joules per generated token for decode. The first `warmup_steps` decode steps of
every query are left out of the decode figures (caches and allocators settling), and say so.

Every round draws new prompts, the same for every generator in the round, so that no runtime's prompt cache
can answer a prompt it has seen and rounds pair generators on the same work (`paired_ratio_interval`). The
generators run one after another in a round, in an order that rotates between rounds. A meter reads no
window shorter than its `min_window_s`: each generator's prefill window holds as many prefills as its own
warm-up query says fill it, and its decode window decodes as many of those states (each for its counted steps)
as fill that one, and more where the window is still short; all take their prompts from the front of the
round's one list, so a slower generator works on fewer of the same prompts rather than for longer than its
windows need. A decode window still shorter than the meter's shortest is refused rather than reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from greencompress.measure.energy.meter import EnergyMeter
from greencompress.measure.memory import keep_freed_memory
from greencompress.measure.stats import RatioInterval, paired_ratio_interval


@dataclass(frozen=True)
class GenerationShape:
    """A query: `batch_size` prompts of `prompt_tokens` each, `new_tokens` generated for each (greedy)."""

    batch_size: int
    prompt_tokens: int
    new_tokens: int

    def __post_init__(self):
        if min(self.batch_size, self.prompt_tokens) < 1 or self.new_tokens < 2:
            raise ValueError(f"a generation shape needs a prompt and at least 2 new tokens, got {self}")


class Generator(Protocol):
    """A model that generates greedily with its KV cache: `prefill` returns the state after the prompt (its first
    new token included); `step` takes one decode step from a state and returns the next state. One that holds
    only the last few prompts' states (a stateful pipeline) says how many with a `sequences` attribute; one that
    runs batches of at most some size says so with `max_batch_size` and `max_batch_reason`."""

    def prefill(self, ids: np.ndarray) -> object: ...

    def step(self, state: object) -> object: ...

    def tokens(self, state: object) -> np.ndarray: ...


class TorchGenerator:
    """A transformers causal LM in PyTorch eager, KV cache on (what `generate` runs, without its sampling logic)."""

    def __init__(self, model):
        import inspect

        import torch

        self.model, self.torch = model.eval(), torch
        # transformers 5 names the KV cache `cache` (`past_key_values` before, deprecated since): ask the model.
        self.cache_name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def prefill(self, ids: np.ndarray):
        with self.torch.inference_mode():
            output = self.model(input_ids=self.torch.from_numpy(ids), use_cache=True)
        token = output.logits[:, -1].argmax(-1, keepdim=True)
        return output[self.cache_name], token, [token]

    def step(self, state):
        cache, token, generated = state
        with self.torch.inference_mode():
            output = self.model(input_ids=token, use_cache=True, **{self.cache_name: cache})
        token = output.logits[:, -1].argmax(-1, keepdim=True)
        return output[self.cache_name], token, [*generated, token]

    def tokens(self, state) -> np.ndarray:
        return self.torch.cat(state[2], dim=1).numpy()


@dataclass(frozen=True)
class GenerationResult:
    """One generator at one shape, over `rounds` queries. Per-round figures pair with other generators' rounds."""

    shape: GenerationShape
    rounds: int
    warmup_steps: int  # decode steps left out of each query's decode figures
    time_to_first_token_ms: tuple[float, ...]  # per round: the prefill
    time_per_output_token_ms: tuple[float, ...]  # per round: mean over its counted decode steps
    step_ms: tuple[float, ...]  # every counted decode step, for percentiles
    joules_per_prompt_token: tuple[float, ...]  # per round
    joules_per_generated_token: tuple[float, ...]  # per round
    method: str
    measured: bool

    def percentile_step_ms(self, q: float) -> float:
        return float(np.percentile(self.step_ms, q))

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second in decode, all prompts of a batch together."""
        return self.shape.batch_size * 1e3 / float(np.median(self.time_per_output_token_ms))

    def wh_per_1000_queries(self) -> float:
        """The AI Energy Score's unit for this shape: a query's prefill and its decode, per prompt of the batch."""
        shape = self.shape
        per_query = float(np.median(self.joules_per_prompt_token)) * shape.prompt_tokens + float(
            np.median(self.joules_per_generated_token)
        ) * (shape.new_tokens - 1)
        return per_query * 1000 / 3600


def benchmark_generation(
    generators: dict[str, Generator],
    prompt: Callable[[int], np.ndarray],
    shape: GenerationShape,
    meter: EnergyMeter,
    rounds: int = 5,
    warmup_steps: int = 2,
) -> dict[str, GenerationResult]:
    """Every generator on new prompts each round (`prompt(n)`: the n-th prompt's token ids [batch, prompt_tokens];
    none may repeat), interleaved; prefill and decode in windows of their own. Memory the process frees is kept
    for its own reuse from here on (measure/memory.py)."""
    if shape.new_tokens - 1 <= warmup_steps:
        raise ValueError(f"new_tokens {shape.new_tokens} leaves no decode step after {warmup_steps} warm-up steps")
    keep_freed_memory()
    prompts = FreshPrompts(prompt, shape)
    # Queries untimed by the meter, on prompts of their own: they warm every generator up and say how many of its
    # prefills, and how many queries' decodes, fill the meter's shortest window.
    counted = shape.new_tokens - 1 - warmup_steps
    # Two warm-up queries each: the first pays for first calls (allocations, kernel choices), the second is timed.
    timings = [
        [_query_seconds(generator, prompts.draw(), warmup_steps, counted) for _ in range(2)][-1]
        for generator in generators.values()
    ]
    names = list(generators)
    plans = {name: _window_plan(generators[name], timing, meter) for name, timing in zip(names, timings)}
    records = {name: {"ttft": [], "tpot": [], "steps": [], "j_prompt": [], "j_generated": []} for name in names}
    for index in range(rounds):
        drawn = [prompts.draw() for _ in range(max(prefills for prefills, _ in plans.values()))]
        for name in names[index % len(names) :] + names[: index % len(names)]:  # rotate who goes first
            prefills, decoded = plans[name]
            _one_round(generators[name], drawn[:prefills], decoded, shape, meter, warmup_steps, records[name])
    return {
        name: GenerationResult(
            shape,
            rounds,
            warmup_steps,
            tuple(record["ttft"]),
            tuple(record["tpot"]),
            tuple(record["steps"]),
            tuple(record["j_prompt"]),
            tuple(record["j_generated"]),
            meter.method,
            meter.describe().measured,
        )
        for name, record in records.items()
    }


class FreshPrompts:
    """Prompts in order, each checked for its shape and never used twice: text that repeats itself (a refrain, a
    stage direction, at a short prompt length) is skipped, since a runtime's prompt cache would answer it."""

    SKIPPED_AT_MOST = 1000  # repeats in a row before the prompt source is refused

    def __init__(self, prompt: Callable[[int], np.ndarray], shape: GenerationShape):
        self.prompt, self.shape, self.next, self.seen = prompt, shape, 0, set()

    def draw(self) -> np.ndarray:
        for _ in range(self.SKIPPED_AT_MOST):
            ids = np.ascontiguousarray(self.prompt(self.next), dtype=np.int64)
            expected = (self.shape.batch_size, self.shape.prompt_tokens)
            if ids.shape != expected:
                raise ValueError(f"prompt {self.next}: shape {ids.shape}, expected {expected}")
            self.next += 1
            if ids.tobytes() not in self.seen:
                self.seen.add(ids.tobytes())
                return ids
        raise ValueError(
            f"prompts {self.next - self.SKIPPED_AT_MOST}-{self.next - 1} each repeat an earlier one: the text is too "
            "repetitive to give new prompts (a runtime's prompt cache would answer a repeat)"
        )


def _window_plan(generator: Generator, timing: tuple[float, float], meter: EnergyMeter) -> tuple[int, int]:
    """How many prompts a generator prefills in a round, and how many of their states it decodes at least, for
    its own windows to reach the meter's shortest (a margin of 2: one warm-up query is a rough guide to a round)."""
    prefill_s, decode_s = timing
    prefills = max(1, math.ceil(2 * meter.min_window_s / max(prefill_s, 1e-6)))
    decoded = max(1, math.ceil(2 * meter.min_window_s / max(decode_s, 1e-6)))
    # A generator that holds few sequences at a time (a stateful pipeline) decodes only its last prompts' states.
    decoded = min(decoded, getattr(generator, "sequences", decoded))
    return max(prefills, 2 * decoded), decoded  # spare states, for a round that decodes faster than the warm-up


def _query_seconds(generator: Generator, ids: np.ndarray, warmup: int, counted: int) -> tuple[float, float]:
    """Seconds of one prefill and of its `counted` decode steps after `warmup` ones (a warm-up query)."""
    start = time.perf_counter()
    state = generator.prefill(ids)
    prefill = time.perf_counter() - start
    for _ in range(warmup):
        state = generator.step(state)
    start = time.perf_counter()
    for _ in range(counted):
        state = generator.step(state)
    return prefill, time.perf_counter() - start


def _one_round(
    generator: Generator, drawn: list, decoded: int, shape: GenerationShape, meter, warmup: int, record
) -> None:
    """The round's prompts prefilled in one window; their states decoded in another, the last prompt's first, at
    least `decoded` of them and more while the window is shorter than the meter's (a round can run faster than
    the warm-up query said); each state's warm-up steps are taken before that window opens."""
    meter.begin_window()
    start = time.perf_counter()
    states = [generator.prefill(ids) for ids in drawn]
    prefill_s = (time.perf_counter() - start) / len(drawn)
    prefill = meter.end_window()
    pool = states[-getattr(generator, "sequences", len(states)) :]  # a one-sequence generator holds the last only
    for index in range(len(pool)):
        for _ in range(warmup):
            pool[index] = generator.step(pool[index])
    counted = shape.new_tokens - 1 - warmup
    steps = []
    meter.begin_window()
    opened = time.perf_counter()
    for number, state in enumerate(reversed(pool), start=1):
        for _ in range(counted):
            begin = time.perf_counter()
            state = generator.step(state)
            steps.append((time.perf_counter() - begin) * 1e3)
        if number >= decoded and time.perf_counter() - opened >= 1.1 * meter.min_window_s:
            break
    decode = meter.end_window()
    if decode.duration_s < meter.min_window_s:
        raise ValueError(
            f"{len(steps)} decode steps took {decode.duration_s:.3f} s, below the {meter.method} meter's shortest "
            f"window ({meter.min_window_s} s): generate more new tokens per query"
        )
    record["ttft"].append(prefill_s * 1e3)
    record["tpot"].append(float(np.mean(steps)))
    record["steps"].extend(steps)
    record["j_prompt"].append(prefill.total_j / (len(drawn) * shape.batch_size * shape.prompt_tokens))
    record["j_generated"].append(decode.total_j / (len(steps) * shape.batch_size))


def paired(candidate: tuple[float, ...], baseline: tuple[float, ...]) -> RatioInterval | None:
    """Candidate over baseline, round by round (the same prompts), with its 95% interval."""
    return paired_ratio_interval(list(candidate), list(baseline))

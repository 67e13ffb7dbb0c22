"""Prefill and decode measured apart, on tiny Llama and GPT-2 models built here."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from greencompress.measure.energy.estimate import EstimateMeter
from greencompress.measure.generation import (
    FreshPrompts,
    GenerationShape,
    TorchGenerator,
    benchmark_generation,
    paired,
)
from tests.measure.test_perplexity import tiny


class QuickEstimate(EstimateMeter):
    """The CPU-time estimate with a short shortest window, so that tiny models fill it."""

    min_window_s = 0.01


def prompts(batch: int, length: int):
    return lambda n: np.random.default_rng(n).integers(0, 97, (batch, length))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_the_cached_greedy_loop_generates_what_transformers_generates(kind):
    model = tiny(kind)
    generator = TorchGenerator(model)
    ids = prompts(2, 12)(0)
    state = generator.prefill(ids)
    for _ in range(7):
        state = generator.step(state)
    expected = model.generate(
        torch.from_numpy(ids), max_new_tokens=8, do_sample=False, pad_token_id=0, attention_mask=torch.ones(2, 12)
    )
    np.testing.assert_array_equal(generator.tokens(state), expected[:, 12:].numpy())


def test_prefill_and_decode_are_timed_and_metered_apart_on_new_prompts_each_round():
    seen = []

    def prompt(n):
        seen.append(n)
        return prompts(1, 16)(n)

    shape = GenerationShape(batch_size=1, prompt_tokens=16, new_tokens=40)
    meter = QuickEstimate(cpu_watts_per_core=10.0)
    results = benchmark_generation(
        {"llama": TorchGenerator(tiny("llama")), "gpt2": TorchGenerator(tiny("gpt2"))},
        prompt,
        shape,
        meter,
        rounds=3,
        warmup_steps=2,
    )
    assert seen == sorted(set(seen))  # every prompt new
    for result in results.values():
        assert result.rounds == 3 and len(result.time_to_first_token_ms) == 3
        steps = 40 - 1 - 2  # warm-up steps left out; a round decodes one or more whole queries
        assert len(result.step_ms) % steps == 0 and len(result.step_ms) >= 3 * steps
        assert all(value > 0 for value in (*result.joules_per_prompt_token, *result.joules_per_generated_token))
        assert result.percentile_step_ms(50) <= result.percentile_step_ms(99)
        assert result.method == "estimate" and result.measured is False
        assert result.tokens_per_s > 0 and result.wh_per_1000_queries() > 0
    ratio = paired(results["gpt2"].time_per_output_token_ms, results["llama"].time_per_output_token_ms)
    assert ratio is not None and ratio.low <= ratio.ratio <= ratio.high


def test_a_repeated_prompt_is_skipped_a_source_of_repeats_and_a_too_short_decode_window_are_refused():
    model = TorchGenerator(tiny("llama"))
    shape = GenerationShape(batch_size=1, prompt_tokens=8, new_tokens=6)
    with pytest.raises(ValueError, match="each repeat an earlier one: the text is too repetitive"):
        benchmark_generation({"m": model}, lambda n: np.ones((1, 8)), shape, QuickEstimate(10.0), rounds=2)
    drawn = []

    def refrain(n: int) -> np.ndarray:  # every other prompt is the same line again
        drawn.append(n)
        return np.full((1, 8), 1 if n % 2 else 2 + n)

    source = FreshPrompts(refrain, shape)
    used = [source.draw() for _ in range(4)]
    assert len({ids.tobytes() for ids in used}) == 4 and drawn == [0, 1, 2, 3, 4]  # 3 repeated 1

    class Sudden:
        """Slow while warming up, then instant: no round's decode window can reach the meter's shortest."""

        warm = 3  # queries: the benchmark warms up with the first two

        def prefill(self, ids):
            self.warm -= 1
            time.sleep(0.02)  # one prefill fills the window: the round holds two prompts' states, no more
            return []

        def step(self, state):
            if self.warm > 0:
                time.sleep(0.01)
            return [*state, 0]

        def tokens(self, state):
            return np.array([state])

    with pytest.raises(ValueError, match="below the estimate meter's shortest window .*more new tokens"):
        benchmark_generation({"m": Sudden()}, prompts(1, 8), shape, QuickEstimate(10.0), rounds=1)
    with pytest.raises(ValueError, match="at least 2 new tokens"):
        GenerationShape(1, 8, 1)


def test_a_decode_window_too_short_for_one_query_decodes_several_prompts_states():
    class Meter(EstimateMeter):
        min_window_s = 0.3

    shape = GenerationShape(batch_size=1, prompt_tokens=8, new_tokens=6)  # 3 counted steps: about a millisecond each
    result = benchmark_generation({"m": TorchGenerator(tiny("llama"))}, prompts(1, 8), shape, Meter(10.0), rounds=2)
    per_round = len(result["m"].step_ms) // 2
    assert per_round > 3 and per_round % 3 == 0  # whole queries, several of them, 3 counted steps each


def test_a_generator_holding_one_sequence_decodes_only_its_last_prompts_state():
    class OneSequence:
        """A stateful pipeline: a new prefill replaces the sequence; stepping an older one is an error."""

        sequences = 1

        def __init__(self):
            self.latest = None

        def prefill(self, ids):
            self.latest = [int(ids[0, 0])]
            return self.latest

        def step(self, state):
            assert state is self.latest, "an older sequence was stepped"
            time.sleep(0.01)
            state.append(0)
            return state

        def tokens(self, state):
            return np.array([state])

    class Meter(EstimateMeter):
        min_window_s = 0.05

    shape = GenerationShape(batch_size=1, prompt_tokens=8, new_tokens=12)
    result = benchmark_generation({"m": OneSequence()}, prompts(1, 8), shape, Meter(10.0), rounds=2)
    assert len(result["m"].step_ms) == 2 * (12 - 1 - 2)  # one query's decode per round


def test_each_generator_fills_its_own_windows_from_the_front_of_the_rounds_prompts():
    """A generator ten times slower works on fewer of the round's prompts, not ten times longer than it needs."""

    class Paced:
        def __init__(self, seconds: float):
            self.seconds, self.prefilled = seconds, []

        def prefill(self, ids):
            self.prefilled.append(int(ids[0, 0]))
            time.sleep(self.seconds)
            return [0]

        def step(self, state):
            time.sleep(self.seconds)
            return [*state, 0]

        def tokens(self, state):
            return np.array([state])

    class Meter(EstimateMeter):
        min_window_s = 0.05

    fast, slow = Paced(0.001), Paced(0.01)
    shape = GenerationShape(batch_size=1, prompt_tokens=4, new_tokens=6)  # 3 counted steps
    counter = iter(range(10**6))
    results = benchmark_generation(
        {"fast": fast, "slow": slow}, lambda n: np.full((1, 4), next(counter)), shape, Meter(10.0), rounds=2
    )
    assert slow.prefilled[2:] == [p for p in fast.prefilled[2:] if p in slow.prefilled]  # the front of each list
    assert len(slow.prefilled) < len(fast.prefilled) / 3
    assert len(results["slow"].step_ms) < len(results["fast"].step_ms) / 3
    for result in results.values():  # both windows still reach the meter's shortest
        assert sum(result.step_ms) / 2 >= 0.05 * 1e3

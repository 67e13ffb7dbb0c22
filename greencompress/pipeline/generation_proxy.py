"""The search's cheap test for a language model: its structure, untrained, decoding against the original's.

What a decoded token costs depends on the layers, FFN neurons and key/value groups a model keeps, not on their
weights: a trial's structural stages are applied untrained (the same rankings on the same calibration windows as
its run: seconds, no distillation), the result built for the serving runtime in FP32 (ONNX Runtime GenAI, or
PyTorch eager) and timed decoding against the original built alike, in paired rounds on never-repeated prompts
(measure/generation.py). A candidate whose structure buys no speed there is never healed. Results are cached by
CPU, runtime and version, threads, shape and both models' widths, as the CNN and encoder proxy's are.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from greencompress.pipeline.proxy import ProxyCache, ProxyResult, cpu_identity, proxy_key

log = logging.getLogger(__name__)

NEW_TOKENS = 16  # per timed query: the proxy compares a step's cost, not a long answer's


def decoder_widths_of(config) -> list:
    """What decides a decoder's cost per token: its layer count, FFN width and head layout."""
    return [
        ["layers", config.num_hidden_layers],
        ["ffn", getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)],
        ["heads", getattr(config, "num_attention_heads", None)],
        ["kv_heads", getattr(config, "num_key_value_heads", None)],
    ]


class GenerationProxy:
    """Times untrained language-model candidates against the original on one generation runtime, through the cache."""

    def __init__(self, recipe, loaded, corpus, meter, runtime: str, rounds: int, cache: ProxyCache | None = None):
        self.recipe, self.loaded, self.corpus, self.meter = recipe, loaded, corpus, meter
        self.runtime, self.rounds = runtime, rounds
        self.threads = recipe.benchmark.threads
        self.cache = cache or ProxyCache()
        self.scratch = Path(tempfile.mkdtemp(prefix="greencompress-lm-proxy-"))
        self._baseline = None

    def measure(self, trial_recipe) -> ProxyResult | None:
        """The paired time-per-output-token ratio of the trial's untrained structure to the original's; None when the
        trial removes no structure."""
        import torch

        from greencompress.measure.environment import runtime_versions

        structural = [stage for stage in trial_recipe.stages if stage.technique in ("depth", "prune")]
        if not structural:
            return None
        torch.manual_seed(trial_recipe.seed)
        work, folder, config = self._untrained(trial_recipe, structural)
        batch_size, prompt_tokens = trial_recipe.benchmark.batch_sizes[0], trial_recipe.benchmark.sequence_lengths[0]
        key = proxy_key(
            cpu_identity(),
            self.runtime,
            runtime_versions().get(self.runtime, "unknown"),
            "fp32",
            batch_size,
            self.threads,
            decoder_widths_of(self.loaded.module.config),
            decoder_widths_of(config),
            prompt_tokens,
        )
        if (found := self.cache.get(key)) is not None:
            log.info(
                "proxy: this structure was already timed on this CPU and runtime (cache %s): %.3fx", key, found.ratio
            )
            shutil.rmtree(work, ignore_errors=True)
            return found
        result = self._time(folder, batch_size, prompt_tokens)
        shutil.rmtree(work, ignore_errors=True)
        self.cache.put(key, result)
        return result

    def _untrained(self, trial_recipe, structural) -> tuple[Path, Path, object]:
        """The trial's depth and prune stages applied to the original: (a scratch folder, the model's folder in it, its
        config)."""
        from greencompress.compress.decoder_surgery import decoder_layers
        from greencompress.pipeline.generate import DECODER_STAGES, _Model, _StageInputs
        from greencompress.pipeline.stages import StageStore

        work = Path(tempfile.mkdtemp(dir=self.scratch))
        layers = len(decoder_layers(self.loaded.module)[2])
        model = _Model("fp32", self.loaded.module, origin=tuple(range(layers)))
        inputs = _StageInputs(self.corpus, work, self.loaded, trial_recipe.seed, StageStore(work, None), "")
        for stage in structural:
            model = DECODER_STAGES[stage.technique](stage, model, inputs)
        return work, model.folder, model.module.config

    def _generator(self, folder: Path, name: str):
        from greencompress.measure.generation import TorchGenerator

        if self.runtime == "torch":
            from transformers import AutoModelForCausalLM

            return TorchGenerator(AutoModelForCausalLM.from_pretrained(folder).eval())
        from greencompress.runtimes import genai

        target = self.scratch / "genai" / name
        genai.build(folder, target, self.threads)
        return genai.GenAIGenerator(target, NEW_TOKENS + 1)

    def _time(self, folder: Path, batch_size: int, prompt_tokens: int) -> ProxyResult:
        from greencompress.measure.generation import GenerationShape, benchmark_generation
        from greencompress.measure.lock import measurement_lock

        if self._baseline is None:
            self._baseline = self._generator(Path(self.loaded.provenance["folder"]), "original")
        candidate = self._generator(folder, f"candidate-{folder.name}")
        shape = GenerationShape(batch_size, prompt_tokens, NEW_TOKENS)

        # From the last quarter of the prompts the text holds: runs draw theirs from the first, the front's
        # re-measurement from the middle.
        first = 3 * self.corpus.distinct_prompts(prompt_tokens, batch_size) // 4

        def prompt(n: int) -> np.ndarray:
            return self.corpus.prompt(first + n, prompt_tokens, batch_size)

        generators = {"candidate": candidate, "baseline": self._baseline}
        with measurement_lock("search proxy"):
            results = benchmark_generation(generators, prompt, shape, self.meter, rounds=self.rounds)
        for built in (self.scratch / "genai").glob(f"*candidate-{folder.name}*"):  # the build, its log and cache
            if built.is_dir():
                shutil.rmtree(built)
            else:
                built.unlink()
        tpot = {name: list(result.time_per_output_token_ms) for name, result in results.items()}
        return ProxyResult.paired(tpot["candidate"], tpot["baseline"])

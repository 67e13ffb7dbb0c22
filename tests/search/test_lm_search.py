"""A real search of a tiny Llama made here: each trial a text-generation run of one candidate beside the anchor, the
budget read on perplexity, the front measured again together, and best.yaml reproducing the chosen model.

Its candidates are served on PyTorch: a tiny model decodes a token in 36 us on ONNX Runtime GenAI and 1 ms on
PyTorch, and the benchmark decodes as many queries on each as fill the fastest one's window, which would take
minutes here (tests/pipeline/test_generate.py measures GenAI; read_generation_outcome's choice of runtime is tested
in test_summary.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.models.tiny_lm import tiny_llama_folder

pytestmark = pytest.mark.slow

RECIPE = """name: tiny-lm-search
model: {{source: huggingface, task: text-generation, path: {folder}}}
data: {{kind: text}}
stages:
  - distill: {{tokens: 1024, batch_windows: 2}}
benchmark: {{batch_sizes: [1], sequence_lengths: [32], new_tokens: 16, windows: 2, threads: 1, runtimes: []}}
search:
  space: {{depth: [1, 2], ffn: [0, 0.5]}}
  budget: {{max_trials: 2, max_perplexity_increase: {budget}}}
  sampler: random
  proxy: {{rounds: 3}}
output: {{dir: {output}}}
"""


BUDGET = 2.0  # percent


def test_a_language_model_search_ranks_by_j_per_token_under_its_perplexity_budget_and_remeasures_its_front(
    tmp_path, monkeypatch
):
    from greencompress.cli import cli

    monkeypatch.setenv("GREENCOMPRESS_CACHE", str(tmp_path / "cache"))  # the proxy times afresh, not from a cache

    folder = tiny_llama_folder(tmp_path / "llama", layers=3)
    path = tmp_path / "lm_search.yaml"
    path.write_text(RECIPE.format(folder=folder, output=tmp_path / "runs", budget=BUDGET))
    result = CliRunner().invoke(cli, ["search", str(path), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "runs" / "tiny-lm-search-search" / "search.json").read_text())
    complete = [row for row in saved["rows"] if row["state"] == "complete"]
    assert len(complete) == 2
    for row in complete:
        outcome, params = row["outcome"], row["params"]
        report = json.loads((Path(row["run_dir"]) / "report.json").read_text())
        # One candidate beside the anchor: the original and the last model the stages made, healed.
        names = [artifact["name"] for artifact in report["artifacts"]]
        narrow = "-ffn64" if params["ffn"] else ""
        assert names == ["fp32@torch", f"depth{params['depth']}{narrow}-distilled@torch"]
        assert outcome["unit"] == "generated token" and outcome["runtime"] == "torch"
        assert outcome["candidate"] == names[1] and outcome["anchor"] == "fp32@torch"
        # The proxy timed the untrained structure decoding against the original on the serving runtime first.
        proxy = row["proxy"]
        assert proxy["runtime"] == "torch" and proxy["rounds"] == 3 and proxy["ratio"] < 0.97
        removed = outcome["structure_removed"]
        assert removed[0].startswith(f"decoder layers 3 -> {3 - params['depth']}")
        assert (removed[1:] == ["FFN neurons 128 -> 64 per layer"]) == bool(params["ffn"])
        artifact = next(a for a in report["artifacts"] if a["name"] == outcome["candidate"])
        assert outcome["perplexity_increase"] == pytest.approx(100 * artifact["perplexity_change"])
        ratios = report["shapes"][0]["ratios"][outcome["candidate"]]
        assert outcome["anchor_energy_ratio"]["ratio"] == pytest.approx(
            ratios["vs_torch_fp32:joules_per_generated_token"]["ratio"]
        )
        assert outcome["anchor_prefill_energy_ratio"]["ratio"] > 0 and Path(outcome["path"]).is_dir()
    # Feasible exactly when within the perplexity budget.
    assert all(row["feasible"] == (row["outcome"]["perplexity_increase"] <= BUDGET) for row in complete)
    # Every front trial measured again, together with the anchor, in one set of rounds; the choice is made there.
    assert saved["front"] and set(map(int, saved["remeasured"])) == set(saved["front"])
    assert saved["remeasure_shape"] == {"batch_size": 1, "prompt_tokens": 32, "new_tokens": 16, "rounds": 5}
    remeasured = {int(number): entry for number, entry in saved["remeasured"].items()}
    markdown = (tmp_path / "runs" / "tiny-lm-search-search" / "search.md").read_text()
    assert "re-measured with the front vs fp32@torch" in markdown and "J per generated token" in markdown
    best = tmp_path / "runs" / "tiny-lm-search-search" / "best.yaml"
    within = [number for number in remeasured if next(r for r in complete if r["number"] == number)["feasible"]]
    if not within:
        assert saved["chosen"] is None and not best.exists()
        assert saved["verdict"].startswith("No candidate within the budget (perplexity within +2%")
        return
    # The cheapest feasible front model by the re-measured ratio, or one tied with it by its interval.
    cheapest = min(within, key=lambda number: remeasured[number]["energy_ratio"]["ratio"])
    assert saved["chosen"] in within
    assert remeasured[saved["chosen"]]["energy_ratio"]["ratio"] <= remeasured[cheapest]["energy_ratio"]["ci95"][1]
    assert "is the cheapest within the budget (perplexity within +2% of the original" in saved["verdict"]
    # best.yaml is the chosen trial's recipe.
    chosen = next(row for row in saved["rows"] if row["number"] == saved["chosen"])
    assert best.read_text() == (Path(chosen["run_dir"]) / "recipe.resolved.yaml").read_text()


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime_genai") is None, reason="pip install onnxruntime-genai")
def test_the_proxy_times_an_untrained_shallower_structure_built_for_genai_and_caches_it(tmp_path):
    from greencompress.measure.energy.estimate import EstimateMeter
    from greencompress.models.corpus import load_corpus
    from greencompress.pipeline.generation_proxy import GenerationProxy
    from greencompress.pipeline.proxy import ProxyCache
    from greencompress.pipeline.recipe import Recipe, load_recipe
    from greencompress.search.spec import SearchRecipe

    folder = tiny_llama_folder(tmp_path / "llama", layers=3)
    path = tmp_path / "lm_search.yaml"
    path.write_text(RECIPE.format(folder=folder, output=tmp_path / "runs", budget=BUDGET))
    recipe = load_recipe(path, schema=SearchRecipe)
    base = {key: value for key, value in recipe.model_dump(mode="json").items() if key != "search"}
    loaded = recipe.task.load(recipe.model, None)
    corpus = load_corpus(recipe.data, loaded.tokenizer, 256)
    cache = ProxyCache(tmp_path / "cache")
    proxy = GenerationProxy(recipe, loaded, corpus, EstimateMeter(), "onnxruntime-genai", 3, cache)
    trial = Recipe.model_validate({**base, "stages": [{"depth": {"remove": 2, "importance": "similarity"}}]})
    first = proxy.measure(trial)
    # A third of the layers decodes in less time than all three, built alike (FP32, the same builder and threads).
    assert first.rounds == 3 and first.ratio < 0.9 and first.candidate_p50_ms < first.baseline_p50_ms
    assert not first.cached and proxy.measure(trial).cached  # the same structure on this CPU: not timed again
    nothing_removed = Recipe.model_validate({**base, "stages": [{"distill": {}}]})
    assert proxy.measure(nothing_removed) is None
    assert not any((proxy.scratch / "genai").glob("*candidate-*"))  # each candidate's build is removed once timed

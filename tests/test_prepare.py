"""One preparation: the main run, a torchrun rank and a search trial's context prepare a recipe alike."""

from __future__ import annotations

import pytest

from greencompress.pipeline import execute
from greencompress.pipeline import prepare as preparation
from greencompress.pipeline.recipe import load_recipe
from tests.models.test_huggingface import small_rows, tiny_bert, write_csv


class Prepared(Exception):
    """Stops a path right after it prepared (what follows is not this test's concern)."""


def fingerprints_of_every_path(recipe, tmp_path, monkeypatch) -> list[dict]:
    real, seen = preparation.prepare, []

    def stop_after(recipe, progress=None):
        seen.append(real(recipe, progress).fingerprint())
        raise Prepared

    def observe(recipe, progress=None):
        prepared = real(recipe, progress)
        seen.append(prepared.fingerprint())
        return prepared

    monkeypatch.setattr(execute, "prepare", stop_after)
    with pytest.raises(Prepared):
        execute.run(recipe, execute.create_run_dir(recipe, tmp_path / "runs"))
    with pytest.raises(Prepared):
        execute.serve_fine_tuning(recipe)
    monkeypatch.setattr(preparation, "prepare", observe)
    from greencompress.search.study import _TrialContext

    context = _TrialContext(recipe, None)
    assert context.original is not None and len(seen) == 3
    return seen


def test_a_cnn_is_prepared_alike_for_the_run_a_torchrun_rank_and_a_search_trial(tiny_recipe, tmp_path, monkeypatch):
    run, rank, trial = fingerprints_of_every_path(load_recipe(tiny_recipe), tmp_path, monkeypatch)
    assert run == rank == trial
    assert run["task"] == "image-classification" and run["inputs"]["image_shape"] == (3, 32, 32)
    assert run["inputs"]["structure"] == "channels" and run["head"] == {}


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
def test_a_text_model_is_prepared_alike_with_its_tokens_and_fitted_head(tmp_path, monkeypatch, write_recipe, task):
    folder = tiny_bert(tmp_path / "bert", head=task == "text-classification")
    csv_file = write_csv(tmp_path / "texts.csv", small_rows())
    recipe = load_recipe(
        write_recipe(f"""
        name: text
        model: {{source: huggingface, path: {folder}, task: {task}}}
        data: {{kind: text, path: {csv_file}, eval_split: test, batch_size: 8}}
        stages: [{{quantize: {{method: dynamic}}}}]
        benchmark: {{batch_sizes: [1], sequence_lengths: [16], runtimes: [onnxruntime], threads: 1}}
        energy: {{idle_s: 0}}
    """)
    )
    assert recipe.model.task == ("sentence-embedding" if task == "feature-extraction" else task)  # the alias resolved
    run, rank, trial = fingerprints_of_every_path(recipe, tmp_path, monkeypatch)
    assert run == rank == trial
    assert run["inputs"]["structure"] == "encoder" and run["inputs"]["image_shape"] is None
    assert run["inputs"]["names"][:2] == ("input_ids", "attention_mask")
    # A torchrun rank gets the text model fed tokens and, for an embedder, the centroids rank 0 fitted.
    assert bool(run["head"]) == (task == "feature-extraction")

"""The search: section: located errors for bad input, the sampler chosen from the objectives, durations read."""

from __future__ import annotations

import pytest

from greencompress.core.errors import GreencompressError, RecipeError
from greencompress.pipeline.recipe import Recipe, load_recipe, recipe_to_dict
from greencompress.search.spec import SearchRecipe, SearchSpec
from greencompress.search.trial import trial_recipe


def search_recipe(tiny_recipe, search: str, stages: str = "") -> object:
    text = tiny_recipe.read_text()
    if stages:
        text = text.replace("  - quantize: {calibration_samples: 12}", stages)
    tiny_recipe.write_text(text + search)
    return tiny_recipe


def test_errors_name_the_field_and_what_was_expected(tiny_recipe):
    path = search_recipe(
        tiny_recipe,
        "search:\n  space: {prune_ratio: {low: 0.6, high: 0.2}, runtime: [tensorflow]}\n  budget: {max_time: soon}\n",
    )
    with pytest.raises(RecipeError) as error:
        load_recipe(path, schema=SearchRecipe)
    message = str(error.value)
    assert "search.space.prune_ratio: low (0.6) must be <= high (0.2)" in message
    assert "search.space.runtime" in message and "tensorflow" in message
    assert "search.budget.max_time" in message and "'30m'" in message


def test_both_pruning_targets_or_an_empty_space_are_refused(tiny_recipe):
    both = "search:\n  space: {prune_ratio: {low: 0.2, high: 0.4}, target_macs: {low: 0.5, high: 0.8}}\n"
    with pytest.raises(RecipeError, match="search.space: give prune_ratio or target_macs, not both"):
        load_recipe(search_recipe(tiny_recipe, both), schema=SearchRecipe)


def test_a_dimension_whose_stage_is_missing_stops_the_search_before_any_trial(tiny_recipe, tmp_path):
    from greencompress.search.study import Search

    recipe = load_recipe(
        search_recipe(tiny_recipe, "search:\n  space: {finetune_epochs: [1, 2]}\n"), schema=SearchRecipe
    )
    with pytest.raises(GreencompressError, match="finetune_epochs varies stages.finetune, which the recipe does not"):
        Search(recipe, tmp_path, f"sqlite:///{tmp_path / 'study.db'}")


def test_sampler_follows_the_objectives_and_durations_read_as_seconds():
    spec = SearchSpec.model_validate({"space": {"round_to": [1, 8]}, "budget": {"max_time": "1.5h"}})
    assert (spec.objective_names, spec.sampler_name, spec.budget.max_time) == (
        ["top1", "energy_ratio"],
        "nsga2",
        5400.0,
    )
    alone = SearchSpec.model_validate({"space": {"round_to": [1, 8]}, "objectives": {"accuracy": False}})
    assert (alone.objective_names, alone.directions, alone.sampler_name) == (["energy_ratio"], ["minimize"], "tpe")


def test_a_trial_is_the_base_recipe_with_the_drawn_settings(tiny_recipe):
    from greencompress.pipeline.recipe import Recipe, recipe_to_dict

    stages = (
        "  - prune: {target_macs: 0.6, ignore: [fc]}\n  - finetune: {epochs: 3}\n"
        "  - quantize: {calibration_samples: 12}"
    )
    recipe = load_recipe(
        search_recipe(tiny_recipe, "search:\n  space: {prune_ratio: {low: 0.2, high: 0.4}}\n", stages),
        schema=SearchRecipe,
    )
    params = {
        "prune_ratio": 0.25,
        "round_to": 1,
        "finetune_epochs": 2,
        "calibration_method": "percentile",
        "qat": True,
        "layers": ["conv1"],
    }
    trial = Recipe.model_validate(trial_recipe(recipe_to_dict(recipe), recipe.search, params, "tiny-trial007"))
    prune, finetune, quantize = (stage.config for stage in trial.stages)
    assert (prune.ratio, prune.target_macs, prune.round_to, prune.ignore) == (0.25, None, None, ["conv1", "fc"])
    assert finetune.epochs == 2 and quantize.calibration_method == "percentile"
    assert quantize.qat.learning_rate == recipe.search.qat_settings.learning_rate
    assert (trial.name, trial.search, trial.benchmark.batch_sizes) == ("tiny-trial007", None, [1])


def test_depth_drawn_adds_updates_or_takes_out_the_depth_stage(tiny_recipe):
    from greencompress.pipeline.recipe import Recipe, recipe_to_dict

    stages = "  - prune: {ratio: 0.3}\n  - finetune: {epochs: 3}\n  - quantize: {calibration_samples: 12}"
    recipe = load_recipe(search_recipe(tiny_recipe, "search:\n  space: {depth: [0, 2]}\n", stages), schema=SearchRecipe)
    assert recipe.search.space.dimensions() == ["depth"]

    def techniques(params, base=recipe_to_dict(recipe)):
        trial = Recipe.model_validate(trial_recipe(base, recipe.search, params, "t"))
        return [(stage.technique, getattr(stage.config, "remove", None)) for stage in trial.stages]

    assert techniques({"depth": 2}) == [("depth", 2), ("prune", None), ("finetune", None), ("quantize", None)]
    assert techniques({"depth": 0}) == [("prune", None), ("finetune", None), ("quantize", None)]
    with_stage = recipe_to_dict(recipe)
    with_stage["stages"].insert(0, {"depth": {"remove": 1, "importance": "similarity"}})
    assert techniques({"depth": 3}, with_stage)[0] == ("depth", 3)
    assert (
        Recipe.model_validate(trial_recipe(with_stage, recipe.search, {"depth": 3}, "t")).stages[0].config.importance
        == "similarity"
    )
    assert techniques({"depth": 0}, with_stage)[0] == ("prune", None)
    with pytest.raises(RecipeError, match="every choice must be >= 0"):
        load_recipe(search_recipe(tiny_recipe, "search:\n  space: {depth: [-1]}\n"), schema=SearchRecipe)


def test_serving_runtimes_are_measured_in_every_trial_not_drawn(tiny_recipe):
    pytest.importorskip("openvino")
    from greencompress.pipeline.recipe import Recipe, recipe_to_dict

    recipe = load_recipe(
        search_recipe(
            tiny_recipe,
            "search:\n  space: {prune_ratio: {low: 0.2, high: 0.4}, runtime: [openvino]}\n",
            "  - prune: {ratio: 0.3}\n  - quantize: {calibration_samples: 12}",
        ),
        schema=SearchRecipe,
    )
    assert recipe.search.space.dimensions() == ["prune_ratio"]  # what Optuna draws
    trial = Recipe.model_validate(trial_recipe(recipe_to_dict(recipe), recipe.search, {"prune_ratio": 0.3}, "t"))
    assert trial.benchmark.runtimes == ["onnxruntime", "openvino"]  # the reference runtime is always measured
    assert recipe.search.serving_runtimes(trial.benchmark.runtimes) == ["openvino"]
    with pytest.raises(RecipeError, match="runtime names where each trial is measured; it is not varied"):
        load_recipe(search_recipe(tiny_recipe, "search:\n  space: {runtime: [onnxruntime]}\n"), schema=SearchRecipe)


def test_a_study_an_earlier_greencompress_scored_another_way_is_not_resumed(tiny_recipe, tmp_path):
    import optuna

    from greencompress.search.study import _fingerprint, open_study

    recipe = load_recipe(
        search_recipe(
            tiny_recipe,
            "search:\n  space: {prune_ratio: {low: 0.2, high: 0.4}}\n",
            "  - prune: {ratio: 0.3}\n  - quantize: {calibration_samples: 12}",
        ),
        schema=SearchRecipe,
    )
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    old = optuna.create_study(study_name=recipe.name, storage=storage, directions=recipe.search.directions)
    old.set_user_attr("fingerprint", _fingerprint(recipe))  # as the earlier version left it: no "scoring"
    with pytest.raises(
        GreencompressError,
        match="scored trials by one drawn runtime; this one scores them by paired ratio to the anchor",
    ):
        open_study(recipe, storage, 0)
    old.set_user_attr("scoring", "cheapest serving runtime")  # the next version: absolute joules ranked trials
    with pytest.raises(GreencompressError, match="scored trials by cheapest serving runtime"):
        open_study(recipe, storage, 0)
    assert open_study(recipe, f"sqlite:///{tmp_path / 'new.db'}", 0).user_attrs["scoring"]


def test_a_worker_that_loses_the_race_to_create_the_storage_s_tables_tries_again():
    import sqlalchemy.exc

    from greencompress.search.study import _connected

    tries = []

    def connect():  # what two workers on an empty PostgreSQL database saw: the other created the tables first
        tries.append(1)
        if len(tries) < 3:
            raise sqlalchemy.exc.IntegrityError("CREATE TABLE studies", {}, Exception("pg_type_typname_nsp_index"))
        return "storage"

    assert _connected(connect) == "storage" and len(tries) == 3

    def always_refused():
        raise sqlalchemy.exc.IntegrityError("CREATE TABLE studies", {}, Exception("a real conflict"))

    with pytest.raises(sqlalchemy.exc.IntegrityError):  # not forever: the error comes through in the end
        _connected(always_refused, attempts=2)

    sqlite_tries = []

    def sqlite_connect():  # two workers on an empty SQLite file: the loser's CREATE TABLE finds the table there
        sqlite_tries.append(1)
        if len(sqlite_tries) < 2:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return "storage"

    assert _connected(sqlite_connect) == "storage" and len(sqlite_tries) == 2

    def locked():  # any other operational error is not a lost race: it comes through at once
        sqlite_tries.append(1)
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("unable to open database file"))

    with pytest.raises(sqlalchemy.exc.OperationalError, match="unable to open"):
        _connected(locked)
    assert len(sqlite_tries) == 3


def test_a_transformer_s_space_draws_heads_and_ffn_and_a_cnn_s_refuses_them(tiny_recipe, write_recipe):
    from greencompress.pipeline.recipe import Recipe, recipe_to_dict
    from tests.models.test_huggingface import small_rows, tiny_bert, write_csv

    with pytest.raises(RecipeError, match="search.space.heads: heads and ffn remove a transformer"):
        load_recipe(
            search_recipe(
                tiny_recipe,
                "search:\n  space: {heads: [0, 0.5]}\n",
                "  - prune: {ratio: 0.3}\n  - quantize: {calibration_samples: 12}",
            ),
            schema=SearchRecipe,
        )
    folder = tiny_bert(tiny_recipe.parent / "bert")
    base = f"""
        name: b
        model: {{source: huggingface, path: {folder}, task: text-classification}}
        data: {{kind: text, path: {write_csv(tiny_recipe.parent / "t.csv", small_rows())}, eval_split: test,
                calibration_split: train}}
        stages:
          - prune: {{ratio: 0.25}}
          - quantize: {{method: dynamic}}
        benchmark: {{sequence_lengths: [16, 64]}}
        search:
          space: %s
    """
    with pytest.raises(RecipeError, match="search.space.target_macs: not for a transformer"):
        load_recipe(write_recipe(base % "{target_macs: {low: 0.3, high: 0.6}}"), schema=SearchRecipe)
    with pytest.raises(RecipeError, match="search.space.heads: expected shares removed"):
        load_recipe(write_recipe(base % "{heads: [0.5, 1.0]}"), schema=SearchRecipe)
    recipe = load_recipe(write_recipe(base % "{heads: [0, 0.5], depth: [0, 1]}"), schema=SearchRecipe)
    assert recipe.scored_sequence_length() == 64  # the longest benchmarked, unless objectives.sequence_length
    trial = Recipe.model_validate(
        trial_recipe(
            recipe_to_dict(recipe), recipe.search, {"heads": 0.5, "depth": 1}, "t", recipe.scored_sequence_length()
        )
    )
    depth, prune, _ = (stage.config for stage in trial.stages)
    # Heads as drawn; the FFN keeps the share the base's ratio gave it.
    assert (depth.remove, prune.transformer_ratios, prune.ratio) == (1, (0.5, 0.25), None)
    assert (trial.benchmark.batch_sizes, trial.benchmark.sequence_lengths) == ([1], [64])


LM_SEARCH = """name: lm
model: {{source: huggingface, task: text-generation, path: {folder}}}
data: {{kind: text}}
stages:
  - depth: {{remove: 1, importance: similarity}}
  - distill: {{tokens: 1024}}
  - weight_only: {{bits: 8, group_size: 32, method: rtn}}
  - weight_only: {{bits: 4, group_size: 32, method: rtn, int8_layers: [down_proj]}}
benchmark: {{batch_sizes: [1, 2], sequence_lengths: [16, 32], new_tokens: 16, runtimes: []}}
search:
  space: {space}
{extra}"""


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    from tests.models.tiny_lm import tiny_llama_folder

    return tiny_llama_folder(tmp_path_factory.mktemp("lm") / "llama")


def lm_search(tmp_path, folder, space: str, extra: str = ""):
    path = tmp_path / "lm_search.yaml"
    path.write_text(LM_SEARCH.format(folder=folder, space=space, extra=extra))
    return load_recipe(path, schema=SearchRecipe)


def test_a_language_model_search_minimises_perplexity_increase_and_j_per_token_under_a_perplexity_budget(
    tmp_path, lm_folder
):
    recipe = lm_search(
        tmp_path,
        lm_folder,
        "{depth: [0, 1], ffn: [0, 0.5], heads: [0, 0.5], bits: [4, 8], group_size: [16, 32]}",
        "  objectives: {prefill: true}\n  budget: {max_perplexity_increase: 12}\n",
    )
    spec = recipe.search
    assert spec.objective_names == ["perplexity_increase", "energy_ratio", "prefill_energy_ratio"]
    assert spec.directions == ["minimize"] * 3
    budget = recipe.search_budget()
    assert (budget.metric, budget.max_perplexity_increase) == ("perplexity", 12)
    assert budget.excess(None, perplexity_increase=15.0) == 3.0 and budget.excess(None, perplexity_increase=4) < 0
    assert budget.describe() == "perplexity within +12% of the original model's"
    assert recipe.scored_sequence_length() == 32  # the longest prompt benchmarked, unless objectives say
    # Without a budget of its own: the recipe's perplexity gate, else the default.
    assert lm_search(tmp_path, lm_folder, "{bits: [4, 8]}").search_budget().max_perplexity_increase == 5.0


@pytest.mark.parametrize(
    "space, extra, message",
    [
        ("{finetune_epochs: [1, 2]}", "", "search.space.finetune_epochs: not a setting a text-generation model's"),
        ("{prune_ratio: {low: 0.2, high: 0.5}}", "", "search.space.prune_ratio: not a setting"),
        ("{bits: [4], runtime: [onnxruntime]}", "", "search.space.runtime: not a setting"),
        ("{bits: [3]}", "", "search.space.bits"),
        ("{group_size: [8]}", "", "every group size must be >= 16"),
    ],
)
def test_a_language_model_search_refuses_settings_it_cannot_vary(tmp_path, lm_folder, space, extra, message):
    with pytest.raises(RecipeError, match=message):
        lm_search(tmp_path, lm_folder, space, extra)


def test_a_classifier_search_refuses_a_language_models_settings(tiny_recipe):
    with pytest.raises(RecipeError, match="search.space.bits: not a setting a"):
        load_recipe(search_recipe(tiny_recipe, "search:\n  space: {bits: [4, 8]}\n"), schema=SearchRecipe)
    space = "search:\n  space: {calibration_method: [minmax]}\n  objectives: {prefill: true}\n"
    with pytest.raises(RecipeError, match="objectives.prefill: the prefill's J per prompt token"):
        load_recipe(search_recipe(tiny_recipe, space), schema=SearchRecipe)
    space = "search:\n  space: {calibration_method: [minmax]}\n  budget: {max_perplexity_increase: 5}\n"
    with pytest.raises(RecipeError, match="max_perplexity_increase: judges a language model"):
        load_recipe(search_recipe(tiny_recipe, space), schema=SearchRecipe)


@pytest.mark.parametrize(
    "params, stages",
    [
        # nothing removed: no structural stage, nothing to heal; only the last grid, as drawn
        ({"depth": 0, "ffn": 0, "bits": 8}, ["weight_only"]),
        ({"depth": 1, "ffn": 0, "bits": 4}, ["depth", "distill", "weight_only"]),
        ({"depth": 0, "ffn": 0.5, "bits": 4}, ["prune", "distill", "weight_only"]),
        ({"depth": 1, "ffn": 0.5, "heads": 0.5, "group_size": 16}, ["depth", "prune", "distill", "weight_only"]),
    ],
)
def test_a_language_model_trial_makes_one_candidate_and_measures_it_beside_the_anchor_only(
    tmp_path, lm_folder, params, stages
):
    recipe = lm_search(tmp_path, lm_folder, "{depth: [0, 1], ffn: [0, 0.5], heads: [0, 0.5], bits: [4, 8]}")
    data = trial_recipe(recipe_to_dict(recipe), recipe.search, params, "t", 32, generating=True)
    trial = Recipe.model_validate(data)
    assert [stage.technique for stage in trial.stages] == stages
    grid = trial.stages[-1].config
    assert grid.bits == params.get("bits", 4) and grid.group_size == params.get("group_size", 32)
    assert grid.int8_layers == ([] if grid.bits == 8 else ["down_proj"])  # an int8 grid has no int8 overrides
    if "prune" in stages:
        prune = trial.stage("prune")
        assert prune.transformer_ratios == (params.get("heads", 0.0), params["ffn"])
        assert prune.importance == "activation"  # measured contribution, not the weight norms CNNs default to
    if "depth" in stages:
        assert trial.stage("depth").importance == "similarity"  # the base's, or Block Influence where added
    assert trial.benchmark.measure == "last"
    assert (trial.benchmark.batch_sizes, trial.benchmark.sequence_lengths) == ([1], [32])


def test_a_search_whose_model_cannot_be_prepared_stops_once_instead_of_failing_trial_after_trial(
    tiny_recipe, tmp_path, monkeypatch
):
    from greencompress.search import study

    space = "search:\n  space: {calibration_method: [minmax, entropy]}\n"
    recipe = load_recipe(search_recipe(tiny_recipe, space), schema=SearchRecipe)
    search = study.Search(recipe, tmp_path, f"sqlite:///{tmp_path / 'study.db'}")
    attempts = []

    def unpreparable(*args):
        attempts.append(1)
        raise GreencompressError("data: cannot be read")

    monkeypatch.setattr(study, "_TrialContext", unpreparable)
    with pytest.raises(GreencompressError, match="data: cannot be read"):
        search.optimize()
    assert len(attempts) == 1 and search.study.get_trials() == []


def test_a_search_whose_trials_all_fail_alike_stops_after_three_naming_the_error(tiny_recipe, tmp_path, monkeypatch):
    from greencompress.search import study
    from greencompress.search.summary import rows_of

    space = "search:\n  space: {calibration_method: [minmax, entropy, percentile]}\n  proxy: {enabled: false}\n"
    recipe = load_recipe(search_recipe(tiny_recipe, space), schema=SearchRecipe)
    search = study.Search(recipe, tmp_path, f"sqlite:///{tmp_path / 'study.db'}")

    def loaded(self, recipe, progress):
        self.recipe, self.baseline_validation_top1 = recipe, None

    monkeypatch.setattr(study._TrialContext, "__init__", loaded)

    def broken(self, *args):  # every point fails the same way: the fault is the search's, not the point's
        raise GreencompressError("data: the evaluation text is too short for 90001 distinct prompts")

    monkeypatch.setattr(study._TrialContext, "run_trial", broken)
    with pytest.raises(GreencompressError, match="the last 3 trials failed with the same error.*90001 distinct"):
        search.optimize()
    rows = rows_of(search.study)
    assert [row.state for row in rows] == ["fail"] * 3
    assert rows[0].reason == "GreencompressError: data: the evaluation text is too short for 90001 distinct prompts"

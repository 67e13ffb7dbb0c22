"""Pruning on a real user's architecture: channels really removed, unsafe groups left alone, zeros made permanent."""

from __future__ import annotations

import pytest
import torch

from greencompress.compress.prune import (
    StructuredPruneConfig,
    UnstructuredPruneConfig,
    prune_structured,
    prune_unstructured,
    unsafe_channel_layers,
)
from greencompress.compress.technique import replay_pruning
from greencompress.core.errors import GreencompressError
from greencompress.models.inputs import ModelInputs
from greencompress.models.sources import resolve_callable
from tests.conftest import RECIPES

ARCHITECTURE = f"{RECIPES / 'models' / 'cifar_resnet.py'}:resnet20"
RESIDUAL_STREAM = ["conv1", *[f"layer{s}.{b}.conv2" for s in (1, 2, 3) for b in range(3)]]


@pytest.fixture
def resnet20():
    torch.manual_seed(0)
    return resolve_callable(ARCHITECTURE)().eval()


def test_zero_padding_shortcuts_make_the_residual_stream_unsafe(resnet20):
    convs = [name for name, m in resnet20.named_modules() if isinstance(m, torch.nn.Conv2d)]
    unsafe = unsafe_channel_layers(resnet20, torch.zeros(1, 3, 32, 32), convs)
    assert sorted(unsafe) == sorted(RESIDUAL_STREAM)  # the convs inside each block stay prunable
    assert "breaks the forward pass" in unsafe["conv1"]


def test_structured_pruning_removes_channels_and_replays_on_a_fresh_model(resnet20):
    config = StructuredPruneConfig(method="structured", importance="l1", ratio=0.5)
    result = prune_structured(resnet20, ModelInputs.image((3, 32, 32)), config, calibration_batches=None)
    assert sorted(result.untouched_layers) == sorted(RESIDUAL_STREAM)
    assert 0.45 < result.macs_after / result.macs_before < 0.55
    assert result.model.layer1[0].conv1.out_channels == 8 and result.model.linear.out_features == 10
    inputs = torch.randn(4, 3, 32, 32)
    fresh = replay_pruning(
        resolve_callable(ARCHITECTURE)().eval(), ModelInputs.image((3, 32, 32)), result.pruning_history
    )
    fresh.load_state_dict(result.model.state_dict())
    with torch.no_grad():
        assert torch.allclose(fresh(inputs), result.model(inputs), atol=1e-6)
    assert resnet20.layer1[0].conv1.out_channels == 16  # the input model is not modified


@pytest.mark.parametrize("importance", ["l2", "bn_scale", "taylor", "random"])
def test_every_importance_criterion_prunes(resnet20, importance):
    import numpy as np

    batches = [(np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32), np.array([0, 1, 2, 3]))]
    config = StructuredPruneConfig(method="structured", importance=importance, ratio=0.25, round_to=4)
    result = prune_structured(resnet20, ModelInputs.image((3, 32, 32)), config, calibration_batches=batches)
    assert result.macs_after < result.macs_before
    assert result.model.layer1[0].conv1.out_channels % 4 == 0


def test_unknown_ignored_layer_is_named(resnet20):
    with pytest.raises(GreencompressError, match="no layer named classifier"):
        prune_structured(
            resnet20,
            ModelInputs.image((3, 32, 32)),
            StructuredPruneConfig(ignore=["classifier"]),
            calibration_batches=None,
        )


def test_an_ignore_list_keeps_its_layers_and_the_classifier_s_outputs(resnet20):
    protected = ["layer1.0.conv1", "layer2.0.conv1"]
    result = prune_structured(
        resnet20,
        ModelInputs.image((3, 32, 32)),
        StructuredPruneConfig(ignore=protected, ratio=0.5),
        calibration_batches=None,
    )
    model = result.model
    assert (model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels) == (16, 32)
    assert model.layer1[1].conv1.out_channels == 8  # not listed: pruned
    assert model.linear.out_features == 10  # the classes, although `ignore` does not list the classifier
    assert (
        prune_structured(
            resnet20,
            ModelInputs.image((3, 32, 32)),
            StructuredPruneConfig(ignore=[], ratio=0.5),
            calibration_batches=None,
        ).model.linear.out_features
        == 10
    )


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_sparsity_is_exact_and_permanent(resnet20, scope):
    result = prune_unstructured(resnet20, UnstructuredPruneConfig(method="unstructured", sparsity=0.7, scope=scope))
    assert result.total_sparsity == pytest.approx(0.7, abs=0.01)
    if scope == "layer":
        assert all(abs(s - 0.7) < 0.02 for s in result.layer_sparsity.values())
    assert not any(name.endswith("_orig") or name.endswith("_mask") for name in result.model.state_dict())
    assert result.zipped_bytes_after < 0.6 * result.zipped_bytes_before


def test_target_macs_finds_the_ratio_that_reaches_it(resnet20):
    config = StructuredPruneConfig(method="structured", target_macs=0.7)
    result = prune_structured(resnet20, ModelInputs.image((3, 32, 32)), config, calibration_batches=None)
    share = result.macs_after / result.macs_before
    assert 0.66 < share <= 0.7  # reached, and not overshot by more than a few channels
    assert 0.2 < result.ratio < 0.4


def test_unreachable_target_macs_names_the_layers_kept_whole(resnet20):
    with pytest.raises(GreencompressError, match=r"target_macs: 0\.05 cannot be reached.*layer1\.0\.conv2"):
        prune_structured(
            resnet20, ModelInputs.image((3, 32, 32)), StructuredPruneConfig(target_macs=0.05), calibration_batches=None
        )


@pytest.mark.parametrize("schedule", ["linear", "cubic"])
def test_iterative_steps_follow_the_schedule_and_train_in_between(resnet20, schedule):
    from greencompress.compress.prune import step_targets

    channels_seen, histories = [], []

    def train_between(model, step, history):
        channels_seen.append(model.layer1[0].conv1.out_channels)
        histories.append(history)
        trained = __import__("copy").deepcopy(model)
        with torch.no_grad():
            trained.linear.bias.add_(1.0)  # a visible change that must land in the pruned model
        return trained

    config = StructuredPruneConfig(method="structured", ratio=0.5, iterative_steps=3, schedule=schedule)
    result = prune_structured(
        resnet20, ModelInputs.image((3, 32, 32)), config, calibration_batches=None, train_between=train_between
    )
    expected = [int(16 * (1 - target)) for target in step_targets(schedule, 0.5, 3)]  # as Torch-Pruning rounds
    assert channels_seen == expected[:2] and result.model.layer1[0].conv1.out_channels == 8
    assert torch.allclose(result.model.linear.bias, resnet20.linear.bias + 2.0)  # trained after steps 1 and 2
    assert step_targets("cubic", 0.5, 3)[0] > step_targets("linear", 0.5, 3)[0]
    # The history handed over between steps rebuilds the model as pruned so far (what torchrun ranks receive).
    from greencompress.compress.technique import replay_pruning

    fresh = replay_pruning(__import__("copy").deepcopy(resnet20), ModelInputs.image((3, 32, 32)), list(histories[0]))
    assert fresh.layer1[0].conv1.out_channels == expected[0]


def test_gradual_unstructured_sparsity_grows_and_ends_on_target(resnet20):
    seen = []

    def train_between(model, step, history):
        assert history == ()  # zeros change no architecture
        layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        seen.append(sum(int((m.weight == 0).sum()) for m in layers) / sum(m.weight.numel() for m in layers))
        return model

    config = UnstructuredPruneConfig(method="unstructured", sparsity=0.8, iterative_steps=4, schedule="cubic")
    result = prune_unstructured(resnet20, config, train_between=train_between)
    assert len(seen) == 3 and seen == sorted(seen) and seen[0] == pytest.approx(0.8 * (1 - 0.75**3), abs=0.01)
    assert result.total_sparsity == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"ratio": 1.0}, "less than 1"),
        ({"ratio": 0.0}, "greater than 0"),
        ({"importance": "magnitude"}, "'l1', 'l2', 'bn_scale', 'taylor', 'random' or 'activation'"),
        ({"ratio": 0.3, "target_macs": 0.5}, "either ratio or target_macs"),
        ({"method": "unstructured", "ratio": 0.3}, "not a setting of unstructured pruning"),
        ({"method": "sparse"}, "'structured', 'unstructured'"),
    ],
)
def test_bad_prune_options_are_refused(fields, message):
    from pydantic import ValidationError

    from greencompress.compress.prune import Prune

    with pytest.raises(ValidationError, match=message):
        Prune().parse(fields)


def test_a_prune_stage_is_read_by_its_scheme_and_written_back_with_the_same_keys(write_recipe):
    from greencompress.pipeline.recipe import load_recipe, recipe_to_dict

    recipe = load_recipe(
        write_recipe("""
        name: t
        model: {source: builtin, name: resnet18-digits-64}
        data: {kind: digits}
        stages:
          - prune: {ratio: 0.25}
          - prune: {method: unstructured, sparsity: 0.7}
    """)
    )
    structured, unstructured = (stage.config for stage in recipe.stages)
    assert isinstance(structured, StructuredPruneConfig) and structured.ratio == 0.25
    assert isinstance(unstructured, UnstructuredPruneConfig) and unstructured.scope == "global"
    written = [stage["prune"] for stage in recipe_to_dict(recipe)["stages"]]
    assert written[0]["method"] == "structured" and "sparsity" not in written[0]
    assert written[1] == {
        "iterative_steps": 1,
        "schedule": "linear",
        "finetune_between": None,
        "method": "unstructured",
        "sparsity": 0.7,
        "scope": "global",
    }
    # A key of the other scheme is named where it stands, with the keys a prune stage takes.
    from greencompress.core.errors import RecipeError

    with pytest.raises(RecipeError, match=r"stages\.0\.prune\.ratio: not a setting of unstructured pruning; it takes"):
        load_recipe(
            write_recipe(
                "name: t\nmodel: {source: builtin, name: resnet18-digits-64}\ndata: {kind: digits}\n"
                "stages: [{prune: {method: unstructured, ratio: 0.3}}]\n"
            )
        )
    with pytest.raises(RecipeError, match="did you mean 'sparsity'"):
        load_recipe(
            write_recipe(
                "name: t\nmodel: {source: builtin, name: resnet18-digits-64}\ndata: {kind: digits}\n"
                "stages: [{prune: {method: unstructured, sparsty: 0.3}}]\n"
            )
        )


@pytest.mark.slow
def test_round_to_auto_takes_the_rounding_the_runtimes_run_fastest_and_names_where_it_is_still_slower(resnet20):
    """The proxy's choice, on a stand-in for the timing: channel counts that are not multiples of 8 run slow on one
    runtime (as ONNX Runtime's int8 convolutions did on the pruned ResNet-56), the rest at their MACs."""
    from greencompress.compress.prune import Prune, choose_round_to

    def latency_check(candidate, baseline):
        widths = [m.out_channels for m in candidate.modules() if isinstance(m, torch.nn.Conv2d)]
        share = sum(widths) / sum(m.out_channels for m in baseline.modules() if isinstance(m, torch.nn.Conv2d))
        odd = any(width % 8 for width in widths)
        return [
            {"runtime": "onnxruntime", "batch_size": 1, "ratio": (2.0 if odd else share), "low": 0, "high": 0},
            {"runtime": "openvino", "batch_size": 1, "ratio": share, "low": 0, "high": 0},
        ]

    config = StructuredPruneConfig(ratio=0.4, round_to="auto")
    choice = choose_round_to(
        resnet20, ModelInputs.image((3, 32, 32)), config, lambda: None, latency_check, choices=(1, 4, 8, 16)
    )
    assert choice["measured"]["1"][0]["ratio"] == 2.0  # counts left odd: the trap
    assert choice["chosen"] == 8 and choice["round_to"] == 8 and choice["worst_ratio"] < 1 and not choice["slower_on"]

    def always_slower(candidate, baseline):
        return [{"runtime": "onnxruntime", "batch_size": 32, "ratio": 1.3, "low": 1.2, "high": 1.4}]

    stuck = choose_round_to(resnet20, ModelInputs.image((3, 32, 32)), config, lambda: None, always_slower, choices=(1,))
    assert stuck["chosen"] == 1 and stuck["slower_on"] == ["onnxruntime at batch 32 (1.30x untrained)"]
    facts = Prune().describe({}, {"round_to_auto": stuck})
    assert "still SLOWER than the unpruned model on onnxruntime at batch 32" in " ".join(facts)
    with pytest.raises(GreencompressError, match="round_to: auto times the pruned model on the run's file runtimes"):
        choose_round_to(resnet20, ModelInputs.image((3, 32, 32)), config, lambda: None, None)


@pytest.mark.slow
def test_an_unset_round_to_is_auto_where_a_runtime_of_files_is_measured_and_none_elsewhere(resnet20, monkeypatch):
    """The default never leaves a served CNN's channel counts off the fast kernels without measuring them."""
    from types import SimpleNamespace

    from greencompress.compress import prune as prune_module
    from greencompress.compress.technique import TorchModel

    chosen = []

    def measured_choice(model, inputs, config, calibration, latency_check, choices=prune_module.ROUND_TO_CHOICES):
        chosen.append(latency_check)
        return {"round_to": 8, "chosen": 8, "worst_ratio": 0.9, "slower_on": [], "measured": {}}

    monkeypatch.setattr(prune_module, "choose_round_to", measured_choice)
    calibration = [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.int64))]
    context = SimpleNamespace(
        data=SimpleNamespace(calibration=calibration), batch_size=4, inputs=ModelInputs.image((3, 32, 32))
    )
    monkeypatch.setattr("greencompress.models.data.batches", lambda data, size, limit=None: iter(data))
    config = StructuredPruneConfig(ratio=0.4)
    served = prune_module._prune_channels(
        config, TorchModel(resnet20), SimpleNamespace(**vars(context), latency_check="timer"), None
    )
    assert chosen == ["timer"] and served.settings["round_to"] == "auto (the default): 8"
    widths = [m.out_channels for m in served.model.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(width % 8 == 0 for width in widths)
    alone = prune_module._prune_channels(
        config, TorchModel(resnet20), SimpleNamespace(**vars(context), latency_check=None), None
    )
    assert len(chosen) == 1 and alone.settings["round_to"].startswith("none (the default where no runtime of files")
    technique = prune_module.Prune()
    assert technique.uses_latency_check(config) and not technique.uses_latency_check(StructuredPruneConfig(round_to=1))

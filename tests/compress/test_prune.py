"""Pruning on a real user's architecture: channels really removed, unsafe groups left alone, zeros made permanent."""

from __future__ import annotations

import pytest
import torch

from greencompress.compress.prune import prune_structured, prune_unstructured, replay_pruning, unsafe_channel_layers
from greencompress.errors import GreencompressError
from greencompress.models import resolve_callable
from greencompress.recipe import PruneConfig
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
    config = PruneConfig(method="structured", importance="l1", ratio=0.5)
    result = prune_structured(resnet20, (3, 32, 32), config, calibration_batches=None)
    assert sorted(result.untouched_layers) == sorted(RESIDUAL_STREAM)
    assert 0.45 < result.macs_after / result.macs_before < 0.55
    assert result.model.layer1[0].conv1.out_channels == 8 and result.model.linear.out_features == 10
    inputs = torch.randn(4, 3, 32, 32)
    fresh = replay_pruning(resolve_callable(ARCHITECTURE)().eval(), (3, 32, 32), result.pruning_history)
    fresh.load_state_dict(result.model.state_dict())
    with torch.no_grad():
        assert torch.allclose(fresh(inputs), result.model(inputs), atol=1e-6)
    assert resnet20.layer1[0].conv1.out_channels == 16  # the input model is not modified


@pytest.mark.parametrize("importance", ["l2", "bn_scale", "taylor", "random"])
def test_every_importance_criterion_prunes(resnet20, importance):
    import numpy as np

    batches = [(np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32), np.array([0, 1, 2, 3]))]
    config = PruneConfig(method="structured", importance=importance, ratio=0.25, round_to=4)
    result = prune_structured(resnet20, (3, 32, 32), config, calibration_batches=batches)
    assert result.macs_after < result.macs_before
    assert result.model.layer1[0].conv1.out_channels % 4 == 0


def test_unknown_ignored_layer_is_named(resnet20):
    with pytest.raises(GreencompressError, match="no layer named classifier"):
        prune_structured(resnet20, (3, 32, 32), PruneConfig(ignore=["classifier"]), calibration_batches=None)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_unstructured_sparsity_is_exact_and_permanent(resnet20, scope):
    result = prune_unstructured(resnet20, PruneConfig(method="unstructured", sparsity=0.7, scope=scope))
    assert result.total_sparsity == pytest.approx(0.7, abs=0.01)
    if scope == "layer":
        assert all(abs(s - 0.7) < 0.02 for s in result.layer_sparsity.values())
    assert not any(name.endswith("_orig") or name.endswith("_mask") for name in result.model.state_dict())
    assert result.zipped_bytes_after < 0.6 * result.zipped_bytes_before

"""The proxy's cache: keyed by CPU, runtime and widths, and used instead of timing again."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch import nn

from greencompress.models.inputs import ModelInputs
from greencompress.pipeline import proxy as proxy_module
from greencompress.pipeline.proxy import (
    LatencyProxy,
    ProxyCache,
    ProxyResult,
    proxy_key,
    time_pair,
    width_signature,
)
from greencompress.runtimes.base import RunnerSettings

CPU = {"model": "Intel Xeon", "flags": ["amx_int8", "avx2", "avx512_vnni"]}
WIDTHS = [["conv1", [16, 3, 3, 3]], ["fc", [10, 16]]]
PRUNED = [["conv1", [8, 3, 3, 3]], ["fc", [10, 8]]]


def key(**changes) -> str:
    settings = {
        "cpu": CPU,
        "runtime": "onnxruntime",
        "runtime_version": "1.23.0",
        "precision": "int8",
        "batch_size": 1,
        "threads": 2,
        "baseline_widths": WIDTHS,
        "candidate_widths": PRUNED,
        **changes,
    }
    return proxy_key(**settings)


def test_key_changes_with_everything_that_decides_speed_and_nothing_else():
    assert key() == key()
    different = [
        key(cpu={"model": "AMD EPYC", "flags": ["avx2"]}),
        key(cpu={**CPU, "flags": ["avx2"]}),  # same name, other instruction sets (a VM can hide some)
        key(runtime="openvino"),
        key(runtime_version="1.24.0"),
        key(precision="fp32"),
        key(batch_size=8),
        key(threads=1),
        key(candidate_widths=[["conv1", [12, 3, 3, 3]], ["fc", [10, 12]]]),
    ]
    assert len({key(), *different}) == 1 + len(different)


def test_cache_returns_what_was_put_marked_cached_and_skips_damaged_entries(tmp_path):
    cache = ProxyCache(tmp_path)
    result = ProxyResult(0.8, 0.7, 0.9, 7, 0.4, 0.5)
    assert cache.get("k") is None
    cache.put("k", result)
    assert cache.get("k") == ProxyResult(0.8, 0.7, 0.9, 7, 0.4, 0.5, cached=True)
    (tmp_path / "bad.json").write_text("{not json")
    assert cache.get("bad") is None


def test_paired_timing_finds_a_runner_that_does_half_the_work():
    def work(size):
        matrix = np.ones((size, size), dtype=np.float32)
        return lambda inputs: matrix @ matrix

    result = time_pair(work(96), work(160), np.zeros((1, 1), np.float32), rounds=5, window_s=0.05)
    assert result.high < 1 and result.rounds == 5


class Tiny(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1, self.fc = nn.Conv2d(3, width, 3), nn.Linear(width, 2)

    def forward(self, x):
        return self.fc(self.conv1(x).mean((2, 3)))


@pytest.mark.slow
def test_same_widths_on_the_same_cpu_are_timed_once_and_another_cpu_times_again(tmp_path, monkeypatch):
    proxy = LatencyProxy(
        Tiny(16),
        ModelInputs.image((3, 8, 8)),
        "onnxruntime",
        RunnerSettings(threads=1),
        None,
        None,
        1,
        18,
        3,
        0.02,
        ProxyCache(tmp_path),
    )
    assert width_signature(Tiny(8)) == [["conv1", [8, 3, 3, 3]], ["fc", [2, 8]]]
    timed = []
    real = proxy_module.time_pair
    monkeypatch.setattr(proxy_module, "time_pair", lambda *a, **k: timed.append(1) or real(*a, **k))
    first = proxy.measure(Tiny(8))
    again = proxy.measure(Tiny(8))  # other weights, same widths
    assert (first.cached, again.cached, len(timed)) == (False, True, 1)
    assert again.ratio == first.ratio
    monkeypatch.setattr(proxy_module, "cpu_identity", lambda: {"model": "another CPU", "flags": ["avx2"]})
    assert proxy.measure(Tiny(8)).cached is False and len(timed) == 2


@pytest.mark.slow
def test_the_proxy_times_a_shallower_model_and_keys_it_apart_from_the_whole_one(tmp_path):
    """Depth in the proxy: the user's ResNet-20 architecture (untrained) without 4 of its 7 removable blocks."""
    from greencompress.compress.depth import DepthConfig, shallower
    from greencompress.models.sources import resolve_callable
    from tests.compress.test_prune import ARCHITECTURE

    model = resolve_callable(ARCHITECTURE)().eval()
    calibration = [(np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32), np.zeros(8, np.int64))]
    shallow = shallower(model, ModelInputs.image((3, 32, 32)), DepthConfig(remove=4), calibration)
    assert len(width_signature(shallow)) == len(width_signature(model)) - 8  # two convolutions per block
    proxy = LatencyProxy(
        model,
        ModelInputs.image((3, 32, 32)),
        "onnxruntime",
        RunnerSettings(threads=1),
        None,
        None,
        1,
        18,
        5,
        0.05,
        ProxyCache(tmp_path),
    )
    result = proxy.measure(shallow)
    # 12 of 19 convolutions' work remain: the untrained shallower model is timed faster, pairwise.
    assert result.ratio < 0.9 and result.rounds == 5 and not result.cached


def test_a_stage_that_times_holds_what_the_timing_depends_on_in_its_key():
    from greencompress.compress.prune import Prune, StructuredPruneConfig
    from greencompress.compress.quantize import QuantizeConfig
    from greencompress.pipeline.proxy import UntrainedLatency, cpu_identity

    def check(batch_sizes=(1, 32), threads=1, quantize=None):
        return UntrainedLatency(
            ModelInputs.image((3, 8, 8)),
            ["onnxruntime"],
            list(batch_sizes),
            RunnerSettings(threads=threads),
            quantize,
            None,
            18,
        )

    identity = check().identity()
    assert identity["cpu"] == cpu_identity() and set(identity["runtimes"]) == {"onnxruntime"}
    assert identity["runtimes"]["onnxruntime"] != "unknown" and identity["precision"] == "fp32"
    assert (
        len(
            {
                json.dumps(c.identity(), sort_keys=True)
                for c in (check(), check(batch_sizes=(1,)), check(threads=2), check(quantize=QuantizeConfig()))
            }
        )
        == 4
    )
    assert Prune().uses_latency_check(StructuredPruneConfig(ratio=0.4, round_to="auto"))
    assert not Prune().uses_latency_check(StructuredPruneConfig(ratio=0.4, round_to=8))

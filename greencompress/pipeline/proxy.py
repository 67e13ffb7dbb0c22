"""The cheap proxy: does a candidate's structure (channel counts, depth) buy speed on the runtime, before training?

Latency does not depend on weights, so a pruned but untrained model, exported (and quantized when
the recipe quantizes), predicts the trained candidate's latency in seconds. It is timed against the
unpruned model at the same precision, in interleaved pairs of short windows, and the paired ratio
decides whether a search's candidate is worth fine-tuning, and which channel rounding a pruning
stage's `round_to: auto` takes (`UntrainedLatency`). The result is cached under a key of everything
that decides it: the CPU (model and instruction-set flags), the runtime and its version, the
precision, batch size, threads, and both models' layer widths. The same widths on the same CPU and
runtime are never timed twice, whichever pruning settings produced them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn

from greencompress.core.cache import cache_dir
from greencompress.core.files import write_text_atomic
from greencompress.measure.lock import measurement_lock
from greencompress.measure.stats import paired_ratio_interval
from greencompress.models.inputs import ModelInputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProxyResult:
    """Pruned-untrained latency over unpruned latency on one runtime, with its paired 95% interval."""

    ratio: float
    low: float
    high: float
    rounds: int
    candidate_p50_ms: float
    baseline_p50_ms: float
    cached: bool = False

    @classmethod
    def paired(cls, candidate_ms: list[float], baseline_ms: list[float]) -> ProxyResult:
        """From per-round figures of the two models in the same rounds: their paired ratio and medians."""
        interval = paired_ratio_interval(candidate_ms, baseline_ms)
        return cls(
            interval.ratio,
            interval.low,
            interval.high,
            interval.rounds,
            float(np.median(candidate_ms)),
            float(np.median(baseline_ms)),
        )


def width_signature(model: nn.Module) -> list[list]:
    """Each convolution's and linear layer's weight shape, in order: what decides the model's cost on a runtime."""
    return [
        [name, list(module.weight.shape)]
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]


def cpu_identity() -> dict:
    """The CPU as far as kernels care: its model name and the instruction-set flags runtimes dispatch on."""
    from greencompress.core.hardware import cpu_info

    cpu = cpu_info()
    return {"model": cpu.model, "flags": sorted(cpu.flags)}


def proxy_key(
    cpu: dict,
    runtime: str,
    runtime_version: str,
    precision: str,
    batch_size: int,
    threads: int,
    baseline_widths: list,
    candidate_widths: list,
    sequence_length: int | None = None,
) -> str:
    """The cache key of one proxy measurement: a hash of everything that decides its result."""
    shape = {"sequence": sequence_length} if sequence_length is not None else {}  # transformers: tokens per input
    text = json.dumps(
        {
            "cpu": cpu,
            "runtime": runtime,
            "version": runtime_version,
            "precision": precision,
            "batch": batch_size,
            "threads": threads,
            "baseline": baseline_widths,
            "candidate": candidate_widths,
            **shape,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class ProxyCache:
    """Proxy results on disk, one JSON file per key (default: `<cache>/search-proxy`)."""

    def __init__(self, root: Path | None = None):
        self.root = root or cache_dir() / "search-proxy"

    def get(self, key: str) -> ProxyResult | None:
        path = self.root / f"{key}.json"
        if not path.is_file():
            return None
        try:
            return ProxyResult(**{**json.loads(path.read_text()), "cached": True})
        except (ValueError, TypeError) as error:  # a damaged entry is measured again, not trusted
            log.warning("proxy cache entry %s unreadable (%s); measuring again", path, error)
            return None

    def put(self, key: str, result: ProxyResult) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.root / f"{key}.json", json.dumps({**asdict(result), "cached": False}))


def time_pair(candidate, baseline, inputs, rounds: int, window_s: float) -> ProxyResult:
    """Interleaved windows of back-to-back calls (order alternating each round); ratio of window medians, paired."""
    for runner in (candidate, baseline):
        for _ in range(3):
            runner(inputs)
    medians: dict[str, list[float]] = {"candidate": [], "baseline": []}
    for round_index in range(rounds):
        order = [("candidate", candidate), ("baseline", baseline)]
        for name, runner in order if round_index % 2 == 0 else order[::-1]:
            durations, until = [], time.perf_counter() + window_s
            while len(durations) < 5 or time.perf_counter() < until:
                started = time.perf_counter()
                runner(inputs)
                durations.append(time.perf_counter() - started)
            medians[name].append(float(np.median(durations)) * 1e3)
    return ProxyResult.paired(medians["candidate"], medians["baseline"])


class LatencyProxy:
    """Times pruned-untrained candidates against the unpruned model on one runtime, through the cache.

    `inputs`: the model's inputs. Images are random (values do not change the cost);
    a transformer gets real calibration texts padded to `sequence_length` tokens, the shape it is scored at.
    """

    def __init__(
        self,
        original: nn.Module,
        inputs: ModelInputs,
        runtime: str,
        settings,
        quantize,
        calibration,
        batch_size: int,
        opset: int,
        rounds: int,
        window_s: float,
        cache: ProxyCache | None = None,
        sequence_length: int | None = None,
    ):
        self.original, self.inputs, self.runtime, self.settings = original, inputs, runtime, settings
        self.quantize, self.calibration, self.batch_size, self.opset = quantize, calibration, batch_size, opset
        self.rounds, self.window_s = rounds, window_s
        self.sequence_length = sequence_length if self.inputs.are_tokens else None
        self.cache = cache or ProxyCache()
        self.scratch = Path(tempfile.mkdtemp(prefix="greencompress-proxy-"))
        self.baseline_file: Path | None = None

    def key(self, candidate: nn.Module) -> str:
        from greencompress.measure.environment import runtime_versions

        return proxy_key(
            cpu_identity(),
            self.runtime,
            runtime_versions().get(self.runtime, "unknown"),
            "int8" if self.quantize is not None else "fp32",
            self.batch_size,
            self.settings.threads,
            width_signature(self.original),
            width_signature(candidate),
            self.sequence_length,
        )

    def measure(self, candidate: nn.Module) -> ProxyResult:
        key = self.key(candidate)
        if (found := self.cache.get(key)) is not None:
            log.info("proxy: widths already timed on this CPU and runtime (cache %s): %.3fx", key, found.ratio)
            return found
        from greencompress.runtimes import RUNTIMES

        if self.baseline_file is None:
            self.baseline_file = self._file(self.original, "baseline")
        candidate_file = self._file(candidate, f"candidate-{key}")
        spec = RUNTIMES.get(self.runtime)
        runners = [spec.runner(path, self.settings) for path in (candidate_file, self.baseline_file)]
        with measurement_lock("search proxy"):
            result = time_pair(*runners, self._feed(), self.rounds, self.window_s)
        candidate_file.unlink()
        self.cache.put(key, result)
        return result

    def _feed(self):
        if not self.inputs.are_tokens:
            return np.random.default_rng(0).standard_normal(
                (self.batch_size, *self.inputs.image_shape), dtype=np.float32
            )
        from greencompress.models.data import fixed_batch

        return fixed_batch(self.calibration, self.batch_size, self.sequence_length or 128)

    def _file(self, model: nn.Module, stem: str) -> Path:
        from greencompress.compress.quantize import quantize_onnx
        from greencompress.runtimes.export import export_onnx

        # A transformer's file is the portable graph: its speed against the unpruned one, not the fusions', decides.
        fp32 = export_onnx(model, self.inputs, self.scratch / f"{stem}.onnx", self.opset)
        if self.quantize is None:
            return fp32
        int8 = self.scratch / f"{stem}-int8.onnx"
        # Speed does not depend on the ranges: a few calibration batches and minmax are enough here.
        quantize_onnx(
            fp32,
            int8,
            self.quantize.model_copy(
                update={
                    "calibration_samples": 32,
                    "qat": None,
                    "calibration_method": "minmax",
                    "fallback_max_drop": None,
                }
            ),
            self.calibration,
            32,
            transformer=self.inputs.structure == "encoder",
        )
        fp32.unlink()
        return int8


class UntrainedLatency:
    """The `LatencyCheck` a run hands its stages (compress/technique.py): a candidate against the model it came from,
    untrained, on every file runtime the run serves and at every benchmarked batch size, at the served precision."""

    def __init__(
        self,
        inputs: ModelInputs,
        runtimes: list[str],
        batch_sizes: list[int],
        settings,
        quantize,
        calibration,
        opset: int,
        rounds: int = 7,
        window_s: float = 0.25,
    ):
        self.inputs, self.runtimes, self.batch_sizes, self.settings = inputs, runtimes, batch_sizes, settings
        self.quantize, self.calibration, self.opset, self.rounds, self.window_s = (
            quantize,
            calibration,
            opset,
            rounds,
            window_s,
        )

    def identity(self) -> dict:
        from greencompress.measure.environment import runtime_versions

        versions = runtime_versions()
        return {
            "cpu": cpu_identity(),
            "runtimes": {name: versions.get(name, "unknown") for name in self.runtimes},
            "batch_sizes": list(self.batch_sizes),
            "threads": self.settings.threads,
            "precision": "int8" if self.quantize is not None else "fp32",
        }

    def __call__(self, candidate: nn.Module, baseline: nn.Module) -> list[dict]:
        measured = []
        for runtime in self.runtimes:
            for batch_size in self.batch_sizes:
                proxy = LatencyProxy(
                    baseline,
                    self.inputs,
                    runtime,
                    self.settings,
                    self.quantize,
                    self.calibration,
                    batch_size,
                    self.opset,
                    self.rounds,
                    self.window_s,
                )
                result = proxy.measure(candidate)
                measured.append(
                    {
                        "runtime": runtime,
                        "batch_size": batch_size,
                        "ratio": result.ratio,
                        "low": result.low,
                        "high": result.high,
                        "cached": result.cached,
                    }
                )
        return measured

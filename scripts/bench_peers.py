"""greencompress against what users would otherwise pick, side by side in one process, at 3x224x224.

For torchvision ResNet-18 and ResNet-50 (random weights: this measures speed, not accuracy) it
builds every variant, then measures all of them with greencompress's own interleaved benchmark
(one window per variant per round, the order rotating) so drift hits every variant alike:

  torch-fp32            PyTorch eager FP32, the as-trained reference
  ort-fp32              ONNX Runtime FP32 (greencompress's export)
  ort-int8-defaults     onnxruntime.quantization.quantize_static with its defaults
  torch-int8-pt2e       torchao PT2E + X86InductorQuantizer + torch.compile (PyTorch's advice for x86)
  torch-int8-fx         the deprecated torch.ao FX path (x86 qconfig), as a second reference
  ov-fp32               OpenVINO FP32 on the same ONNX file
  ov-int8-nncf          OpenVINO int8 made by nncf.quantize
  gc-int8-ort / -ov     greencompress's quantize stage, on ONNX Runtime and on OpenVINO
  gc-pruned-int8-ort/-ov  greencompress structured pruning (50% of channels, round_to 8) + int8

The greencompress variants call the same functions a recipe runs (export_onnx, prune_structured,
quantize_onnx with the recipe defaults). Every variant is calibrated on the same random inputs.

    python scripts/bench_peers.py            # full: both models, batch 1 and 16 (under 20 minutes here)
    python scripts/bench_peers.py --quick    # ResNet-18, batch 1, fewer rounds (under 3 minutes here)

Needs the peers' packages: pip install -e '.[peers]'.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from greencompress.compress.prune import StructuredPruneConfig, prune_structured  # noqa: E402
from greencompress.compress.quantize import QuantizeConfig, quantize_onnx  # noqa: E402
from greencompress.core.hardware import cpu_info  # noqa: E402
from greencompress.measure.benchmark import (
    BenchmarkSpec,
    benchmark_interleaved,
    measure_idle,
)
from greencompress.measure.energy import EnergySpec, select_meter  # noqa: E402
from greencompress.measure.environment import environment
from greencompress.measure.floor import floor_ratio_text, peak_mac_rate  # noqa: E402
from greencompress.models.inputs import ModelInputs  # noqa: E402
from greencompress.runtimes.export import export_onnx  # noqa: E402
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner
from greencompress.runtimes.openvino_cpu import OpenVinoRunner
from greencompress.runtimes.pytorch import TorchRunner, set_threads

INPUT_SHAPE = (3, 224, 224)
REFERENCES = ("ort-fp32", "ort-int8-defaults")  # every ratio is against these, measured in the same rounds


@dataclass
class Variant:
    name: str
    runtime: str
    precision: str
    runner: object
    size_bytes: int | None  # None: no file to weigh (a compiled in-memory graph)
    macs: int
    note: str = ""


@dataclass
class Unavailable:
    name: str
    reason: str


@dataclass
class Settings:
    models: list[str]
    batch_sizes: list[int]
    threads: int
    rounds: int
    window_s: float
    calibration_samples: int
    skip: set[str] = field(default_factory=set)


def build_variants(model_name: str, settings: Settings, scratch: Path) -> tuple[list[Variant], list[Unavailable]]:
    """Every variant of one torchvision model; a peer that cannot be built here is recorded with why."""
    import torch_pruning
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(model_name, weights=None).eval()
    example = torch.zeros(1, *INPUT_SHAPE)
    macs = int(torch_pruning.utils.count_ops_and_params(model, example)[0])
    calibration = TensorDataset(
        torch.randn(settings.calibration_samples, *INPUT_SHAPE, generator=torch.Generator().manual_seed(1)),
        torch.zeros(settings.calibration_samples, dtype=torch.int64),
    )
    calibration_batches = [calibration.tensors[0][i : i + 8] for i in range(0, len(calibration), 8)]
    threads = settings.threads
    variants, missing = [], []

    def step(name: str, build):
        if name in settings.skip:
            missing.append(Unavailable(name, "skipped (--skip)"))
            return
        started = time.perf_counter()
        try:
            variants.extend(build())
            print(f"  built {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        except Exception as error:  # a peer that does not install or run here is reported, not hidden
            missing.append(Unavailable(name, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"))
            print(f"  {name} unavailable: {missing[-1].reason}", file=sys.stderr)

    fp32_onnx = export_onnx(model, ModelInputs.image(INPUT_SHAPE), scratch / "fp32.onnx", 18)
    state_bytes = _torch_bytes(model)
    step("torch-fp32", lambda: [Variant("torch-fp32", "torch", "fp32", TorchRunner(model), state_bytes, macs)])
    step(
        "ort-fp32",
        lambda: [
            Variant(
                "ort-fp32", "onnxruntime", "fp32", OnnxRuntimeRunner(fp32_onnx, threads), fp32_onnx.stat().st_size, macs
            )
        ],
    )
    step("ort-int8-defaults", lambda: [_ort_defaults(fp32_onnx, calibration_batches, scratch, threads, macs)])
    step("torch-int8-pt2e", lambda: [_pt2e(model, calibration_batches, macs)])
    step("torch-int8-fx", lambda: [_fx(model, calibration_batches, macs)])
    step(
        "ov-fp32",
        lambda: [
            Variant("ov-fp32", "openvino", "fp32", OpenVinoRunner(fp32_onnx, threads), fp32_onnx.stat().st_size, macs)
        ],
    )
    step("ov-int8-nncf", lambda: [_nncf(fp32_onnx, calibration_batches, scratch, threads, macs)])

    # greencompress: the quantize stage with a recipe's defaults, and structured pruning + the same.
    def greencompress_int8(source: Path, stem: str, variant_macs: int, prefix: str) -> list[Variant]:
        int8 = scratch / f"{stem}_int8.onnx"
        quantize_onnx(source, int8, QuantizeConfig(calibration_samples=settings.calibration_samples), calibration, 8)
        size = int8.stat().st_size
        return [
            Variant(f"{prefix}-ort", "onnxruntime", "int8", OnnxRuntimeRunner(int8, threads), size, variant_macs),
            Variant(f"{prefix}-ov", "openvino", "int8", OpenVinoRunner(int8, threads), size, variant_macs),
        ]

    step("gc-int8", lambda: greencompress_int8(fp32_onnx, "gc", macs, "gc-int8"))

    def pruned() -> list[Variant]:
        result = prune_structured(
            model,
            ModelInputs.image(INPUT_SHAPE),
            StructuredPruneConfig(ratio=0.5, round_to=8),
            calibration_batches=None,
        )
        path = export_onnx(result.model, ModelInputs.image(INPUT_SHAPE), scratch / "pruned_fp32.onnx", 18)
        variants = greencompress_int8(path, "pruned", result.macs_after, "gc-pruned-int8")
        for variant in variants:
            variant.note = "latency only: accuracy after fine-tuning comes from the recipe runs"
        return variants

    step("gc-pruned-int8", pruned)
    return variants, missing


def _torch_bytes(model) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


def _ort_defaults(fp32_onnx: Path, calibration_batches, scratch: Path, threads: int, macs: int) -> Variant:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    input_name = onnx.load(str(fp32_onnx), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration_batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch.numpy()}

    output = scratch / "ort_defaults_int8.onnx"
    quantize_static(str(fp32_onnx), str(output), Reader())  # every option at its default
    return Variant(
        "ort-int8-defaults",
        "onnxruntime",
        "int8",
        OnnxRuntimeRunner(output, threads),
        output.stat().st_size,
        macs,
        "quantize_static(model, out, reader), nothing else",
    )


class _PerShape:
    """A runner that builds (and keeps) one compiled model per input shape, on first use (during warm-up)."""

    def __init__(self, build):
        self.build, self.compiled = build, {}

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        if inputs.shape not in self.compiled:
            self.compiled[inputs.shape] = self.build(inputs.shape)
        with torch.inference_mode():
            return self.compiled[inputs.shape](torch.from_numpy(inputs)).numpy()


def _pt2e(model, calibration_batches, macs: int) -> Variant:
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as x86
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    inductor_config.freezing = True  # constant-folds the int8 weights, as torchao's x86 tutorial does

    def build(shape):
        exported = torch.export.export(model, (torch.zeros(shape),), strict=True).module()
        quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, quantizer)
        samples = torch.cat(calibration_batches)
        for start in range(0, len(samples) - shape[0] + 1, shape[0]):  # every sample, in batches of this shape
            prepared(samples[start : start + shape[0]])
        compiled = torch.compile(convert_pt2e(prepared))
        with torch.no_grad():
            compiled(torch.zeros(shape))  # compile now, not in the first timed window
        return compiled

    runner = _PerShape(build)
    runner(np.zeros((1, *INPUT_SHAPE), dtype=np.float32))  # fail here, at build time, if it cannot work
    return Variant(
        "torch-int8-pt2e",
        "torch.compile",
        "int8",
        runner,
        None,
        macs,
        "no file: the int8 weights live in the compiled graph; compiled once per batch size",
    )


def _fx(model, calibration_batches, macs: int) -> Variant:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization says it is deprecated
        torch.backends.quantized.engine = "x86"
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (torch.zeros(1, *INPUT_SHAPE),))
        with torch.no_grad():
            for batch in calibration_batches:
                prepared(batch)
        converted = convert_fx(prepared)
    return Variant("torch-int8-fx", "torch", "int8", TorchRunner(converted), _torch_bytes(converted), macs)


def _nncf(fp32_onnx: Path, calibration_batches, scratch: Path, threads: int, macs: int) -> Variant:
    import nncf
    import openvino

    model = openvino.Core().read_model(str(fp32_onnx))
    samples = [sample[None].numpy() for batch in calibration_batches for sample in batch]  # one image per item
    quantized = nncf.quantize(model, nncf.Dataset(samples), subset_size=len(samples))
    path = scratch / "nncf_int8.xml"
    openvino.save_model(quantized, str(path))
    size = path.stat().st_size + path.with_suffix(".bin").stat().st_size
    return Variant("ov-int8-nncf", "openvino", "int8", OpenVinoRunner(path, threads), size, macs)


def measure(variants: list[Variant], batch_size: int, settings: Settings, meter, idle) -> dict:
    spec = BenchmarkSpec(
        batch_sizes=[batch_size],
        warmup_iterations=3,
        window_s=settings.window_s,
        min_iterations=3,
        windows=settings.rounds,
        max_windows=settings.rounds,
        threads=settings.threads,
    )
    inputs = np.random.default_rng(2).standard_normal((batch_size, *INPUT_SHAPE), dtype=np.float32)
    return benchmark_interleaved({v.name: v.runner for v in variants}, inputs, spec, meter, idle)


def summarize(
    model_name: str, variants: list[Variant], batch_size: int, results: dict, cpu, threads: int
) -> list[dict]:
    rows = []
    for variant in variants:
        bench = results[variant.name]
        peak = peak_mac_rate(cpu, threads, variant.precision)
        floor = peak.floor_ms(variant.macs, batch_size) if peak else None
        row = {
            "model": model_name,
            "batch": batch_size,
            "variant": variant.name,
            "runtime": variant.runtime,
            "precision": variant.precision,
            "p50_ms": bench.latency.p50_ms,
            "p90_ms": bench.latency.p90_ms,
            "items_per_s": bench.latency.throughput_per_s,
            "j_per_inference": bench.joules_per_inference,
            "energy_method": bench.energy.method,
            "size_mb": variant.size_bytes / 1e6 if variant.size_bytes else None,
            "gmacs": variant.macs / 1e9,
            "floor_ms": floor,
            "x_floor": bench.latency.p50_ms / floor if floor else None,
            "note": variant.note,
        }
        for reference in REFERENCES:
            if reference in results:
                ratios = [
                    mine / theirs
                    for mine, theirs in zip(bench.latency.window_p50_ms, results[reference].latency.window_p50_ms)
                ]
                row[f"vs_{reference}"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
        rows.append(row)
    return rows


DENSE_INT8_PEERS = ("ort-int8-defaults", "torch-int8-pt2e", "torch-int8-fx", "ov-int8-nncf")


def verdicts(model_name: str, batch_size: int, results: dict) -> list[str]:
    """The issue's questions, answered as speed-ups (theirs / ours, per round; median and range)."""

    def speedups(ours: list[str], theirs: list[str]) -> list[float] | None:
        ours, theirs = [n for n in ours if n in results], [n for n in theirs if n in results]
        if not ours or not theirs:
            return None
        rounds = len(results[ours[0]].latency.window_p50_ms)
        # Each round: the fastest of `theirs` over the fastest of `ours`, both measured in that round.
        return [
            min(results[n].latency.window_p50_ms[r] for n in theirs)
            / min(results[n].latency.window_p50_ms[r] for n in ours)
            for r in range(rounds)
        ]

    lines = []
    for label, ours, theirs in (
        ("greencompress int8 vs quantize_static defaults, ONNX Runtime", ["gc-int8-ort"], ["ort-int8-defaults"]),
        ("greencompress int8 vs NNCF int8, OpenVINO", ["gc-int8-ov"], ["ov-int8-nncf"]),
        (
            "greencompress pruned+int8 (fastest runtime) vs the fastest dense int8 peer",
            ["gc-pruned-int8-ort", "gc-pruned-int8-ov"],
            list(DENSE_INT8_PEERS),
        ),
    ):
        found = speedups(ours, theirs)
        if found:
            lines.append(
                f"- {model_name}, batch {batch_size}: {label}: {statistics.median(found):.3f}x as fast "
                f"(rounds {min(found):.2f}-{max(found):.2f})"
            )
    return lines


def markdown(rows: list[dict], missing: dict, header: str, findings: list[str]) -> str:
    """The findings and one row per variant and batch size. Ratios cross runtimes on purpose here (which tool
    to pick); each row names its runtime, and the energy column its method."""
    methods = ", ".join(sorted({row["energy_method"] for row in rows})) or "-"
    lines = [
        header,
        "",
        *findings,
        "",
        f"| model | batch | variant | runtime | p50 ms | p90 ms | items/s | J/inf ({methods}) | size MB | GMACs "
        "| x floor | vs ort-fp32 (median, min-max over rounds) | vs ort-int8-defaults |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = [
            f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})" if (r := row.get(f"vs_{ref}")) else "-"
            for ref in REFERENCES
        ]
        floor = floor_ratio_text(row["p50_ms"], row["floor_ms"])
        size = f"{row['size_mb']:.1f}" if row["size_mb"] else "-"
        lines.append(
            f"| {row['model']} | {row['batch']} | {row['variant']} | {row['runtime']} | {row['p50_ms']:.2f} "
            f"| {row['p90_ms']:.2f} | {row['items_per_s']:.1f} | {row['j_per_inference']:.3g} | {size} "
            f"| {row['gmacs']:.2f} | {floor} | {ratio[0]} | {ratio[1]} |"
        )
    for model_name, unavailable in missing.items():
        for item in unavailable:
            lines.append(f"\n{model_name}: {item['name']} not measured: {item['reason']}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ResNet-18 at batch 1, 3 rounds: a smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma-separated variants not to build (e.g. torch-int8-pt2e)")
    parser.add_argument("--json", type=Path, help="also write every row here")
    args = parser.parse_args(argv)
    settings = (
        Settings(["resnet18"], [1], args.threads, rounds=3, window_s=0.5, calibration_samples=16)
        if args.quick
        else Settings(["resnet18", "resnet50"], [1, 16], args.threads, rounds=5, window_s=1.0, calibration_samples=32)
    )
    settings.skip = {name for name in args.skip.split(",") if name}
    started = time.perf_counter()
    set_threads(settings.threads)
    meter, reason = select_meter(EnergySpec())
    idle = measure_idle(meter, 2.0)
    env = environment(settings.threads)
    cpu = cpu_info()
    rows, missing, findings = [], {}, []
    for model_name in settings.models:
        print(f"{model_name}: building variants", file=sys.stderr)
        with tempfile.TemporaryDirectory() as scratch:
            variants, missing[model_name] = build_variants(model_name, settings, Path(scratch))
            for batch_size in settings.batch_sizes:
                print(
                    f"{model_name}: measuring batch {batch_size} ({len(variants)} variants, {settings.rounds} rounds)",
                    file=sys.stderr,
                )
                results = measure(variants, batch_size, settings, meter, idle)
                rows += summarize(model_name, variants, batch_size, results, cpu, settings.threads)
                findings += verdicts(model_name, batch_size, results)
    elapsed = time.perf_counter() - started
    versions = ", ".join(f"{name} {version}" for name, version in {**env["versions"], **_peer_versions()}.items())
    peaks = "; ".join(
        f"{precision}: {rate.basis}"
        for precision in ("fp32", "bf16", "int8")
        if (rate := peak_mac_rate(cpu, settings.threads, precision))
    )
    header = (
        f"{'Quick' if args.quick else 'Full'} run, {elapsed / 60:.1f} min. CPU: {cpu.model}, flags "
        f"{', '.join(cpu.flags)}, {settings.threads} threads, {cpu.logical_cores} logical cores. {versions}. "
        f"Energy: {meter.method} ({reason}). Random weights, random inputs: speed only. "
        f"Peak rates for the floor: {peaks}."
    )
    missing = {name: [vars(item) for item in items] for name, items in missing.items()}
    print(markdown(rows, missing, header, findings))
    if args.json:
        args.json.write_text(
            json.dumps({"header": header, "findings": findings, "rows": rows, "missing": missing}, indent=2)
        )
    return 0


def _peer_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("openvino", "nncf", "torchao"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


if __name__ == "__main__":
    raise SystemExit(main())

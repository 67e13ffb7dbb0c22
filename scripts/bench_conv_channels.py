"""Why a channel-pruned CNN can run *slower* in int8 on ONNX Runtime: which channel counts take the fast kernel.

ONNX Runtime's CPU QLinearConv (what a static QDQ int8 file runs) has a fast path for symmetric int8
weights, MLAS's indirect "ConvSym" kernel. It takes a convolution only when its channel counts fit
the kernel's blocking (onnxruntime/core/mlas/lib/convsym.cpp, MlasConvSymPackWSize): at least 16
output channels, input channels a multiple of 4, and output channels a multiple of 8 on AVX2 and
AVX-VNNI (of 4 on AVX-512 Core and AVX-512 VNNI). Any other count falls back to im2col and a
generic int8 GEMM. FP32 convolutions (NCHWc blocks) have no such cliff.

This script builds one residual-block-like pair of 3x3 convolutions, C -> k -> C channels on a
32x32 map (what each block's inner convolution is after channel pruning), exports it, quantizes it
as greencompress does (static QDQ, per-channel symmetric int8 weights), and times every k against
the unpruned k = C, interleaved in one process, FP32 and int8. Run:

    python scripts/bench_conv_channels.py [--channels 16 32 64] [--batch 1] [--rounds 9]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from torch import nn

from greencompress.measure.stats import paired_ratio_interval


class Pair(nn.Module):
    def __init__(self, channels: int, inner: int):
        super().__init__()
        self.first = nn.Conv2d(channels, inner, 3, padding=1)
        self.second = nn.Conv2d(inner, channels, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.second(torch.relu(self.first(x))) + x)


class Reader(CalibrationDataReader):
    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        return next(self.batches, None)


def files(channels: int, inner: int, folder: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    fp32 = folder / f"pair-{channels}-{inner}.onnx"
    torch.onnx.export(
        Pair(channels, inner).eval(),
        torch.randn(1, channels, 32, 32),
        str(fp32),
        input_names=["x"],
        dynamic_axes={"x": {0: "batch"}},
        dynamo=False,
    )
    int8 = folder / f"pair-{channels}-{inner}-int8.onnx"
    data = [{"x": np.random.default_rng(i).standard_normal((1, channels, 32, 32), dtype=np.float32)} for i in range(8)]
    quantize_static(
        str(fp32),
        str(int8),
        Reader(data),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return {"fp32": fp32, "int8": int8}


def takes_symmetric_kernel(in_channels: int, out_channels: int, out_alignment: int) -> bool:
    """MlasConvSymPackWSize's conditions for a non-grouped convolution (see the module's docstring)."""
    return out_channels >= 16 and in_channels % 4 == 0 and out_channels % out_alignment == 0


def session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def window_median_ms(run, inputs, seconds: float) -> float:
    durations, until = [], time.perf_counter() + seconds
    while len(durations) < 5 or time.perf_counter() < until:
        started = time.perf_counter()
        run(inputs)
        durations.append(time.perf_counter() - started)
    return 1e3 * statistics.median(durations)


def main() -> None:
    warnings.simplefilter("ignore")  # the exporter's and quantizer's advice, printed for every file
    logging.getLogger().setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--window-s", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    out_alignment = 4 if "avx512f" in flags else 8
    print(
        f"CPU flags: {' '.join(sorted(f for f in flags if f.startswith(('avx2', 'avx512', 'amx', 'avx_vnni'))))}; "
        f"onnxruntime {onnxruntime.__version__}; batch {args.batch}; {args.threads} threads; symmetric int8 kernel "
        f"needs >= 16 output channels, input % 4, output % {out_alignment}"
    )
    print("| C | k (inner) | first conv (k out) takes it | second conv (k in) takes it | FP32 k / C | int8 k / C |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for channels in args.channels:
            inners = sorted(
                {
                    channels,
                    *(round(channels * share) for share in (0.75, 0.6, 0.5)),
                    *(max(8, (round(channels * 0.6) // 8) * 8),),
                },
                reverse=True,
            )
            sessions = {
                inner: {
                    precision: session(path, args.threads)
                    for precision, path in files(channels, inner, Path(scratch)).items()
                }
                for inner in inners
            }
            inputs = {"x": np.random.default_rng(0).standard_normal((args.batch, channels, 32, 32), dtype=np.float32)}
            medians = {(inner, precision): [] for inner in inners for precision in ("fp32", "int8")}
            for round_index in range(args.rounds):
                order = list(medians)
                for key in order if round_index % 2 == 0 else order[::-1]:
                    runner = sessions[key[0]][key[1]]
                    medians[key].append(window_median_ms(lambda x: runner.run(None, x), inputs, args.window_s))
            for inner in inners:
                ratios = []
                for precision in ("fp32", "int8"):
                    interval = paired_ratio_interval(medians[(inner, precision)], medians[(channels, precision)])
                    ratios.append(
                        f"{interval.ratio:.2f}x [{interval.low:.2f}, {interval.high:.2f}] "
                        f"({statistics.median(medians[(inner, precision)]):.3f} ms)"
                    )
                first = takes_symmetric_kernel(channels, inner, out_alignment)
                second = takes_symmetric_kernel(inner, channels, out_alignment)
                print(
                    f"| {channels} | {inner} | {'yes' if first else 'no'} | {'yes' if second else 'no'} | "
                    f"{ratios[0]} | {ratios[1]} |"
                )


if __name__ == "__main__":
    main()

"""OpenVINO's CPU product with compressed weights, per storage, against FP32: the counterpart of
bench_matmulnbits.py for the runtime that reads the same files.

    python scripts/bench_openvino_weights.py                  # SmolLM2's up_proj: 576 inputs, 1536 outputs
    python scripts/bench_openvino_weights.py --inputs 576 --outputs 576 --copies 60 --rounds 5 --threads 2

Two kinds of rows. Weights written as OpenVINO's own compressed form (codes -> Convert -> [Subtract zero points]
-> Multiply scales -> MatMul, which the CPU plugin runs as one compressed product): int8 and int4, per channel or
in groups, signed without zero points or unsigned with them. And ONNX MatMulNBits products, as OpenVINO's ONNX
reader reads them, then with their zero points sliced once (runtimes/openvino_weights.py): with an odd number of
groups a row (576 / 64 = 9) the reader leaves a run-time slice in front of the zero points. Each graph holds
`--copies` products with their own weights, so that a call reads its weights from memory as a decode step does.
FP32 arithmetic, activations of compressed products rounded to int8 in groups of 32 where the plugin does (its
default). Rounds interleaved; the table gives the median per product and its ratio to FP32's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_matmulnbits import NBITS_DOMAINS, nbits_product, print_table, products_graph, time_products

SETTINGS = {"NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


def native_products(inputs: int, outputs: int, copies: int, storage: tuple | None, rng: np.random.Generator):
    """An openvino.Model of `copies` products of A. `storage`: None for FP32, else (bits, group or None for per
    channel, signed: codes without zero points, else unsigned codes with zero points)."""
    import openvino
    import openvino.opset13 as ops

    activations = ops.parameter([-1, inputs], np.float32, name="A")

    def weights():
        if storage is None:
            return ops.constant(rng.standard_normal((outputs, inputs)).astype(np.float32))
        bits, group, signed = storage
        group = group or inputs
        shape = (outputs, inputs // group, group)
        if signed:
            kind = openvino.Type.i4 if bits == 4 else openvino.Type.i8
            codes = ops.constant(rng.integers(-(1 << bits - 1), 1 << bits - 1, shape).astype(np.int8), dtype=kind)
            values = ops.convert(codes, np.float32)
        else:
            kind = openvino.Type.u4 if bits == 4 else openvino.Type.u8
            codes = ops.constant(rng.integers(0, 1 << bits, shape).astype(np.uint8), dtype=kind)
            zero_points = ops.constant(rng.integers(0, 1 << bits, (*shape[:2], 1)).astype(np.uint8), dtype=kind)
            values = ops.subtract(ops.convert(codes, np.float32), ops.convert(zero_points, np.float32))
        scales = ops.constant((rng.random((*shape[:2], 1)) * 0.01).astype(np.float32))
        return ops.reshape(ops.multiply(values, scales), ops.constant(np.array([outputs, inputs], np.int64)), False)

    products = [ops.result(ops.matmul(activations, weights(), False, True)) for _ in range(copies)]
    return openvino.Model(products, [activations])


def read_nbits(inputs: int, outputs: int, copies: int, storage: tuple, rng: np.random.Generator, folder: Path):
    """MatMulNBits products as OpenVINO's ONNX reader reads them (storage: bits, group, zero points or not)."""
    import onnx
    import openvino

    path = folder / f"nbits-{'-'.join(map(str, storage))}.onnx"
    make_node = nbits_product(inputs, outputs, (*storage, 4), rng)
    onnx.save(products_graph(make_node, copies, inputs, outputs, NBITS_DOMAINS), path)
    return openvino.Core().read_model(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=576)
    parser.add_argument("--outputs", type=int, default=1536)
    parser.add_argument("--copies", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import openvino

    from greencompress.core.hardware import cpu_info
    from greencompress.runtimes.openvino_weights import slice_zero_points

    rng = np.random.default_rng(0)
    shape = (args.inputs, args.outputs, args.copies)
    models = {"fp32": native_products(*shape, None, rng)}
    for bits in (8, 4):
        for group in (None, 32, 64):
            if group and args.inputs % group:
                continue
            for signed in (True, False):
                grouping = f"g{group}" if group else "per channel"
                kind = f"{'i' if signed else 'u'}{bits} {grouping} {'sym' if signed else 'zero points'}"
                models[f"OpenVINO {kind}"] = native_products(*shape, (bits, group, signed), rng)
    with tempfile.TemporaryDirectory() as scratch:
        for bits, group, zero_points in ((4, 64, True), (4, 64, False), (4, 32, True), (8, 64, False)):
            if args.inputs % group:
                continue
            name = f"MatMulNBits int{bits} g{group} {'zero points' if zero_points else 'sym'}"
            models[f"{name}, as read"] = read_nbits(*shape, (bits, group, zero_points), rng, Path(scratch))
            if zero_points:
                sliced = read_nbits(*shape, (bits, group, zero_points), rng, Path(scratch))
                slice_zero_points(sliced)
                models[f"{name}, zero points sliced"] = sliced
    core = openvino.Core()
    settings = {**SETTINGS, "INFERENCE_NUM_THREADS": args.threads}
    requests = {
        name: core.compile_model(model, "CPU", settings).create_infer_request() for name, model in models.items()
    }
    runs = {name: (lambda a, request=request: request.infer({0: a})) for name, request in requests.items()}
    times = time_products(runs, args.inputs, args.copies, args.rounds, rng)
    info = cpu_info()
    print(
        f"OpenVINO products [{args.inputs} -> {args.outputs}] x {args.copies} (times per product); openvino "
        f"{openvino.__version__}, {args.threads} threads, {args.rounds} interleaved rounds; CPU {info.model} "
        f"(flags: {', '.join(info.flags)})\n"
    )
    print_table(times, "fp32")
    return 0


if __name__ == "__main__":
    sys.exit(main())

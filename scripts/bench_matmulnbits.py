"""One ONNX Runtime MatMulNBits product against an FP32 MatMul of the same shape, per storage choice.

    python scripts/bench_matmulnbits.py                       # SmolLM2's up_proj: 576 inputs, 1536 outputs
    python scripts/bench_matmulnbits.py --inputs 576 --outputs 576 --copies 60 --rounds 5 --threads 2

Why a weight-only grid decodes fast or slow on a CPU is a property of the runtime's kernels, not of the model: this
times the operator alone, for 1 row (a decode step) and 128 rows (a 128-token prefill), at 4 and 8 bits, groups of
32 and 64, with and without zero points (symmetric or not), at accuracy_level 1 (FP32 arithmetic) and 4 (int8
activations). Each graph holds `--copies` products with their own weights (60 by default: SmolLM2's 30 layers hold
90 of this shape), so that a call reads its weights from memory as a decode step does, not from a cache that one
matrix would fit in. Weights are random codes: the arithmetic does not depend on their values. Each configuration
runs in every round, rounds interleaved; the table gives the median per call and its ratio to the FP32 MatMul's.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def products_graph(make_node, copies: int, inputs: int, outputs: int, domains: list):
    """An ONNX model of `copies` products of the input A, each with its own weights (`make_node(index)`: node and its
    initializers), each output its own."""
    from onnx import TensorProto, helper

    nodes, initializers = [], []
    for index in range(copies):
        node, weights = make_node(index)
        nodes.append(node)
        initializers += weights
    graph = helper.make_graph(
        nodes,
        "products",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [None, inputs])],
        [helper.make_tensor_value_info(f"Y{i}", TensorProto.FLOAT, [None, outputs]) for i in range(copies)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(domain, version) for domain, version in domains])


def _session(make_node, copies: int, inputs: int, outputs: int, threads: int, domains: list):
    import onnxruntime

    model = products_graph(make_node, copies, inputs, outputs, domains)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def fp32_products(inputs: int, outputs: int, copies: int, threads: int, rng: np.random.Generator):
    from onnx import helper, numpy_helper

    def product(i: int):
        weight = numpy_helper.from_array(rng.standard_normal((inputs, outputs)).astype(np.float32), f"W{i}")
        return helper.make_node("MatMul", ["A", f"W{i}"], [f"Y{i}"]), [weight]

    return _session(product, copies, inputs, outputs, threads, [("", 21)])


def nbits_product(inputs: int, outputs: int, storage: tuple, rng: np.random.Generator):
    """`make_node` for products_graph: MatMulNBits with random codes. `storage`: (bits, group, zero points or not,
    accuracy_level)."""
    from onnx import helper, numpy_helper

    bits, group, zero_points, level = storage
    groups = inputs // group

    def product(i: int):
        codes = rng.integers(0, 256, (outputs, groups, group * bits // 8), dtype=np.uint8)
        scales = (rng.random(outputs * groups) * 0.01).astype(np.float32)
        weights = [numpy_helper.from_array(codes, f"W{i}"), numpy_helper.from_array(scales, f"S{i}")]
        names = ["A", f"W{i}", f"S{i}"]
        if zero_points:
            packed = rng.integers(0, 256, outputs * ((groups * bits + 7) // 8), dtype=np.uint8)
            weights.append(numpy_helper.from_array(packed, f"Z{i}"))
            names.append(f"Z{i}")
        node = helper.make_node(
            "MatMulNBits",
            names,
            [f"Y{i}"],
            domain="com.microsoft",
            K=inputs,
            N=outputs,
            bits=bits,
            block_size=group,
            accuracy_level=level,
        )
        return node, weights

    return product


NBITS_DOMAINS = [("", 21), ("com.microsoft", 1)]


def nbits_products(inputs: int, outputs: int, copies: int, storage: tuple, threads: int, rng: np.random.Generator):
    product = nbits_product(inputs, outputs, storage, rng)
    return _session(product, copies, inputs, outputs, threads, NBITS_DOMAINS)


ROWS = {1: 20, 128: 2}  # activation rows -> calls per round: a decode step (1 row) is short, a 128-token prefill long


def time_products(runs: dict, inputs: int, copies: int, rounds: int, rng: np.random.Generator) -> dict:
    """Microseconds per product for each `runs[name](activations)` (a call runs `copies` products), per row count
    and round; every configuration in every round, rounds interleaved, each call warmed once."""
    times = {(name, m): [] for name in runs for m in ROWS}
    for _ in range(rounds):
        for m, calls in ROWS.items():
            activations = rng.standard_normal((m, inputs)).astype(np.float32)
            for name, run in runs.items():
                run(activations)
                started = time.perf_counter()
                for _ in range(calls):
                    run(activations)
                times[name, m].append((time.perf_counter() - started) / calls / copies * 1e6)
    return times


def print_table(times: dict, base_name: str) -> None:
    """The markdown table of median times per product and their ratios to `base_name`'s, in the order timed."""
    print("| storage | 1 row (decode) us | vs FP32 | 128 rows (prefill) us | vs FP32 |")
    print("|---|---|---|---|---|")
    base = {m: np.median(times[base_name, m]) for m in ROWS}
    for name in dict.fromkeys(name for name, _ in times):
        one, many = np.median(times[name, 1]), np.median(times[name, 128])
        print(f"| {name} | {one:.1f} | {one / base[1]:.2f}x | {many:.0f} | {many / base[128]:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=576)
    parser.add_argument("--outputs", type=int, default=1536)
    parser.add_argument("--copies", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import onnxruntime

    from greencompress.core.hardware import cpu_info

    rng = np.random.default_rng(0)
    sessions = {"fp32 MatMul": fp32_products(args.inputs, args.outputs, args.copies, args.threads, rng)}
    for bits in (4, 8):
        for group in (32, 64):
            if args.inputs % group:
                continue
            for zero_points in (False, True):
                for level in (1, 4):
                    name = f"int{bits} g{group} {'asym' if zero_points else 'sym'} level {level}"
                    storage = (bits, group, zero_points, level)
                    sessions[name] = nbits_products(args.inputs, args.outputs, args.copies, storage, args.threads, rng)
    runs = {name: (lambda a, session=session: session.run(None, {"A": a})) for name, session in sessions.items()}
    times = time_products(runs, args.inputs, args.copies, args.rounds, rng)
    info = cpu_info()
    print(
        f"MatMulNBits [{args.inputs} -> {args.outputs}] x {args.copies} products (times per product); onnxruntime "
        f"{onnxruntime.__version__}, {args.threads} threads, {args.rounds} interleaved rounds; CPU {info.model} "
        f"(flags: {', '.join(info.flags)})\n"
    )
    print_table(times, "fp32 MatMul")
    return 0


if __name__ == "__main__":
    sys.exit(main())

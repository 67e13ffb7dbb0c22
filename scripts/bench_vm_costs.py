"""Two costs a virtual machine can add to every query, whatever the runtime: pages the host took back, and a slow
random device.

1. A round of held KV caches allocated and written after the round before freed its own: glibc gives the freed
   memory back to the kernel, so each round faults it in again (and on a VM whose balloon has reported those pages
   to the host, faults in the host as well, several times slower). Measured with glibc's default policy, then
   with greencompress's measurement policy (measure/memory.py), which keeps freed memory.
2. With --genai FOLDER (a folder ONNX Runtime GenAI reads, e.g. a run's genai/fp32): creating a generator with and
   without a fixed random seed; unseeded, it seeds its sampler from std::random_device.

    python scripts/bench_vm_costs.py [--genai runs/NAME/STAMP/genai/fp32]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import time

from greencompress.measure.memory import keep_freed_memory

CACHE_BYTES = 8_800_000  # SmolLM2-135M's KV cache at 192 tokens, FP32
HELD = 8  # caches a benchmark round holds at once (one per prefilled query)


def round_ms(libc) -> float:
    """Milliseconds to allocate and write HELD caches, as a round's prefills do, after the round before freed its
    own."""
    start = time.perf_counter()
    caches = [libc.malloc(CACHE_BYTES) for _ in range(HELD)]
    for cache in caches:
        ctypes.memset(cache, 1, CACHE_BYTES)
    elapsed = time.perf_counter() - start
    for cache in caches:
        libc.free(cache)
    return elapsed * 1e3


def generator_ms(folder: str, seeded: bool, count: int = 20) -> float:
    import onnxruntime_genai as og

    model, times = og.Model(folder), []
    for _ in range(count):
        start = time.perf_counter()
        params = og.GeneratorParams(model)
        options = dict(max_length=192, do_sample=False, batch_size=1)
        params.set_search_options(**options, **({"random_seed": 0} if seeded else {}))
        og.Generator(model, params)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genai", help="a folder ONNX Runtime GenAI reads")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    flags = open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0]
    print(f"rdrand: {'rdrand' in flags.split()}, rdseed: {'rdseed' in flags.split()}")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_void_p,)
    print(f"{HELD} caches of {CACHE_BYTES / 1e6:.1f} MB allocated and written, median of {args.rounds} rounds:")
    for policy in ("glibc default", "kept (measure/memory.py)"):
        if policy.startswith("kept"):
            keep_freed_memory()
        round_ms(libc)  # the heap as a round leaves it
        print(f"  {policy:26s} {statistics.median(round_ms(libc) for _ in range(args.rounds)):7.2f} ms")
    if args.genai:
        print("ONNX Runtime GenAI generator created, median of 20:")
        for seeded in (False, True):
            print(f"  random_seed {'0    ' if seeded else 'unset'}: {generator_ms(args.genai, seeded):6.2f} ms")


if __name__ == "__main__":
    main()

"""Memory a measurement frees stays with the process, so that no artifact pays for pages another gave back.

A generator allocates on every query (ONNX Runtime GenAI: a KV cache of its own per generator, about 9 MB for
SmolLM2 at 192 tokens; PyTorch: the cache tensors). glibc's malloc gives freed memory back to the kernel (it trims
the heap's top and unmaps large blocks), and on a virtual machine whose balloon reports free pages, the kernel
gives them back to the host a second or two later. The next first touch of such a page is then a fault in the host
as well: measured on a 2-core cloud VM, 11 to 22 ms to touch 8.8 MB freshly, against about 1 ms for pages the
guest still holds (docs/BENCHMARKS.md). Which artifact pays depends on what ran before it, not on the artifact: in
an interleaved benchmark it makes one runtime's prefill look up to a quarter slower after another runtime freed
memory. A long-running server reuses what it freed; keeping freed memory in the process measures that steady
state, the same for every artifact.
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# The largest mmap threshold glibc accepts on 64-bit systems (HEAP_MAX_SIZE / 2): blocks below it come from the heap.
MMAP_THRESHOLD_MAX_BYTES = 32 << 20
NEVER_TRIM_BYTES = 2**31 - 1  # mallopt takes a C int: the heap's top is trimmed only past 2 GiB free

KEPT = (
    "freed memory kept by the process while measuring (glibc malloc: heap trimmed only past 2 GiB free, blocks "
    "under 32 MiB from the heap), so every artifact reuses pages already backed instead of faulting in pages "
    "another returned"
)

# What a report says where the policy could not be set: the figures may then carry the cost described above.
MEMORY_AS_IS = (
    "the C library's own policy for freed memory (not glibc): prefills after another artifact may pay page faults"
)


def keep_freed_memory() -> str | None:
    """Keep memory this process frees for its own later allocations (for the rest of its life). Returns what was set,
    for a report; None where the C library is not glibc (the policy is left as it is there, and reports say so)."""
    libc = _glibc()
    if libc is None:
        return None
    if not (
        libc.mallopt(M_TRIM_THRESHOLD, NEVER_TRIM_BYTES) and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX_BYTES)
    ):
        return None
    return KEPT


def _glibc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: mallopt absent or a no-op
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.mallopt.restype = ctypes.c_int
    return libc

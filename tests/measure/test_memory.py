import ctypes
import ctypes.util
import resource

import pytest

from greencompress.measure.memory import KEPT, keep_freed_memory

BLOCK_BYTES, BLOCKS = 8 << 20, 8  # a KV cache's size for a small LM, several held at once


def _faults_of_a_query_cycle(libc) -> int:
    """Minor page faults while blocks are allocated, written and freed, as a round of held generator states does."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(BLOCK_BYTES) for _ in range(BLOCKS)]
    for block in blocks:
        ctypes.memset(block, 1, BLOCK_BYTES)
    for block in blocks:
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def test_memory_freed_while_measuring_is_reused_without_faulting_pages_in_again():
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "gnu_get_libc_version"):
        pytest.skip("the policy is glibc's")
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, (ctypes.c_void_p,)
    assert keep_freed_memory() == KEPT
    _faults_of_a_query_cycle(libc)  # the first round grows the heap: its pages are new
    # Later rounds write the same 64 MB again: without the policy glibc unmaps each freed 8 MB block (16,384 faults
    # a round here); kept, the pages are the process's already.
    assert _faults_of_a_query_cycle(libc) < BLOCK_BYTES // 4096 // 8

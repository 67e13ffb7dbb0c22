"""Data-parallel fine-tuning under `torchrun`: the process-group primitives the pipeline needs, nothing more.

Rank 0 runs the whole pipeline. The other ranks only help with fine-tuning: they wait for a
command from rank 0 (`share`), train their share of each batch in DistributedDataParallel, and write
nothing. Without torchrun (no WORLD_SIZE, or 1) every function here is a no-op for one process.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
import torch.distributed as dist


def init_from_environment() -> bool:
    """Join the process group torchrun describes in the environment; False when not launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        # NCCL across GPUs, each rank on its LOCAL_RANK's device; gloo where ranks train on the CPU.
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend="nccl")
        else:
            dist.init_process_group(backend="gloo")
    return True


def shutdown() -> None:
    """Leave the process group before the interpreter exits: a rank that exits with gloo's threads still running may
    abort ("terminate called without an active exception") after its work is done."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def share(value):
    """Rank 0's `value` on every rank (any picklable object); the value itself when there is one process."""
    if world_size() == 1:
        return value
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value: float) -> float:
    """The mean of every rank's `value` (itself when there is one process)."""
    if world_size() == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total) / world_size()


@contextmanager
def threads_per_process():
    """Split the thread count between the ranks while they train side by side on one machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // world_size()))
    try:
        yield
    finally:
        torch.set_num_threads(before)

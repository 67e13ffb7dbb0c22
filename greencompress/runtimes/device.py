"""Which device a run measures on: the CPU, or an NVIDIA GPU that PyTorch sees (by UUID, for NVML).

`benchmark.device`: `cpu`, `cuda` (the first GPU), `cuda:N`, or `auto` (the first GPU when PyTorch
sees one, else the CPU). Asking for a GPU where there is none stops the run before any work, with
what is missing: a CUDA build of PyTorch, a driver, or a GPU with that index.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from greencompress.core.errors import GreencompressError


@dataclass(frozen=True)
class Device:
    """Where runners run: `kind` "cpu" or "cuda"; for a GPU its CUDA index (after CUDA_VISIBLE_DEVICES) and UUID."""

    kind: str
    index: int | None = None
    name: str | None = None
    uuid: str | None = None  # "GPU-xxxxxxxx-...", as NVML names it

    @property
    def torch_name(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index}"


def check_device_setting(value: str) -> str:
    """A recipe's device field, checked for form only (whether the GPU exists is known at run time)."""
    if value not in ("cpu", "cuda", "auto") and not re.fullmatch(r"cuda:\d+", value):
        raise ValueError(f"expected cpu, cuda, cuda:N or auto, got {value!r}")
    return value


def resolve_device(setting: str, torch_module=None) -> Device:
    """The Device a setting names on this machine; GreencompressError (exit 2) when a GPU is asked for but absent."""
    import torch as real_torch

    torch = torch_module or real_torch
    if setting == "cpu":
        return Device("cpu")
    available = torch.cuda.is_available()
    if setting == "auto" and not available:
        return Device("cpu")
    if not available:
        raise GreencompressError(
            f"benchmark.device: {setting} asked for, but PyTorch sees no CUDA GPU: {_why_no_gpu(torch)}"
        )
    index = 0 if setting in ("cuda", "auto") else int(setting.split(":")[1])
    count = torch.cuda.device_count()
    if index >= count:
        raise GreencompressError(
            f"benchmark.device: {setting} asked for, but PyTorch sees {count} GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
        )
    properties = torch.cuda.get_device_properties(index)
    uuid = getattr(properties, "uuid", None)
    return Device("cuda", index, properties.name, f"GPU-{uuid}" if uuid is not None else None)


def no_gpu_here(torch_module=None) -> str | None:
    """Why PyTorch sees no CUDA GPU on this machine, or None when it sees one."""
    import torch as real_torch

    torch = torch_module or real_torch
    return None if torch.cuda.is_available() else _why_no_gpu(torch)


def _why_no_gpu(torch) -> str:
    if getattr(torch.version, "cuda", None) is None:
        return f"this PyTorch ({torch.__version__}) is a CPU-only build; install a CUDA build of torch"
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return "CUDA_VISIBLE_DEVICES is set to an empty list"
    return (
        f"PyTorch {torch.__version__} is built for CUDA {torch.version.cuda}, but no NVIDIA driver or GPU "
        f"answers here (nvidia-smi should list one)"
    )

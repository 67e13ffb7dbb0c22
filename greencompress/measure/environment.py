"""What the numbers were measured on: the CPU (and GPUs), threads, OS, and the versions of every library and runtime."""

from __future__ import annotations

import platform
from dataclasses import asdict

from greencompress.core import __version__
from greencompress.core.hardware import cpu_info, cpu_topology
from greencompress.runtimes import RUNTIMES


def runtime_versions() -> dict[str, str]:
    """The package version of every registered runtime that can run here (installed, and its device present)."""
    from importlib import metadata

    versions = {}
    for spec in RUNTIMES:
        if spec.unavailable() is None:
            try:
                versions[spec.name] = metadata.version(spec.module or spec.name)
            except metadata.PackageNotFoundError:  # importable but not a distribution (a plugin's own module)
                versions[spec.name] = "unknown version"
    return versions


def unavailable_runtimes() -> dict[str, str]:
    """Every registered runtime that cannot run here, with the reason (package missing, no GPU, no provider)."""
    return {spec.name: reason for spec in RUNTIMES if (reason := spec.unavailable()) is not None}


def environment(
    threads: int, allow_spinning: bool | None = None, device: str = "cpu", gpus: dict | None = None
) -> dict:
    """A JSON-ready description of the machine and software a run measured on."""
    import numpy
    import onnx
    import onnxruntime
    import torch
    import torchvision

    cpu = cpu_info()
    return {
        "cpu": {**asdict(cpu), "vnni": cpu.has_vnni, "matrix_units": cpu.matrix_units},
        "threads": threads,
        # Thread counts are set per runtime; the threads are not pinned to cores beyond the process's affinity.
        "topology": asdict(cpu_topology()),
        "onnxruntime_spinning": allow_spinning,  # intra-op workers spin-wait (true) or sleep (false) between tasks
        "device": device,  # where the artifacts ran: "cpu" or "cuda:N"
        "gpu": gpus or None,  # per GPU measured: name, UUID, driver, memory, power limit, clocks (NVML)
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {
            "greencompress": __version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__,
        },
        "runtimes": runtime_versions(),  # usable here
        "runtimes_unavailable": unavailable_runtimes(),  # registered, with why they cannot run here
    }


def hardware_name(environment: dict) -> str:
    """What `compare` requires to be equal between runs: the GPU model(s) a run used, and the host CPU."""
    cpu = f"{environment['cpu']['model']} x{environment['cpu']['logical_cores']}"
    gpus = environment.get("gpu") or {}
    if str(environment.get("device", "cpu")).startswith("cuda"):
        return " + ".join([*sorted(str(gpu.get("name")) for gpu in gpus.values()), cpu])
    return cpu

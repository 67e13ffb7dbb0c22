"""Fetch into .whl/ the wheels a lent GPU machine lacks, at the versions installed here (where the tests pass).

    .venv/bin/python scripts/gpu_wheels.py          # then carry .whl to the GPU machine: bash scripts/gpu_session.sh

The GPU machines' image ('cuda', Python 3.12) has PyTorch with CUDA, torchvision, onnx, onnxruntime (CPU
build), nvidia-ml-py, numpy, PyYAML, scikit-learn, matplotlib, click, rich and pytest, but not pydantic
(every recipe section and the energy spec are pydantic models) nor torch-pruning; nothing can be
installed there but carried wheels. OpenVINO (a CPU runtime) and Optuna (search) are not needed there.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MISSING_ON_THE_GPU_IMAGE = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "torch-pruning",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".whl")
    parser.add_argument("--python-version", default="3.12", help="the GPU image's Python")
    arguments = parser.parse_args()
    arguments.dest.mkdir(exist_ok=True)
    wanted = {(normalized(name), version(name)) for name in MISSING_ON_THE_GPU_IMAGE}
    pins = [f"{name}=={version(name)}" for name in MISSING_ON_THE_GPU_IMAGE]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        arguments.python_version,
        "--implementation",
        "cp",
        "--dest",
        str(arguments.dest),
        *[option for platform in PLATFORMS for option in ("--platform", platform)],
        *pins,
    ]
    print("fetching", " ".join(pins), file=sys.stderr)
    subprocess.run(command, check=True)
    kept = []
    for wheel in sorted(arguments.dest.glob("*.whl")):
        name, wheel_version = wheel.name.split("-")[:2]
        if (normalized(name), wheel_version) in wanted:
            kept.append(wheel)
        else:  # another version left from an earlier fetch: two versions of one package stop the install there
            wheel.unlink()
    print(f"{len(kept)} wheels, {sum(w.stat().st_size for w in kept) / 2**20:.1f} MiB in {arguments.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

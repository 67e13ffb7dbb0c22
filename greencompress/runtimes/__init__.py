"""Runtimes: what runs a model (PyTorch, ONNX Runtime, OpenVINO, their GPU forms), the export feeding them, the device.

Importing the package registers greencompress's own runtimes in RUNTIMES, in the order reports
list them; a plugin's runtimes come from the `greencompress.runtimes` entry-point group.
"""

# One import per runtime, in registration order (the order `auto` and the reports use): keep it.
from greencompress.runtimes import pytorch  # noqa: F401, I001
from greencompress.runtimes import onnxruntime_cpu  # noqa: F401
from greencompress.runtimes import openvino_cpu  # noqa: F401
from greencompress.runtimes import pytorch_cuda  # noqa: F401
from greencompress.runtimes import onnxruntime_gpu  # noqa: F401
from greencompress.runtimes import genai  # noqa: F401
from greencompress.runtimes.base import RUNTIMES, Artifact, Runner, RunnerSettings, RuntimeSpec

__all__ = ["RUNTIMES", "Artifact", "Runner", "RunnerSettings", "RuntimeSpec"]

"""Kept for one release: runtimes moved to greencompress.runtimes (`from greencompress.runtimes import RuntimeSpec`)."""

from greencompress.runtimes.base import (
           RUNTIMES,
           Artifact,
           Runner,
           RunnerSettings,
           RuntimeSpec,
)
from greencompress.runtimes.onnxruntime_cpu import OnnxRuntimeRunner
from greencompress.runtimes.openvino_cpu import OpenVinoRunner
from greencompress.runtimes.pytorch import TorchRunner, set_threads

__all__ = ["RUNTIMES", "Artifact", "OnnxRuntimeRunner", "OpenVinoRunner", "Runner", "RunnerSettings", "RuntimeSpec",
           "TorchRunner", "set_threads"]

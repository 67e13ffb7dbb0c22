"""An NVIDIA GPU faked at its lowest boundaries: pynvml (counter, telemetry, power limits) and torch.cuda as read.

`pretend_a_gpu` puts the three seams together so that the GPU path runs end to end on a CPU machine: a
fake pynvml module, torch.cuda answering for one GPU, and the one thing no rehearsal can run, the CUDA
kernels, replaced by PyTorch on the CPU behind TorchCudaRunner's interface.
"""

from __future__ import annotations

import copy
import sys
import time
import types

import numpy as np

NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 13


class FakeGpu:
    """A GPU at constant power whose energy counter, like a real one, only moves every `update_period_s`."""

    def __init__(
        self, name: str, power_mw: float, has_counter: bool, update_period_s: float = 0.06, uuid: str | None = None
    ):
        self.name, self.power_mw, self.has_counter = name, power_mw, has_counter
        self.update_period_s, self.uuid = update_period_s, uuid or f"GPU-{name}-{id(self):x}"
        self.created = time.perf_counter()
        self.limit_mw, self.history = 700_000, []  # power limit, and every limit set, in order

    def energy_mj(self) -> int:  # integrates the constant power exactly, up to the last update
        elapsed = time.perf_counter() - self.created
        return int(self.power_mw * (elapsed - elapsed % self.update_period_s))


def fake_pynvml(gpus: list[FakeGpu], init_error: str | None = None) -> types.ModuleType:
    """pynvml as far as the energy counter and power readings go (no telemetry, no limits: see below)."""
    module = types.ModuleType("pynvml")

    class NVMLError(Exception):
        def __init__(self, value):
            self.value = value
            super().__init__(
                {NOT_SUPPORTED: "Not Supported", NO_PERMISSION: "Insufficient Permissions"}.get(value, f"error {value}")
            )

    def init():
        if init_error:
            raise NVMLError(init_error)

    def total_energy(gpu):
        if not gpu.has_counter:
            raise NVMLError(NOT_SUPPORTED)
        return gpu.energy_mj()

    def by_uuid(uuid):
        for gpu in gpus:
            if gpu.uuid.encode() == uuid:
                return gpu
        raise NVMLError(NOT_FOUND)

    module.NVMLError = NVMLError
    module.NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    module.NVML_ERROR_NO_PERMISSION = NO_PERMISSION
    module.nvmlInit = init
    module.nvmlDeviceGetCount = lambda: len(gpus)
    module.nvmlDeviceGetHandleByIndex = lambda index: gpus[index]
    module.nvmlDeviceGetTotalEnergyConsumption = total_energy
    module.nvmlDeviceGetPowerUsage = lambda gpu: int(gpu.power_mw)
    module.nvmlDeviceGetName = lambda gpu: gpu.name.encode()
    module.nvmlDeviceGetIndex = lambda gpu: gpus.index(gpu)
    module.nvmlDeviceGetUUID = lambda gpu: gpu.uuid.encode()
    module.nvmlDeviceGetHandleByUUID = by_uuid
    return module


def with_telemetry(nvml: types.ModuleType, throttle_bits: int = 0x4 | 0x20) -> types.ModuleType:
    """Clocks, temperature, driver, memory and enforced limit, as an H100 at 71 C under a power cap answers."""
    nvml.NVML_TEMPERATURE_GPU, nvml.NVML_CLOCK_SM = 0, 1
    nvml.nvmlDeviceGetTemperature = lambda handle, sensor: 71
    nvml.nvmlDeviceGetClockInfo = lambda handle, clock: 1755
    nvml.nvmlDeviceGetMaxClockInfo = lambda handle, clock: 1980
    nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda handle: throttle_bits
    nvml.nvmlSystemGetDriverVersion = lambda: b"560.35.03"
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda handle: handle.limit_mw
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(total=80 * 2**30)
    return nvml


def with_power_limits(nvml: types.ModuleType, allowed: bool = True) -> types.ModuleType:
    """Power limits between 200 and 700 W; setting one is refused (no root) unless `allowed`."""
    nvml.nvmlDeviceGetPowerManagementLimit = lambda handle: handle.limit_mw
    nvml.nvmlDeviceGetPowerManagementLimitConstraints = lambda handle: (200_000, 700_000)

    def set_limit(handle, milliwatts):
        if not allowed:
            raise nvml.NVMLError(NO_PERMISSION)
        handle.limit_mw = milliwatts
        handle.history.append(milliwatts)

    nvml.nvmlDeviceSetPowerManagementLimit = set_limit
    return nvml


def fake_torch(gpus: list[str], cuda_version: str | None = "13.0"):
    """A torch module as far as device.py reads it: CUDA build or not, and the GPUs it sees."""
    cuda = types.SimpleNamespace(
        is_available=lambda: bool(gpus),
        device_count=lambda: len(gpus),
        get_device_properties=lambda index: _properties(gpus[index], index),
    )
    return types.SimpleNamespace(cuda=cuda, version=types.SimpleNamespace(cuda=cuda_version), __version__="2.14.1")


def _properties(name: str, index: int):
    return types.SimpleNamespace(name=name, uuid=f"{index:08x}-0000-0000-0000-000000000000")


class CpuStandIn:
    """TorchCudaRunner's interface on the CPU, in FP32 whatever the precision: the kernels are not rehearsed."""

    made: list = []  # (precision, compile) of every runner made, for tests to read

    def __init__(self, model, settings):
        import torch

        self.torch, self.model = torch, copy.deepcopy(model).eval()
        CpuStandIn.made.append((settings.precision, settings.compile))

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(inputs)).numpy()

    def prepare(self, inputs: np.ndarray):
        batch = self.torch.from_numpy(inputs)

        def run() -> int:  # like CUDA events: the call's own duration in ns
            started = time.perf_counter_ns()
            with self.torch.inference_mode():
                self.model(batch)
            return time.perf_counter_ns() - started

        return run


def pretend_a_gpu(monkeypatch, name: str = "NVIDIA H100 80GB HBM3", bf16: bool = False) -> FakeGpu:
    """This process sees one GPU: in pynvml, where greencompress asks torch.cuda about it, and in its GPU runner.

    torch.cuda.is_available() itself stays False: PyTorch's own code (the ONNX exporter) would otherwise
    look for a driver. greencompress asks through resolve_device and cuda_unavailable, faked here.
    The fake counter is exact, so windows may be short: 100 updates of 2 ms, not a second.
    """
    import torch

    import greencompress.runtimes.pytorch_cuda as gpu_runtime
    from greencompress import bench
    from greencompress.measure.energy import nvml
    from greencompress.pipeline import prepare as pipeline
    from greencompress.runtimes import device

    monkeypatch.setattr(nvml, "MIN_COUNTER_WINDOW_S", 0.1)

    gpu = FakeGpu(name, 300_000, True, update_period_s=0.002, uuid=f"GPU-{_properties(name, 0).uuid}")
    monkeypatch.setitem(sys.modules, "pynvml", with_power_limits(with_telemetry(fake_pynvml([gpu]))))
    real_resolve, torch_with_a_gpu = device.resolve_device, fake_torch([name])

    def resolve(setting: str, torch_module=None):
        return real_resolve(setting, torch_module or torch_with_a_gpu)

    for module in (device, pipeline, bench):
        monkeypatch.setattr(module, "resolve_device", resolve)
    monkeypatch.setattr(gpu_runtime, "cuda_unavailable", lambda: None)
    monkeypatch.setattr(gpu_runtime, "TorchCudaRunner", CpuStandIn)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *args, **kwargs: None)  # nothing is queued on a CPU
    CpuStandIn.made = []
    return gpu

"""The NVML seam: where pynvml is loaded, and the small helpers every NVML reader shares.

Everything in the agent takes the NVML module as an argument (`nvml`), so the real pynvml and
the fake of scheduler/agent/fake_nvml.py are interchangeable. Answers are read defensively:
strings may come back as bytes or str depending on the nvidia-ml-py version, and errors are
`nvml.NVMLError` instances whose `.value` is the NVML return code.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

Nvml = Any  # the pynvml module, or a fake exposing the same function names and constants
Handle = Any  # an NVML device / GPU-instance / compute-instance handle

# NVML return codes (nvml.h); the same numbers in pynvml and go-nvml.
NOT_SUPPORTED = 3
INVALID_ARGUMENT = 2
NO_PERMISSION = 4
NOT_FOUND = 6
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
IN_USE = 19
INSUFFICIENT_RESOURCES = 23

_MAX_INSTANCES = 8  # NVML caps a profile at 7 instances per GPU (GIs) or per GI (CIs)


def load() -> Nvml:
    """The real pynvml module (importing it does not load libnvidia-ml; nvmlInit does)."""
    import pynvml

    return pynvml


def text(value: object) -> str:
    """An NVML string answer as str (older bindings return bytes)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace").rstrip("\x00")
    return str(value)


def code(err: BaseException) -> int | None:
    """The NVML return code of an NVMLError (None for anything else)."""
    value = getattr(err, "value", None)
    return value if isinstance(value, int) else None


def describe(err: BaseException) -> str:
    """A short text for an NVML error that never calls back into the library."""
    c = code(err)
    name = type(err).__name__.removeprefix("NVMLError_")
    return f"{name} (NVML code {c})" if c is not None else f"{type(err).__name__}: {err}"


def bus_key(bus_id: str) -> str:
    """PCI bus ids folded to one spelling: NVML writes '00000000:07:00.0' for a device and may
    write the remote end of a link with a shorter domain."""
    raw = bus_id.strip().lower()
    parts = raw.split(":")
    if len(parts) == 3:
        try:
            return f"{int(parts[0], 16):04x}:{int(parts[1], 16):02x}:{parts[2]}"
        except ValueError:
            return raw
    if len(parts) == 2:  # no domain: NVML's default domain is 0
        return f"0000:{raw}"
    return raw


def _list(fn: Callable[..., object], parent: Handle, profile_id: int, kind: Any) -> list[Handle]:
    arr = (kind * _MAX_INSTANCES)()
    count = ctypes.c_uint(0)
    fn(parent, profile_id, arr, ctypes.byref(count))
    return [arr[i] for i in range(min(count.value, _MAX_INSTANCES))]


def gpu_instances(nvml: Nvml, device: Handle, profile_id: int) -> list[Handle]:
    """The GPU instances of one profile on a GPU (nvmlDeviceGetGpuInstances fills a ctypes array)."""
    return _list(nvml.nvmlDeviceGetGpuInstances, device, profile_id, nvml.c_nvmlGpuInstance_t)


def compute_instances(nvml: Nvml, gi: Handle, profile_id: int) -> list[Handle]:
    """The compute instances of one profile inside a GPU instance."""
    return _list(nvml.nvmlGpuInstanceGetComputeInstances, gi, profile_id, nvml.c_nvmlComputeInstance_t)

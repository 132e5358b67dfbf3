"""Entry point of the `cuda` backend (group `candle.backends`). Light: CuPy is imported by the probe, and
the backend (kernels, cuBLAS) by the factory on first use of a `cuda:N` device."""

from __future__ import annotations

import ctypes
from typing import Any

from candle.errors import BackendUnavailableError
from candle.plugin import BackendSpec, hookimpl

# Above opencl's 10 and cpu's 0: CANDLE_DEVICE=auto picks an available GPU.
PRIORITY = 20


def cupy_package(driver_version: int | None) -> str:
    """The CuPy wheel for a CUDA driver version as `cuDriverGetVersion` reports it (12040 = CUDA 12.4):
    `cupy-cuda13x` for CUDA 13 drivers and newer, else `cupy-cuda12x` (CuPy's wheels need CUDA >= 12)."""
    if driver_version is not None and driver_version >= 13000:
        return "cupy-cuda13x"
    return "cupy-cuda12x"


def driver_version() -> int | None:
    """The CUDA version the installed NVIDIA driver supports (`cuDriverGetVersion`, e.g. 13000), read with
    ctypes from libcuda without CuPy; None when there is no driver."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        v = ctypes.c_int(0)
        try:
            if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0:
                return int(v.value)
        except (AttributeError, OSError):
            return None
    return None


def install_hint(version: int | None) -> str:
    """The pip command for CuPy, with the wheel for the driver found (or both choices when none is)."""
    pkg = cupy_package(version)
    extra = pkg.removeprefix("cupy-").removesuffix("x")
    if version:
        why = f"the NVIDIA driver supports CUDA {version // 1000}.{version % 1000 // 10}"
    else:
        why = "no NVIDIA driver found: cupy-cuda12x for CUDA 12.x drivers, cupy-cuda13x for CUDA 13.x"
    return f'pip install "candle-core[cuda]" {pkg} (or "candle-cuda[{extra}]"; {why})'


def _import_cupy() -> Any:
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailableError(f"cupy is not installed: {install_hint(driver_version())}") from e
    except Exception as e:  # noqa: BLE001 - a broken CuPy (missing CUDA libraries) must not crash the registry
        raise BackendUnavailableError(f"cupy failed to import: {type(e).__name__}: {e}") from e
    return cupy


def _probe() -> int:
    """How many CUDA devices CuPy sees; `BackendUnavailableError` with the reason when none can run."""
    cupy = _import_cupy()
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError: no driver, driver too old, no device
        text = f"{type(e).__name__}: {e}"
        drv = driver_version()
        if drv is None:
            why = "no NVIDIA driver is installed (libcuda.so.1 not found)"
        elif "InsufficientDriver" in text or "driver version is insufficient" in text:
            why = f"the NVIDIA driver is older than CuPy's CUDA runtime ({install_hint(drv)})"
        elif "NoDevice" in text or "no CUDA-capable device" in text:
            why = "no CUDA device (no NVIDIA GPU visible)"
        else:
            why = "no usable NVIDIA driver or device"
        raise BackendUnavailableError(f"CUDA is not usable here: {why}: {text}") from e
    if n <= 0:
        raise BackendUnavailableError("cupy found no CUDA device")
    return n


def _make(index: int):  # noqa: ANN202 - the heavy import happens here, on first use of the device
    from candle.device import Device

    from .backend import CudaBackend
    from .runtime import runtime

    return CudaBackend(runtime(index), Device("cuda", index))


@hookimpl
def candle_backends() -> list[BackendSpec]:
    return [BackendSpec(name="cuda", factory=_make, probe=_probe, priority=PRIORITY,
                        description="CuPy on NVIDIA GPUs: cuBLAS and candle's CUDA C kernels")]

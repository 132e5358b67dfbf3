"""Entry point of the `opencl` backend (group `candle.backends`). Light: PyOpenCL is imported by the probe.

Environment:
    CANDLE_OPENCL_PLATFORM  only platforms whose name contains this text (case-insensitive), or the
                            platform of this index in `pyopencl.get_platforms()`.
    CANDLE_OPENCL_DEVICE    only devices whose name contains this text (case-insensitive), or the
                            device of this index among those of the chosen platforms: the first match
                            is `opencl:0`.
"""

from __future__ import annotations

import os
from typing import Any

from candle.errors import BackendUnavailableError
from candle.plugin import BackendSpec, hookimpl

INSTALL_HINT = 'pip install "candle-core[opencl]" pocl-binary-distribution'

# Above cpu's 0: CANDLE_DEVICE=auto picks an available OpenCL device.
PRIORITY = 10


def _select_platforms(platforms: list[Any]) -> list[Any]:
    want = os.environ.get("CANDLE_OPENCL_PLATFORM", "").strip()
    if not want:
        return platforms
    if want.isdigit():
        i = int(want)
        return platforms[i:i + 1]
    return [p for p in platforms if want.lower() in p.name.lower()]


def devices() -> list[Any]:
    """The OpenCL devices candle would use, in `opencl:N` order; `BackendUnavailableError` with the
    reason when there are none. Imports PyOpenCL."""
    try:
        import pyopencl as cl
    except ImportError as e:
        raise BackendUnavailableError(f"pyopencl is not installed: {INSTALL_HINT}") from e
    except Exception as e:  # noqa: BLE001 - a broken PyOpenCL must not crash the registry
        raise BackendUnavailableError(f"pyopencl failed to import: {type(e).__name__}: {e}") from e
    try:
        platforms = cl.get_platforms()
    except Exception as e:  # noqa: BLE001 - LogicError PLATFORM_NOT_FOUND_KHR when no ICD is installed
        raise BackendUnavailableError(
            f"no OpenCL platform found (no OpenCL driver / ICD installed): {type(e).__name__}: {e}; "
            f"for OpenCL on the CPU: pip install pocl-binary-distribution") from e
    if not platforms:
        raise BackendUnavailableError("no OpenCL platform found (no OpenCL driver / ICD installed); "
                                      "for OpenCL on the CPU: pip install pocl-binary-distribution")
    chosen = _select_platforms(platforms)
    if not chosen:
        names = ", ".join(repr(p.name) for p in platforms)
        raise BackendUnavailableError(f"no OpenCL platform matches CANDLE_OPENCL_PLATFORM="
                                      f"{os.environ.get('CANDLE_OPENCL_PLATFORM')!r} (platforms: {names})")
    found: list[Any] = []
    errors: list[str] = []
    for p in chosen:
        try:
            found.extend(p.get_devices())
        except Exception as e:  # noqa: BLE001 - DEVICE_NOT_FOUND on a platform without devices
            errors.append(f"{p.name}: {type(e).__name__}: {e}")
    want = os.environ.get("CANDLE_OPENCL_DEVICE", "").strip()
    if found and want:
        if want.isdigit():
            picked = found[int(want):int(want) + 1]
        else:
            picked = [d for d in found if want.lower() in d.name.lower()]
        if not picked:
            names = ", ".join(repr(d.name.strip()) for d in found)
            raise BackendUnavailableError(f"no OpenCL device matches CANDLE_OPENCL_DEVICE={want!r} (devices: {names})")
        found = picked
    if not found:
        detail = f" ({'; '.join(errors)})" if errors else ""
        names = ", ".join(repr(p.name) for p in chosen)
        raise BackendUnavailableError(f"no OpenCL device on platform(s) {names}{detail}")
    return found


def _probe() -> int:
    return len(devices())


def select_device(index: int) -> Any:
    """The OpenCL device of `opencl:index`; `BackendUnavailableError` when there is none."""
    found = devices()
    if not 0 <= index < len(found):
        raise BackendUnavailableError(f"opencl:{index} does not exist: {len(found)} OpenCL device(s) found")
    return found[index]


def _make(index: int):  # noqa: ANN202 - the heavy import happens here, on first use of the device
    from .backend import OpenCLBackend

    return OpenCLBackend(index)


@hookimpl
def candle_backends() -> list[BackendSpec]:
    return [BackendSpec(name="opencl", factory=_make, probe=_probe, priority=PRIORITY,
                        description="PyOpenCL with candle's own OpenCL C kernels")]

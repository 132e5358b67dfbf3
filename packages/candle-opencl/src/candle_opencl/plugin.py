"""Entry point of the `opencl` backend (group `candle.backends`). Light: PyOpenCL is imported by the probe.

Environment:
    CANDLE_OPENCL_PLATFORM  only platforms whose name contains this text (case-insensitive), or the
                            platform of this index in `pyopencl.get_platforms()`.
    CANDLE_OPENCL_DEVICE    (for the backend issue, not read yet) the device of `opencl:0`.
"""

from __future__ import annotations

import os
from typing import Any

from candle.errors import BackendUnavailableError, UnsupportedError
from candle.plugin import BackendSpec, hookimpl

INSTALL_HINT = 'pip install "candle-core[opencl]" pocl-binary-distribution'

# Below cpu's 0 while this package is a skeleton, so that CANDLE_DEVICE=auto never picks a backend that
# cannot run yet; the OpenCL backend issue raises it above cpu.
PRIORITY = -100


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
    if not found:
        detail = f" ({'; '.join(errors)})" if errors else ""
        names = ", ".join(repr(p.name) for p in chosen)
        raise BackendUnavailableError(f"no OpenCL device on platform(s) {names}{detail}")
    return found


def _probe() -> int:
    return len(devices())


def _make(index: int):  # noqa: ANN202
    raise UnsupportedError("candle-opencl 0.1.0 is a skeleton: its kernels land with the OpenCL backend issue")


@hookimpl
def candle_backends() -> list[BackendSpec]:
    return [BackendSpec(name="opencl", factory=_make, probe=_probe, priority=PRIORITY,
                        description="PyOpenCL with candle's own kernels (skeleton: no kernels yet)")]

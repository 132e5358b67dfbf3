"""Entry point of the `cuda` backend (group `candle.backends`). Light: CuPy is imported by the probe."""

from __future__ import annotations

from candle.errors import BackendUnavailableError, UnsupportedError
from candle.plugin import BackendSpec, hookimpl

INSTALL_HINT = "pip install 'candle-core[cuda]' cupy-cuda12x (or cupy-cuda13x for CUDA 13)"

# Below cpu's 0 while this package is a skeleton, so that CANDLE_DEVICE=auto never picks a backend that
# cannot run yet; the CUDA backend issue raises it above opencl's.
PRIORITY = -100


def _probe() -> int:
    """How many CUDA devices CuPy sees; `BackendUnavailableError` with the reason when none can run."""
    try:
        import cupy
    except ImportError as e:
        raise BackendUnavailableError(f"cupy is not installed: {INSTALL_HINT}") from e
    except Exception as e:  # noqa: BLE001 - a broken CuPy (missing CUDA libraries) must not crash the registry
        raise BackendUnavailableError(f"cupy failed to import: {type(e).__name__}: {e}") from e
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as e:  # noqa: BLE001 - CUDARuntimeError: no driver, driver too old, no device
        raise BackendUnavailableError(f"CUDA is not usable here (no NVIDIA driver or no device?): "
                                      f"{type(e).__name__}: {e}") from e
    if n <= 0:
        raise BackendUnavailableError("cupy found no CUDA device")
    return n


def _make(index: int):  # noqa: ANN202
    raise UnsupportedError("candle-cuda 0.1.0 is a skeleton: its kernels land with the CUDA backend issue")


@hookimpl
def candle_backends() -> list[BackendSpec]:
    return [BackendSpec(name="cuda", factory=_make, probe=_probe, priority=PRIORITY,
                        description="CuPy on NVIDIA GPUs (skeleton: no kernels yet)")]

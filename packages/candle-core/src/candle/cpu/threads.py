"""The thread count of numpy's BLAS (OpenBLAS in the numpy wheels), which runs the CPU backend's matmuls,
read and changed while the program runs.

threadpoolctl, an optional dependency, finds the BLAS library numpy loaded and calls its `set_num_threads`
(about a microsecond). Without it the count is read from `OPENBLAS_NUM_THREADS` / `OMP_NUM_THREADS` (else the
number of cores) and cannot be changed. Nothing here imports numpy or threadpoolctl before it is called.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["blas_threads", "set_blas_threads"]

_UNSET: Any = object()
_controller: Any = _UNSET  # threadpoolctl's controllers of the BLAS libraries, or None when unavailable


def _blas() -> Any:
    global _controller
    if _controller is _UNSET:
        try:
            import numpy  # noqa: F401 -- the BLAS library is found among the loaded ones
            from threadpoolctl import ThreadpoolController

            libs = ThreadpoolController().select(user_api="blas").lib_controllers
            _controller = libs or None
        except Exception:  # noqa: BLE001 -- not installed, or a platform it cannot inspect
            _controller = None
    return _controller


def blas_threads() -> int:
    """The threads numpy's BLAS uses now."""
    libs = _blas()
    if libs:
        return int(libs[0].get_num_threads())
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(k, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return os.cpu_count() or 1


def set_blas_threads(n: int) -> bool:
    """Make numpy's BLAS use `n` threads (>= 1); False when the count cannot be changed (no threadpoolctl)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_blas_threads: expected a positive int, got {n!r}")
    libs = _blas()
    if not libs:
        return False
    for lib in libs:
        lib.set_num_threads(n)
    return True

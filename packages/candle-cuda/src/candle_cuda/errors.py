"""Errors of the CUDA backend (light: no CuPy import)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, TypeVar

from candle.errors import CandleError

F = TypeVar("F", bound=Callable[..., Any])


class CudaOutOfMemoryError(CandleError, MemoryError):
    """The GPU could not allocate a buffer; the message names the device and the requested bytes."""

    def __init__(self, message: str, requested: int | None = None) -> None:
        super().__init__(message)
        self.requested = requested


def fmt_bytes(n: int) -> str:
    """`1536` -> `'1.50 KiB'`."""
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if x < 1024 or unit == "TiB":
            return f"{int(x)} B" if unit == "B" else f"{x:.2f} {unit}"
        x /= 1024
    return f"{n} B"  # pragma: no cover


_SIZE_RE = re.compile(r"allocating\s+([\d,]+)\s+bytes")


def requested_bytes(exc: BaseException) -> int | None:
    """The size CuPy's `OutOfMemoryError` was asked for (its message: `Out of memory allocating 1,024
    bytes (allocated so far: ...)`), or None."""
    m = _SIZE_RE.search(str(exc))
    return int(m.group(1).replace(",", "")) if m else None


def oom_error(exc: BaseException, device: str, op: str, pool_bytes: int | None = None) -> CudaOutOfMemoryError:
    """The candle error for a CuPy out-of-memory exception raised while running `op` on `device`."""
    n = requested_bytes(exc)
    what = f"{n:,} bytes ({fmt_bytes(n)})" if n is not None else "a buffer"
    held = f"; candle's memory pool holds {fmt_bytes(pool_bytes)}" if pool_bytes else ""
    return CudaOutOfMemoryError(f"{device}: out of GPU memory in {op}: could not allocate {what}{held} "
                                f"(CuPy: {exc})", n)


def translating_oom(oom_types: Callable[[Any], tuple[type[BaseException], ...]]) -> Callable[[F], F]:
    """Method decorator: an out-of-memory exception of the runtime (`oom_types(self)`) becomes a
    `CudaOutOfMemoryError` naming the op and the requested bytes."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kw: Any) -> Any:
            try:
                return fn(self, *args, **kw)
            except oom_types(self) as e:
                raise oom_error(e, str(self.device), fn.__name__, self.rt.pool_bytes()) from e

        return wrapper  # type: ignore[return-value]

    return deco

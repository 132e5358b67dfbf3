"""The kernel-call counter (kept apart from the backend so that reading it imports no numpy)."""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_by_kernel: Counter[str] = Counter()  # "binary" -> calls
_by_op: Counter[str] = Counter()  # "binary:add" -> calls (the op name where the kernel takes one)


def record(kernel: str, op: str | None) -> None:
    with _lock:
        _by_kernel[kernel] += 1
        _by_op[f"{kernel}:{op}" if op else kernel] += 1


def counts(detail: bool = False) -> dict[str, int]:
    """Kernel calls since the last `reset()`, by kernel name (`binary`, `reduce`, `matmul`...).

    With `detail=True` the kernels that take an op name are split by it (`binary:add`, `reduce:sum`).
    """
    with _lock:
        return dict(_by_op if detail else _by_kernel)


def total() -> int:
    """All kernel calls since the last `reset()`."""
    with _lock:
        return sum(_by_kernel.values())


def reset() -> None:
    """Forget every count."""
    with _lock:
        _by_kernel.clear()
        _by_op.clear()

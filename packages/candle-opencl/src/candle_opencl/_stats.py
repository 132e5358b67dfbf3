"""Counters of host<->device transfers, kernel launches and program builds (no PyOpenCL import).

    import candle_opencl
    candle_opencl.reset_stats(); model(x, cache); candle_opencl.stats()
    # {'kernel': 402}  -- no 'from_numpy' / 'to_numpy': the forward never left the device
"""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_counts: Counter[str] = Counter()
_bytes: Counter[str] = Counter()


def record(event: str, nbytes: int) -> None:
    """Count one `event` ("from_numpy", "to_numpy", "kernel", "build") moving `nbytes`."""
    with _lock:
        _counts[event] += 1
        if nbytes:
            _bytes[event] += nbytes


def stats(with_bytes: bool = False) -> dict[str, int]:
    """Events since the last `reset_stats()`: transfers (`from_numpy`, `to_numpy`), `kernel` launches,
    program `build`s; with `with_bytes`, also `<event>_bytes` for the transfers."""
    with _lock:
        out = dict(_counts)
        if with_bytes:
            out.update({f"{k}_bytes": v for k, v in _bytes.items()})
        return out


def reset_stats() -> None:
    """Forget every count."""
    with _lock:
        _counts.clear()
        _bytes.clear()

"""`CountingBackend`: candle's numpy CPU backend under the device name `countdev`, counting kernel calls.

Every public method of the backend (the primitives of `candle.backend.Backend` and the optional fused
kernels the CPU backend has) is wrapped once, at class creation, so that a call records its kernel
name, and for the kernels whose first argument is an op name (`unary`, `binary`, `cmp`, `reduce`,
`arg_reduce`) that op too. Fused kernels the CPU backend lacks stay absent, so core's lookup of an
optional kernel behaves exactly as on cpu.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from candle.backend import Backend
from candle.cpu.backend import NumpyBackend
from candle.device import Device
from candle.dtype import DType

from ._counter import record

# queries that run no kernel: not counted
_NOT_KERNELS = frozenset({"supports_dtype", "dlpack_device", "strides", "is_contiguous"})
_OP_FIRST = frozenset({"unary", "binary", "cmp", "reduce", "arg_reduce"})


def _counting(name: str, fn: Any) -> Any:
    if name in _OP_FIRST:

        @functools.wraps(fn)
        def wrapper(self: Any, op: str, *args: Any, **kwargs: Any) -> Any:
            record(name, op)
            return fn(self, op, *args, **kwargs)
    else:

        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            record(name, None)
            return fn(self, *args, **kwargs)

    return wrapper


def _kernel_names(cls: type) -> list[str]:
    names = set()
    for klass in cls.__mro__:
        if klass is object or not (issubclass(klass, Backend) or klass.__module__.startswith("candle.cpu.")):
            continue  # the CPU backend's kernel mixins (conv, fused norm/attention) count too
        names.update(n for n, v in vars(klass).items() if not n.startswith("_") and callable(v)
                     and not isinstance(v, (staticmethod, classmethod)))
    return sorted(names - _NOT_KERNELS)


class CountingBackend(NumpyBackend):
    """numpy kernels on `countdev:<index>`; `candle_countdev.counts()` tells how often each ran."""

    name = "countdev"

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.device = Device("countdev", index)

    def from_numpy(self, array: np.ndarray, dtype: DType) -> np.ndarray:
        # a transfer to another device copies (the cpu backend shares memory with the host array)
        return np.array(array, copy=True)

    def to_numpy(self, x: np.ndarray, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
        # ...and so does a transfer back to the host, as from a real device
        return np.array(x, copy=True)


for _name in _kernel_names(CountingBackend):
    setattr(CountingBackend, _name, _counting(_name, getattr(CountingBackend, _name)))
del _name

KERNELS: tuple[str, ...] = tuple(_kernel_names(CountingBackend))
"""The kernel names that are counted."""

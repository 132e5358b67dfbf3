"""An emulated CUDA runtime on numpy, for CI machines without a GPU.

`emulated_backend()` is a `CudaBackend` whose array module is numpy: every primitive, the bfloat16
handling, the array-module fused kernels (conv2d, conv_transpose2d, pooling, upsampling, cumsum) and the
error handling run exactly the code the GPU runs, with CuPy's calls replaced by numpy's identical ones.
What it cannot run are the CUDA C kernels and cuBLAS: those fused kernels are absent (core composes
them) and matrix products use numpy. tests/test_cuda_emulated.py runs candle's conformance kit on it.
It proves the Python layer, never GPU behaviour.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import bf16
from .fused import KERNEL_FUSED


class EmulatedRuntime:
    """The subset of `runtime.Runtime` the backend uses, on numpy."""

    xp: Any = np
    has_kernels = False
    emulated = True
    name = "numpy (emulated CUDA runtime)"
    index = 0

    def __init__(self) -> None:
        self.oom_types: tuple[type[BaseException], ...] = (MemoryError,)

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def pool_bytes(self) -> int:
        return 0

    def launch(self, *args: Any, **kw: Any) -> None:
        raise RuntimeError("the emulated CUDA runtime has no CUDA kernels")

    @staticmethod
    def ct(dtype: str, value: float) -> Any:
        return np.float64(value) if dtype == "f64" else np.float32(value)

    @staticmethod
    def erf(x: np.ndarray) -> np.ndarray:
        from candle.cpu.special import erf

        return erf(x).astype(x.dtype, copy=False)

    @staticmethod
    def uniform(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
        return np.random.Generator(np.random.Philox(seed)).random(shape, dtype=dtype)

    @staticmethod
    def normal(shape: tuple[int, ...], dtype: str, seed: int) -> np.ndarray:
        return np.random.Generator(np.random.Philox(seed)).standard_normal(shape, dtype=dtype)

    @staticmethod
    def add_at(flat: np.ndarray, pos: np.ndarray, vals: np.ndarray) -> None:
        np.add.at(flat, pos, vals)

    @staticmethod
    def bf16_to_f32(u: np.ndarray) -> np.ndarray:
        return bf16.to_f32(np, u)

    @staticmethod
    def f32_to_bf16(f: np.ndarray) -> np.ndarray:
        return bf16.from_f32(np, f)

    @staticmethod
    def bf16_binary(op: str, a: np.ndarray, b: np.ndarray) -> None:
        return None  # the backend goes through float32 arrays

    @staticmethod
    def to_host(x: np.ndarray) -> np.ndarray:
        return np.array(x, copy=True)

    @staticmethod
    def from_host(a: np.ndarray) -> np.ndarray:
        return np.array(a, copy=True)


def emulated_backend(device_type: str = "cudaemu") -> Any:
    """A CudaBackend on the emulated runtime, installed as the backend of `Device(device_type)` (a device
    type no plugin registers, so the registry and `candle.backends()` never see it)."""
    from candle.device import Device

    from .backend import CudaBackend

    class EmulatedCudaBackend(CudaBackend):
        name = device_type

    for attr in KERNEL_FUSED + ("qdequantize", "qmatmul"):
        setattr(EmulatedCudaBackend, attr, None)  # core composes these (and qmatmul from qdequantize)
    dev = Device(device_type)
    be = EmulatedCudaBackend(EmulatedRuntime(), dev)
    dev._backend = be
    return be

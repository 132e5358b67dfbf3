"""The CUDA runtime of one device, on CuPy: the array module, the memory pool, the one stream, the
compiled kernel modules (one `cupy.RawModule` per (kernel file, dtype), compiled once per process and
cached; CuPy also keeps the compiled binaries on disk), cuBLAS, and random numbers.

Imported only by the backend factory: importing `candle` or `candle_cuda` never imports CuPy.

Stream: every kernel and library call runs on CuPy's current stream, which candle leaves at the
device's default (legacy) stream. That keeps all work in order with itself and with PyTorch/CuPy code
on their default streams, so DLPack exchange needs no events; `__dlpack__(stream=s)` for another
stream synchronizes first.
"""

from __future__ import annotations

import threading
from typing import Any

import cupy
import numpy as np

from . import kernels
from .dtypes import kernel_type


class Runtime:
    """Everything candle needs from one CUDA device."""

    xp: Any = cupy
    has_kernels = True
    emulated = False

    def __init__(self, index: int) -> None:
        self.index = index
        self.device = cupy.cuda.Device(index)
        with self.device:
            props = cupy.cuda.runtime.getDeviceProperties(index)
            self.name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            self.cc = int(self.device.compute_capability)
            self.sm_count = int(props.get("multiProcessorCount", 0))
            self.total_memory = int(props.get("totalGlobalMem", 0))
            self.pool = cupy.get_default_memory_pool()
        self._modules: dict[tuple[str, str], Any] = {}
        self._functions: dict[tuple[str, str, str], Any] = {}
        self._lock = threading.Lock()
        self.oom_types: tuple[type[BaseException], ...] = (cupy.cuda.memory.OutOfMemoryError,)
        self._cublas: Any = None

    # --- device selection ----------------------------------------------------------------------
    def use(self) -> None:
        """Make this device current (a no-op when it already is)."""
        if cupy.cuda.runtime.getDevice() != self.index:
            cupy.cuda.runtime.setDevice(self.index)

    def synchronize(self) -> None:
        self.device.synchronize()

    def pool_bytes(self) -> int:
        return int(self.pool.total_bytes())

    # --- kernels -------------------------------------------------------------------------------
    def module(self, file: str, dtype: str) -> Any:
        """The RawModule of `kernels/<file>.cu` for `dtype`, compiled on first use."""
        key = (file, dtype)
        mod = self._modules.get(key)
        if mod is None:
            with self._lock:
                mod = self._modules.get(key)
                if mod is None:
                    mod = cupy.RawModule(code=kernels.source(file, dtype), options=kernels.NVRTC_OPTIONS)
                    mod.compile()
                    self._modules[key] = mod
        return mod

    def function(self, file: str, op: str, dtype: str) -> Any:
        """The kernel `<op>_<dtype>` of `kernels/<file>.cu`."""
        key = (file, op, dtype)
        fn = self._functions.get(key)
        if fn is None:
            fn = self._functions[key] = self.module(file, dtype).get_function(kernels.kernel_name(op, dtype))
        return fn

    def launch(self, file: str, op: str, dtype: str, grid: tuple[int, ...], block: tuple[int, ...],
               args: tuple[Any, ...], smem: int = 0) -> None:
        self.function(file, op, dtype)(grid, block, args, shared_mem=smem)

    @staticmethod
    def ct(dtype: str, value: float) -> Any:
        """A scalar kernel argument of the compute type of `dtype`."""
        return np.dtype(kernel_type(dtype).ct_numpy).type(value)

    # --- cuBLAS ----------------------------------------------------------------------------------
    def cublas(self) -> tuple[Any, int]:
        """(the cupy_backends cublas module, this device's handle)."""
        if self._cublas is None:
            from cupy_backends.cuda.libs import cublas

            self._cublas = cublas
        return self._cublas, cupy.cuda.device.get_cublas_handle()

    def gemm(self, a: Any, b: Any, out: Any, plan: Any, dtype: str) -> None:
        """out = a @ b by one cublasGemmStridedBatchedEx call (`blas.plan` made `plan`)."""
        from .blas import gemm

        gemm(self, a, b, out, plan, dtype)

    # --- numerics the array module lacks ----------------------------------------------------------
    @staticmethod
    def erf(x: Any) -> Any:
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)

    @staticmethod
    def uniform(shape: tuple[int, ...], dtype: str, seed: int) -> Any:
        """Uniform [0, 1) numbers of float32/float64 from CuPy's generator seeded by candle's seed."""
        rs = cupy.random.RandomState(seed & ((1 << 63) - 1))
        return rs.random_sample(shape, dtype=dtype)

    @staticmethod
    def normal(shape: tuple[int, ...], dtype: str, seed: int) -> Any:
        rs = cupy.random.RandomState(seed & ((1 << 63) - 1))
        return rs.standard_normal(shape, dtype=dtype)

    @staticmethod
    def add_at(flat: Any, pos: Any, vals: Any) -> None:
        """flat[pos] += vals with repeated positions accumulated (atomics)."""
        import cupyx

        cupyx.scatter_add(flat, pos, vals)

    @staticmethod
    def bf16_to_f32(u: Any) -> Any:
        from .elementwise import bf16_to_f32

        return bf16_to_f32(u)

    @staticmethod
    def f32_to_bf16(f: Any) -> Any:
        from .elementwise import f32_to_bf16

        return f32_to_bf16(f)

    @staticmethod
    def bf16_binary(op: str, a: Any, b: Any) -> Any | None:
        """a op b on bfloat16 words in one kernel, or None when the op has no such kernel."""
        from .elementwise import BINARY_EXPR, bf16_binary

        return bf16_binary(op, a, b) if op in BINARY_EXPR else None

    @staticmethod
    def to_host(x: Any) -> np.ndarray:
        return cupy.asnumpy(x)

    @staticmethod
    def from_host(a: np.ndarray) -> Any:
        return cupy.asarray(a)


_RUNTIMES: dict[int, Runtime] = {}


def runtime(index: int) -> Runtime:
    """The runtime of `cuda:index` (one per process)."""
    rt = _RUNTIMES.get(index)
    if rt is None:
        rt = _RUNTIMES[index] = Runtime(index)
    return rt

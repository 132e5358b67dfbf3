"""`CudaBackend`: candle's op-kernel interface on CuPy arrays.

Native arrays are CuPy ndarrays (strided views: reshape/permute/slice/expand/flip never copy when the
layout allows). bfloat16 is stored as uint16 words (see `bf16.py`); float16 and bfloat16 compute in
float32 and round once, like candle's CPU backend. Elementwise ops, reductions, indexing, cat and sort are
CuPy's own routines; matrix products go to cuBLAS (`blas.py`); the fused kernels are candle's CUDA C
(`fused.py`, `kernels/*.cu`). The array module is the runtime's `xp`: CuPy on a GPU, numpy in the
emulated runtime the CI tests use (`emulate.py`), so everything here but the CUDA kernels and cuBLAS is
exercised without a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from candle.backend import Backend
from candle.device import Device
from candle.dtype import DType, bfloat16, float16, float32, float64, uint8
from candle.errors import DimError, DTypeError, UnsupportedError

from . import bf16
from .blas import contiguous_strides
from .errors import translating_oom
from .fused import KERNEL_FUSED, FusedKernels
from .quant import QuantKernels

Shape = tuple[int, ...]
_INT_IDENTITY = frozenset({"floor", "ceil", "round", "trunc"})
_HALF_NATIVE = frozenset({"add", "sub", "mul", "div", "maximum", "minimum"})
_oom = translating_oom(lambda self: self.rt.oom_types)


class CudaBackend(FusedKernels, QuantKernels, Backend):
    """candle on one CUDA device (`cuda:N`), or on the emulated runtime of the tests."""

    name = "cuda"

    def __init__(self, rt: Any, device: Device) -> None:
        self.rt = rt
        self.xp = rt.xp
        self.device = device
        self.index = device.index
        xp = self.xp
        self._sqrt_2_over_pi = math.sqrt(2.0 / math.pi)
        self._unary: dict[str, Callable[[Any], Any]] = {
            "neg": xp.negative, "abs": xp.abs, "sqr": xp.square, "sqrt": xp.sqrt,
            "rsqrt": lambda x: 1.0 / xp.sqrt(x), "recip": lambda x: 1.0 / x, "exp": xp.exp, "expm1": xp.expm1,
            "log": xp.log, "log1p": xp.log1p, "sin": xp.sin, "cos": xp.cos, "tan": xp.tan, "tanh": xp.tanh,
            "erf": rt.erf, "gelu": self._gelu_tanh, "gelu_erf": self._gelu_erf,
            "relu": lambda x: xp.maximum(x, 0), "silu": lambda x: x / (1.0 + xp.exp(-x)),
            "sigmoid": lambda x: 1.0 / (1.0 + xp.exp(-x)), "floor": xp.floor, "ceil": xp.ceil,
            "round": xp.round, "trunc": xp.trunc, "sign": xp.sign,
        }
        self._binary: dict[str, Callable[[Any, Any], Any]] = {
            "add": xp.add, "sub": xp.subtract, "mul": xp.multiply, "div": xp.true_divide, "pow": xp.power,
            "maximum": xp.maximum, "minimum": xp.minimum, "floor_divide": xp.floor_divide,
            "remainder": xp.remainder,
        }
        self._cmp = {"eq": xp.equal, "ne": xp.not_equal, "lt": xp.less, "le": xp.less_equal, "gt": xp.greater,
                     "ge": xp.greater_equal}
        self._reduce = {"sum": xp.sum, "max": xp.max, "min": xp.min, "prod": xp.prod}
        self._kind = "stable" if rt.emulated else None  # CuPy's argsort is always stable and takes no kind

    def __repr__(self) -> str:
        kind = "emulated on numpy" if self.rt.emulated else self.rt.name
        return f"CudaBackend({self.device}: {kind})"

    # --- dtype helpers ----------------------------------------------------------------------------
    def _st(self, dtype: DType) -> Any:
        """The storage dtype of `dtype` in the array module."""
        return self.xp.uint16 if dtype is bfloat16 else np.dtype(dtype.numpy)

    def _up(self, x: Any, dtype: DType) -> Any:
        """x in its compute dtype (float32 for the 16-bit floats)."""
        if dtype is bfloat16:
            return self.rt.bf16_to_f32(x)
        if dtype is float16:
            return x.astype(self.xp.float32)
        return x

    def _down(self, r: Any, dtype: DType) -> Any:
        """A compute-dtype result back to the storage of `dtype` (one rounding)."""
        if dtype is bfloat16:
            return self.rt.f32_to_bf16(r)
        st = self._st(dtype)
        return r if r.dtype == st else r.astype(st)

    def _arr(self, r: Any) -> Any:
        """Array modules return scalars from some 0-d operations; candle keeps arrays."""
        return r if isinstance(r, self.xp.ndarray) else self.xp.asarray(r)

    def _gelu_tanh(self, x: Any) -> Any:
        xp = self.xp
        return 0.5 * x * (1.0 + xp.tanh(x.dtype.type(self._sqrt_2_over_pi) * (x + 0.044715 * x * x * x)))

    def _gelu_erf(self, x: Any) -> Any:
        return (0.5 * x * (1.0 + self.rt.erf(x * x.dtype.type(1.0 / math.sqrt(2.0))))).astype(x.dtype)

    # --- transfer ---------------------------------------------------------------------------------
    @_oom
    def from_numpy(self, array: np.ndarray, dtype: DType) -> Any:
        a = np.asarray(array)
        if a.dtype != dtype.numpy:
            a = a.astype(dtype.numpy)
        if dtype is bfloat16:
            a = a.view(np.uint16)
        self.rt.use()
        return self.rt.from_host(np.ascontiguousarray(a) if a.ndim else a)

    def to_numpy(self, x: Any, shape: Shape, dtype: DType) -> np.ndarray:
        self.rt.use()
        h = self.rt.to_host(x)
        if dtype is bfloat16:
            h = h.view(bfloat16.numpy)
        return h.reshape(shape)

    def strides(self, x: Any, shape: Shape, dtype: DType) -> Shape:
        size = x.itemsize
        return tuple(s // size for s in x.strides)

    def dlpack_device(self) -> tuple[int, int]:
        return (2, self.index)  # kDLCUDA

    def to_dlpack(self, x: Any, shape: Shape, dtype: DType, stream: Any = None) -> Any:
        if dtype is bfloat16:
            raise UnsupportedError("DLPack export of bfloat16 from cuda: CuPy has no bfloat16 dtype (candle "
                                   "stores its raw uint16 words); cast to float16/float32 first")
        if self.rt.emulated:
            return x.__dlpack__()
        if stream is not None and stream not in (1, 2):
            self.rt.synchronize()  # a consumer on another stream: make our (default-stream) work visible
        return x.__dlpack__()

    def from_dlpack(self, obj: Any) -> tuple[Any, Shape, DType]:
        from candle.dtype import from_numpy_dtype

        xp = self.xp
        is_bf16 = str(getattr(obj, "dtype", "")) == "torch.bfloat16"
        if is_bf16:
            import torch

            obj = obj.view(torch.int16)  # the same memory, as 16-bit words CuPy can import
        try:
            arr = xp.from_dlpack(obj)
        except (BufferError, TypeError, RuntimeError, ValueError) as e:
            raise UnsupportedError(f"from_dlpack: {self.device} cannot import this array ({e})") from e
        if is_bf16:
            return arr.view(xp.uint16), tuple(arr.shape), bfloat16
        if arr.dtype == xp.uint16:
            raise UnsupportedError("from_dlpack: uint16 arrays have no candle dtype (bfloat16 arrives as "
                                   "torch.bfloat16)")
        return arr, tuple(arr.shape), from_numpy_dtype(np.dtype(arr.dtype))

    # --- creation ---------------------------------------------------------------------------------
    @_oom
    def full(self, shape: Shape, value: float | int, dtype: DType) -> Any:
        self.rt.use()
        if dtype is bfloat16:
            return self.xp.full(shape, bf16.scalar_bits(float(value)), dtype=self.xp.uint16)
        return self.xp.full(shape, value, dtype=self._st(dtype))

    @_oom
    def arange(self, start: float | int, step: float | int, n: int, dtype: DType) -> Any:
        xp = self.xp
        self.rt.use()
        if dtype.is_floating_point:
            r = xp.arange(n, dtype=xp.float64) * step + start
            return self._down(r.astype(xp.float32), dtype) if dtype is bfloat16 else r.astype(self._st(dtype))
        return (xp.arange(n, dtype=xp.int64) * int(step) + int(start)).astype(self._st(dtype))

    @_oom
    def rand_uniform(self, shape: Shape, low: float, high: float, dtype: DType, seed: int) -> Any:
        xp = self.xp
        self.rt.use()
        if dtype in (float32, float64):
            u = self.rt.uniform(shape, dtype.numpy.name, seed)
            return u if (low, high) == (0.0, 1.0) else (u * (high - low) + low).astype(dtype.numpy)
        u = self.rt.uniform(shape, "float32", seed) * np.float32(high - low) + np.float32(low)
        h = self._down(u, dtype)
        hi = self._down(xp.full((), high, dtype=xp.float32), dtype)
        lo = self._down(xp.full((), low, dtype=xp.float32), dtype)
        return xp.where(self._up(h, dtype) >= self._up(hi, dtype), lo, h)  # rounding must not reach high

    @_oom
    def rand_normal(self, shape: Shape, mean: float, std: float, dtype: DType, seed: int) -> Any:
        self.rt.use()
        g = self.rt.normal(shape, "float64" if dtype is float64 else "float32", seed)
        return self._down(g * g.dtype.type(std) + g.dtype.type(mean), dtype)

    # --- views and copies -------------------------------------------------------------------------
    def reshape(self, x: Any, shape: Shape, new_shape: Shape) -> Any:
        return x.reshape(new_shape)

    def permute(self, x: Any, shape: Shape, dims: Sequence[int]) -> Any:
        return x.transpose(tuple(dims))

    def slice(self, x: Any, shape: Shape, specs: Sequence[tuple[int, int, int]]) -> Any:
        return x[tuple([slice(a, b, c) for a, b, c in specs])]

    def expand(self, x: Any, shape: Shape, new_shape: Shape) -> Any:
        return self.xp.broadcast_to(x, tuple(new_shape))

    @_oom
    def contiguous(self, x: Any, shape: Shape) -> Any:
        return x if x.flags.c_contiguous else self.xp.ascontiguousarray(x)

    def is_contiguous(self, x: Any, shape: Shape) -> bool:
        return bool(x.flags.c_contiguous)

    @_oom
    def copy_(self, dst: Any, src: Any, shape: Shape) -> None:
        if any(s == 0 and n > 1 for s, n in zip(dst.strides, dst.shape)):
            raise UnsupportedError("copy_: the destination is a broadcast (expanded) view and cannot be written")
        xp = self.xp
        if src is not dst and xp.may_share_memory(dst, src):
            src = src.copy()  # overlapping source and destination (moving keys within a cache buffer)
        dst[...] = src

    @_oom
    def cast(self, x: Any, shape: Shape, src: DType, dst: DType) -> Any:
        xp = self.xp
        if src is dst:
            return x.copy()
        v = self._up(x, src)
        if dst is bfloat16:
            return self._down(v if v.dtype == xp.float32 else v.astype(xp.float32), dst)
        if src.is_floating_point and not dst.is_floating_point:
            v = xp.trunc(v.astype(xp.float64) if src in (float16, bfloat16) else v)
            if dst is uint8 or dst.name == "uint32":  # PyTorch wraps negatives modulo 2**bits
                return self._arr(v.astype(xp.int64).astype(self._st(dst)))
        return self._arr(v.astype(self._st(dst)))

    def flip(self, x: Any, shape: Shape, dims: Sequence[int]) -> Any:
        idx = [slice(None)] * len(shape)
        for d in dims:
            idx[d] = slice(None, None, -1)
        return x[tuple(idx)]

    # --- elementwise ------------------------------------------------------------------------------
    @_oom
    def unary(self, op: str, x: Any, shape: Shape, dtype: DType) -> Any:
        if not dtype.is_floating_point and op in _INT_IDENTITY:
            return x.copy()
        if not dtype.is_floating_point and op not in ("neg", "abs", "sqr", "relu", "sign"):
            v = self._unary[op](x.astype(self.xp.float64))
            return self._arr(v.astype(self._st(dtype)))
        return self._arr(self._down(self._arr(self._unary[op](self._up(x, dtype))), dtype))

    @_oom
    def affine(self, x: Any, shape: Shape, mul: float | int, add: float | int, dtype: DType) -> Any:
        xp = self.xp
        if dtype in (float16, bfloat16):
            return self._down(self._up(x, dtype) * np.float32(mul) + np.float32(add), dtype)
        if not dtype.is_floating_point:
            return self._arr((x.astype(xp.int64) * int(mul) + int(add)).astype(self._st(dtype)))
        t = dtype.numpy.type
        if add == 0:
            return self._arr(x * t(mul))
        if mul == 1:
            return self._arr(x + t(add))
        return self._arr(x * t(mul) + t(add))

    @_oom
    def powf(self, x: Any, shape: Shape, exponent: float, dtype: DType) -> Any:
        if dtype in (float16, bfloat16):
            return self._down(self.xp.power(self._up(x, dtype), np.float32(exponent)), dtype)
        return self._arr(self.xp.power(x, dtype.numpy.type(exponent)))

    @_oom
    def elu(self, x: Any, shape: Shape, alpha: float, dtype: DType) -> Any:
        xf = self._up(x, dtype)
        r = self.xp.where(xf > 0, xf, self.xp.expm1(xf) * xf.dtype.type(alpha))
        return self._down(self._arr(r), dtype)

    @_oom
    def clamp(self, x: Any, shape: Shape, low: float | int | None, high: float | int | None, dtype: DType) -> Any:
        xp = self.xp
        if dtype is bfloat16:
            r = self._up(x, dtype)
            if low is not None:
                r = xp.maximum(r, np.float32(low))
            if high is not None:
                r = xp.minimum(r, np.float32(high))
            return self._down(r, dtype)
        t = dtype.numpy.type
        r = x
        if low is not None:
            r = xp.maximum(r, t(low))
        if high is not None:
            r = xp.minimum(r, t(high))
        return self._arr(r) if r is not x else x.copy()

    @_oom
    def binary(self, op: str, a: Any, b: Any, shape: Shape, dtype: DType) -> Any:
        xp = self.xp
        if dtype is bfloat16:
            r = self.rt.bf16_binary(op, a, b)
            if r is not None:
                return r
        if dtype is float16 and op in _HALF_NATIVE:  # float16 arithmetic rounds each result once already
            return self._arr(self._binary[op](a, b))
        if dtype in (float16, bfloat16):
            return self._down(self._arr(self._binary[op](self._up(a, dtype), self._up(b, dtype))), dtype)
        if op == "pow" and not dtype.is_floating_point and dtype.is_signed and bool((b < 0).any()):
            raise DTypeError("pow: integers to negative integer powers are not allowed")
        if op in ("floor_divide", "remainder") and not dtype.is_floating_point and not bool(xp.all(b)):
            raise ZeroDivisionError(f"{op}: integer division by zero")
        r = self._arr(self._binary[op](a, b))
        return r if r.dtype == self._st(dtype) else r.astype(self._st(dtype))

    @_oom
    def cmp(self, op: str, a: Any, b: Any, shape: Shape, dtype: DType) -> Any:
        if dtype is bfloat16:
            a, b = self._up(a, dtype), self._up(b, dtype)
        return self._arr(self._cmp[op](a, b)).view(self.xp.uint8)

    @_oom
    def where(self, cond: Any, a: Any, b: Any, shape: Shape, dtype: DType) -> Any:
        return self._arr(self.xp.where(cond != 0, a, b))

    # --- reductions -------------------------------------------------------------------------------
    @_oom
    def reduce(self, op: str, x: Any, shape: Shape, dims: Sequence[int], keepdim: bool, dtype: DType) -> Any:
        half = dtype in (float16, bfloat16)
        xin = self._up(x, dtype) if half and (op in ("sum", "prod") or dtype is bfloat16) else x
        kw: dict[str, Any] = {"axis": tuple(dims), "keepdims": keepdim}
        if op in ("sum", "prod") and not dtype.is_floating_point:
            kw["dtype"] = self._st(dtype)  # integer sums stay in their dtype, like PyTorch's
        r = self._arr(self._reduce[op](xin, **kw))
        if half:
            return self._down(r, dtype)
        return r if r.dtype == self._st(dtype) else r.astype(self._st(dtype))

    @_oom
    def arg_reduce(self, op: str, x: Any, shape: Shape, dim: int, keepdim: bool, dtype: DType) -> Any:
        xp = self.xp
        xin = self._up(x, dtype) if dtype is bfloat16 else x
        fn = xp.argmax if op == "argmax" else xp.argmin
        r = self._arr(fn(xin, axis=dim))
        if keepdim:
            r = xp.expand_dims(r, dim)
        return r.astype(xp.int64, copy=False)

    # --- linear algebra ---------------------------------------------------------------------------
    @_oom
    def matmul(self, a: Any, b: Any, shape_a: Shape, shape_b: Shape, dtype: DType) -> Any:
        xp = self.xp
        if a.shape != shape_a:
            a = a.reshape(shape_a)
        if b.shape != shape_b:
            b = b.reshape(shape_b)
        if dtype.is_floating_point and self.rt.has_kernels:
            return self._gemm(a, b, dtype)
        if dtype in (float16, bfloat16):  # the emulated runtime: float32 products, rounded once
            return self._down(xp.matmul(self._up(a, dtype), self._up(b, dtype)), dtype)
        if not dtype.is_floating_point:
            r = xp.matmul(a.astype(xp.int64), b.astype(xp.int64))
            return self._arr(r).astype(self._st(dtype), copy=False)
        return self._arr(xp.matmul(a, b))

    def _gemm(self, a: Any, b: Any, dtype: DType) -> Any:
        from . import blas

        xp = self.xp
        batch = a.shape[:-2]
        m, k = a.shape[-2:]
        n = b.shape[-1]
        self.rt.use()
        out = xp.empty(batch + (m, n), dtype=self._st(dtype))
        if out.size == 0:
            return out
        if k == 0:
            out[...] = 0
            return out
        p, copy_a, copy_b = blas.plan(a.shape, self.strides(a, a.shape, dtype), b.shape,
                                      self.strides(b, b.shape, dtype))
        if p is None:
            a = xp.ascontiguousarray(a) if copy_a else a
            b = xp.ascontiguousarray(b) if copy_b else b
            p, _, _ = blas.plan(a.shape, self.strides(a, a.shape, dtype), b.shape, self.strides(b, b.shape, dtype))
            assert p is not None
        self.rt.gemm(a, b, out, p, dtype.short)
        return out

    # --- indexing ---------------------------------------------------------------------------------
    def _check_range(self, op: str, index: Any, size: int) -> None:
        if index.size:
            bad = (index < 0) | (index >= size)
            if bool(bad.any()):
                v = int(index[bad].ravel()[0])
                raise DimError(f"{op}: index {v} is out of range for a dim of size {size}")

    @_oom
    def index_select(self, x: Any, shape: Shape, index: Any, n_index: int, dim: int, dtype: DType) -> Any:
        self._check_range("index_select", index, shape[dim])
        return self._arr(self.xp.take(x, index, axis=dim))

    def _flat_positions(self, shape: Shape, index: Any, index_shape: Shape, dim: int) -> Any:
        """Positions in a C-contiguous array of `shape` addressed by `index` along `dim` (int64)."""
        xp = self.xp
        strides = contiguous_strides(shape)
        pos = index.astype(xp.int64) * strides[dim]
        for d, n in enumerate(index_shape):
            if d != dim and n > 1:
                pos = pos + (xp.arange(n, dtype=xp.int64) * strides[d]).reshape((n,) + (1,) * (len(shape) - 1 - d))
        return xp.ascontiguousarray(xp.broadcast_to(pos, index_shape)).reshape(-1)

    @_oom
    def gather(self, x: Any, shape: Shape, dim: int, index: Any, index_shape: Shape, dtype: DType) -> Any:
        self._check_range("gather", index, shape[dim])
        if not shape:
            return x.copy()
        xc = self.xp.ascontiguousarray(x)
        pos = self._flat_positions(shape, index, index_shape, dim)
        return self.xp.take(xc.reshape(-1), pos).reshape(index_shape)

    def _accumulate(self, flat: Any, pos: Any, vals: Any, dtype: DType) -> Any:
        """flat[pos] += vals (repeats accumulate) in a dtype the atomics support; returns the new flat."""
        xp = self.xp
        if dtype in (float32, float64) or dtype.name == "uint32":
            self.rt.add_at(flat, pos, vals)
            return flat
        ct = xp.float32 if dtype in (float16, bfloat16) else xp.float64
        acc = self._up(flat, dtype).astype(ct)
        self.rt.add_at(acc, pos, self._up(vals, dtype).astype(ct))
        if dtype.is_floating_point:
            return self._down(acc, dtype)
        return acc.astype(xp.int64).astype(self._st(dtype))

    @_oom
    def scatter(self, x: Any, shape: Shape, dim: int, index: Any, index_shape: Shape, src: Any,
                reduce: str | None, dtype: DType) -> Any:
        xp = self.xp
        op = "scatter_add" if reduce == "add" else "scatter"
        self._check_range(op, index, shape[dim])
        out = xp.array(x, order="C", copy=True)
        if not shape:
            if index_shape == () and reduce is None:
                out[...] = src
            elif index_shape == ():
                out = self._down(self._up(out, dtype) + self._up(src, dtype), dtype) if dtype.is_floating_point \
                    else (out + src).astype(out.dtype)
            return self._arr(out)
        pos = self._flat_positions(shape, index, index_shape, dim)
        vals = xp.ascontiguousarray(xp.broadcast_to(src, index_shape)).reshape(-1)
        if reduce is None:
            out.reshape(-1)[pos] = vals
            return out
        return self._accumulate(out.reshape(-1), pos, vals, dtype).reshape(shape)

    @_oom
    def index_add(self, x: Any, shape: Shape, dim: int, index: Any, n_index: int, src: Any, dtype: DType) -> Any:
        xp = self.xp
        self._check_range("index_add", index, shape[dim])
        out = xp.array(x, order="C", copy=True)
        if not shape:
            s = xp.broadcast_to(src, (n_index,)).reshape(-1)
            return self._accumulate(out.reshape(1), xp.zeros(n_index, dtype=xp.int64), s, dtype).reshape(())
        a, s = math.prod(shape[:dim]), shape[dim]
        b = math.prod(shape[dim + 1:])
        pos = index.astype(xp.int64).reshape(1, n_index, 1) * b
        pos = pos + (xp.arange(a, dtype=xp.int64) * (s * b)).reshape(a, 1, 1) + xp.arange(b, dtype=xp.int64)
        vals = xp.ascontiguousarray(xp.broadcast_to(src, shape[:dim] + (n_index,) + shape[dim + 1:])).reshape(-1)
        return self._accumulate(out.reshape(-1), pos.reshape(-1), vals, dtype).reshape(shape)

    @_oom
    def cat(self, xs: Sequence[Any], shapes: Sequence[Shape], dim: int, dtype: DType) -> Any:
        return self._arr(self.xp.concatenate(list(xs), axis=dim))

    @_oom
    def sort(self, x: Any, shape: Shape, dim: int, descending: bool, dtype: DType) -> tuple[Any, Any]:
        xp = self.xp
        xin = self._up(x, dtype) if dtype is bfloat16 else x
        if not shape:
            return x.copy(), xp.zeros((), dtype=xp.int64)
        if descending:  # stable: equal elements keep their original order
            n = shape[dim]
            idx = (n - 1) - xp.flip(xp.argsort(xp.flip(xin, dim), axis=dim, kind=self._kind), dim)
        else:
            idx = xp.argsort(xin, axis=dim, kind=self._kind)
        idx = xp.ascontiguousarray(idx).astype(xp.int64, copy=False)
        return self._arr(xp.take_along_axis(x, idx, axis=dim)), idx

    # --- misc -------------------------------------------------------------------------------------
    def synchronize(self) -> None:
        """Wait for the device's queued work (benchmarks)."""
        self.rt.synchronize()


# the fused and quantized kernels allocate too: their out-of-memory errors get the same translation
for _name in (*KERNEL_FUSED, "conv2d", "conv_transpose2d", "avg_pool2d", "upsample_nearest2d", "cumsum",
              "qdequantize", "qmatmul"):
    setattr(CudaBackend, _name, _oom(getattr(CudaBackend, _name)))

__all__ = ["CudaBackend"]

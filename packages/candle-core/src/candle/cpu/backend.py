"""The numpy CPU backend: native arrays are numpy arrays (strided views where possible).

float16 and bfloat16 are stored as such and computed in float32 (what PyTorch's CPU kernels do);
matmul uses numpy's BLAS (OpenBLAS in the numpy wheels).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..backend import Backend
from ..device import Device
from ..dtype import DType, bfloat16, float16, float32, float64, uint8
from ..errors import DimError, DTypeError, UnsupportedError
from .conv import ConvKernels
from .fused_attention import AttentionKernels
from .fused_norm import NormKernels
from .malloc import tune_malloc
from .quantized import QuantKernels
from .special import erf as _erf

# numpy reports float overflow / invalid values as warnings; PyTorch is silent, so are we.
warnings.filterwarnings("ignore", message=r"(overflow|invalid value|divide by zero|underflow) encountered",
                        category=RuntimeWarning, module=r"candle\.cpu\.")

Shape = tuple[int, ...]
_HALF = (float16, bfloat16)
_F32 = np.dtype(np.float32)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)


def _a(r: Any) -> np.ndarray:
    """numpy returns scalars from 0-d operations; candle always keeps arrays."""
    return r if type(r) is np.ndarray else np.asarray(r)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.negative(x, out=np.empty(x.shape, x.dtype))
    np.exp(e, out=e)
    e += 1.0
    return np.divide(1.0, e, out=e)


def _silu(x: np.ndarray) -> np.ndarray:
    e = np.negative(x, out=np.empty(x.shape, x.dtype))
    np.exp(e, out=e)
    e += 1.0
    return np.divide(x, e, out=e)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)))


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    return (0.5 * x * (1.0 + _erf(x * _INV_SQRT_2))).astype(x.dtype, copy=False)


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "neg": np.negative, "abs": np.abs, "sqr": np.square, "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x), "recip": lambda x: 1.0 / x, "exp": np.exp, "expm1": np.expm1,
    "log": np.log, "log1p": np.log1p, "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh,
    "erf": lambda x: _erf(x).astype(x.dtype, copy=False), "gelu": _gelu_tanh, "gelu_erf": _gelu_erf,
    "relu": lambda x: np.maximum(x, 0), "silu": _silu, "sigmoid": _sigmoid,
    "floor": np.floor, "ceil": np.ceil, "round": np.round, "trunc": np.trunc, "sign": np.sign,
}
_INT_IDENTITY = {"floor", "ceil", "round", "trunc"}

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide, "pow": np.power,
    "maximum": np.maximum, "minimum": np.minimum, "floor_divide": np.floor_divide, "remainder": np.remainder,
}
_CMP = {"eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
        "ge": np.greater_equal}
_REDUCE = {"sum": np.add.reduce, "max": np.maximum.reduce, "min": np.minimum.reduce, "prod": np.multiply.reduce}


def _reduce_runs(op: str, x: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """`op` over several (not all) dims of the C-contiguous `x`, as one-axis reductions of contiguous arrays.

    numpy reduces several axes at once with its inner loop along the last axis, which for a reduction
    like (0, 2, 3) of [N, C, H, W] means one short loop per (n, c): 10x slower than reducing the leading
    axis first (whole rows added at a time) and then the contiguous inner run. Adjacent dims of the same
    kind merge into runs; a long trailing reduced run goes first (a contiguous pairwise sum), otherwise the
    first reduced run. Float sums over a leading run add halves pairwise, so the error grows like log N
    rather than N."""
    fn = _REDUCE[op]
    sizes: list[int] = []
    reduced: list[bool] = []
    for d, n in enumerate(x.shape):
        red = d in dims
        if n == 1:
            continue
        if reduced and reduced[-1] == red:
            sizes[-1] *= n
        else:
            sizes.append(n)
            reduced.append(red)
    y = x.reshape(sizes)
    pairwise = op == "sum" and y.dtype.kind in "fc"
    while True in reduced:
        if reduced[-1] and (sizes[-1] >= 128 or reduced.count(True) == 1):
            axis = len(sizes) - 1
        else:
            axis = reduced.index(True)
        if axis == 0 and pairwise:
            y = _sum_leading(y)
        else:
            y = fn(y, axis=axis)
        del sizes[axis], reduced[axis]
    return y


def _sum_leading(y: np.ndarray) -> np.ndarray:
    """y.sum(0) of a contiguous array, adding halves pairwise (in place after the first) while more than
    8 rows are left."""
    a = y.shape[0]
    if a > 8:
        h = a // 2
        z = np.add(y[:h], y[h:2 * h])
        if a % 2:
            z[-1] += y[-1]
        y, a = z, h
        while a > 8:
            h = a // 2
            y[:h] += y[h:2 * h]
            if a % 2:
                y[h - 1] += y[a - 1]
            a = h
    return np.add.reduce(y[:a], axis=0)


def _flat_positions(shape: Shape, index: np.ndarray, index_shape: Shape, dim: int) -> np.ndarray:
    """The positions in a C-contiguous array of `shape` that scatter/gather address: `index` along `dim`,
    each other dim its own coordinate (index_shape <= shape); an intp array of index.size."""
    if all(i == s for d, (i, s) in enumerate(zip(index_shape, shape)) if d != dim):
        a, s, b = math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:])
        pos = np.multiply(np.asarray(index).reshape(a, index_shape[dim], b), b, dtype=np.intp)
        if a > 1:
            pos += (np.arange(a, dtype=np.intp) * (s * b)).reshape(a, 1, 1)
        if b > 1:
            pos += np.arange(b, dtype=np.intp)
        return pos.reshape(-1)
    strides = [math.prod(shape[d + 1:]) for d in range(len(shape))]
    pos = np.multiply(index, strides[dim], dtype=np.intp)
    for d, n in enumerate(index_shape):
        if d != dim and n > 1:
            pos += (np.arange(n, dtype=np.intp) * strides[d]).reshape((n,) + (1,) * (len(shape) - 1 - d))
    return pos.reshape(-1)


class NumpyBackend(ConvKernels, NormKernels, AttentionKernels, QuantKernels, Backend):
    """candle's reference backend, on numpy."""

    name = "cpu"

    def __init__(self) -> None:
        self.device = Device("cpu")
        tune_malloc()

    # --- transfer --------------------------------------------------------------------------------
    def from_numpy(self, array: np.ndarray, dtype: DType) -> np.ndarray:
        return array

    def to_numpy(self, x: np.ndarray, shape: Shape, dtype: DType) -> np.ndarray:
        return _a(x)

    def strides(self, x: np.ndarray, shape: Shape, dtype: DType) -> Shape:
        size = x.itemsize
        return tuple(s // size for s in x.strides)

    def dlpack_device(self) -> tuple[int, int]:
        return (1, 0)

    def to_dlpack(self, x: np.ndarray, shape: Shape, dtype: DType, stream: Any = None) -> Any:
        if dtype is bfloat16:
            raise UnsupportedError("DLPack export of bfloat16 is not supported by numpy on the CPU; "
                                   "cast to float32 first")
        return _a(x).__dlpack__()

    def from_dlpack(self, obj: Any) -> tuple[np.ndarray, Shape, DType]:
        from ..dtype import from_numpy_dtype

        try:
            arr = np.from_dlpack(obj)
        except (BufferError, TypeError, RuntimeError) as e:
            raise UnsupportedError(f"from_dlpack: numpy cannot import this array ({e})") from e
        return arr, tuple(arr.shape), from_numpy_dtype(arr.dtype)

    # --- creation --------------------------------------------------------------------------------
    def full(self, shape: Shape, value: float | int, dtype: DType) -> np.ndarray:
        if not shape:
            return np.array(value, dtype=dtype.numpy)
        return np.full(shape, value, dtype=dtype.numpy)

    def arange(self, start: float | int, step: float | int, n: int, dtype: DType) -> np.ndarray:
        if dtype.is_floating_point:
            return (np.arange(n, dtype=np.float64) * step + start).astype(dtype.numpy)
        return np.arange(start, start + n * step, step, dtype=np.int64)[:n].astype(dtype.numpy, copy=False)

    def rand_uniform(self, shape: Shape, low: float, high: float, dtype: DType, seed: int) -> np.ndarray:
        rng = np.random.Generator(np.random.Philox(seed))
        if dtype in (float32, float64):
            u = rng.random(shape, dtype=dtype.numpy)
            return u if (low, high) == (0.0, 1.0) else (u * (high - low) + low).astype(dtype.numpy)
        u = (rng.random(shape, dtype=np.float32) * (high - low) + low).astype(dtype.numpy)
        return np.where(u >= dtype.numpy.type(high), dtype.numpy.type(low), u)  # rounding must not reach high

    def rand_normal(self, shape: Shape, mean: float, std: float, dtype: DType, seed: int) -> np.ndarray:
        rng = np.random.Generator(np.random.Philox(seed))
        g = rng.standard_normal(shape, dtype=np.float64 if dtype is float64 else np.float32)
        return (g * std + mean).astype(dtype.numpy, copy=False)

    # --- views and copies ------------------------------------------------------------------------
    def reshape(self, x: np.ndarray, shape: Shape, new_shape: Shape) -> np.ndarray:
        return x.reshape(new_shape)

    def permute(self, x: np.ndarray, shape: Shape, dims: Sequence[int]) -> np.ndarray:
        return x.transpose(dims)

    def slice(self, x: np.ndarray, shape: Shape, specs: Sequence[tuple[int, int, int]]) -> np.ndarray:
        return x[tuple([slice(a, b, c) for a, b, c in specs])]

    def expand(self, x: np.ndarray, shape: Shape, new_shape: Shape) -> np.ndarray:
        return np.broadcast_to(x, new_shape)

    def contiguous(self, x: np.ndarray, shape: Shape) -> np.ndarray:
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)

    def is_contiguous(self, x: np.ndarray, shape: Shape) -> bool:
        return bool(_a(x).flags.c_contiguous)

    def copy_(self, dst: np.ndarray, src: np.ndarray, shape: Shape) -> None:
        if not dst.flags.writeable:
            raise UnsupportedError("copy_: the destination is a broadcast (expanded) view and cannot be written")
        np.copyto(dst, src)

    def cast(self, x: np.ndarray, shape: Shape, src: DType, dst: DType) -> np.ndarray:
        if src.is_floating_point and not dst.is_floating_point:
            x = np.trunc(x.astype(np.float64) if src in _HALF else x)
            if dst is uint8 or dst.name == "uint32":  # PyTorch wraps negatives modulo 2**bits
                return _a(x.astype(np.int64).astype(dst.numpy))
        return _a(x.astype(dst.numpy))

    def flip(self, x: np.ndarray, shape: Shape, dims: Sequence[int]) -> np.ndarray:
        return np.flip(x, tuple(dims))

    # --- elementwise -----------------------------------------------------------------------------
    def unary(self, op: str, x: np.ndarray, shape: Shape, dtype: DType) -> np.ndarray:
        if not dtype.is_floating_point and op in _INT_IDENTITY:
            return x.copy()
        if dtype in _HALF:
            return _a(_UNARY[op](x.astype(_F32)).astype(dtype.numpy))
        return _a(_UNARY[op](x))

    def affine(self, x: np.ndarray, shape: Shape, mul: float | int, add: float | int, dtype: DType) -> np.ndarray:
        if dtype in _HALF:
            return _a((x.astype(_F32) * mul + add).astype(dtype.numpy))
        if not dtype.is_floating_point:
            return _a((x.astype(np.int64) * int(mul) + int(add)).astype(dtype.numpy, copy=False))
        t = dtype.numpy.type
        if add == 0:
            return _a(x * t(mul))
        if mul == 1:
            return _a(x + t(add))
        r = np.multiply(x, t(mul), out=np.empty(x.shape, x.dtype))
        r += t(add)
        return r

    def powf(self, x: np.ndarray, shape: Shape, exponent: float, dtype: DType) -> np.ndarray:
        if dtype in _HALF:
            return _a(np.power(x.astype(_F32), np.float32(exponent)).astype(dtype.numpy))
        return _a(np.power(x, dtype.numpy.type(exponent)))

    def elu(self, x: np.ndarray, shape: Shape, alpha: float, dtype: DType) -> np.ndarray:
        xf = x.astype(_F32) if dtype in _HALF else x
        r = np.where(xf > 0, xf, np.expm1(xf) * xf.dtype.type(alpha))
        return _a(r.astype(dtype.numpy, copy=False))

    def clamp(self, x: np.ndarray, shape: Shape, low: float | int | None, high: float | int | None,
              dtype: DType) -> np.ndarray:
        t = dtype.numpy.type
        r = x
        if low is not None:
            r = np.maximum(r, t(low))
        if high is not None:
            r = np.minimum(r, t(high))
        return _a(r) if r is not x else x.copy()

    def binary(self, op: str, a: np.ndarray, b: np.ndarray, shape: Shape, dtype: DType) -> np.ndarray:
        if dtype in _HALF:
            return _a(_BINARY[op](a.astype(_F32), b.astype(_F32)).astype(dtype.numpy))
        if op == "pow" and not dtype.is_floating_point and (np.asarray(b) < 0).any():
            raise DTypeError("pow: integers to negative integer powers are not allowed")
        if op in ("floor_divide", "remainder") and not dtype.is_floating_point and not np.all(b):
            raise ZeroDivisionError(f"{op}: integer division by zero")
        return _a(_BINARY[op](a, b))

    def cmp(self, op: str, a: np.ndarray, b: np.ndarray, shape: Shape, dtype: DType) -> np.ndarray:
        return _a(_CMP[op](a, b)).view(np.uint8)

    def where(self, cond: np.ndarray, a: np.ndarray, b: np.ndarray, shape: Shape, dtype: DType) -> np.ndarray:
        return _a(np.where(cond, a, b))

    # --- reductions ------------------------------------------------------------------------------
    def reduce(self, op: str, x: np.ndarray, shape: Shape, dims: Sequence[int], keepdim: bool,
               dtype: DType) -> np.ndarray:
        xin = x.astype(_F32) if dtype in _HALF and op in ("sum", "prod") else x
        if len(dims) > 1 and len(dims) < xin.ndim and xin.size >= 2048 and xin.flags.c_contiguous:
            r = _reduce_runs(op, xin, dims).reshape(tuple(1 if d in dims else n for d, n in enumerate(xin.shape)
                                                          if keepdim or d not in dims))
        else:
            r = _REDUCE[op](xin, axis=tuple(dims), keepdims=keepdim)
        return _a(r).astype(dtype.numpy, copy=False)

    def arg_reduce(self, op: str, x: np.ndarray, shape: Shape, dim: int, keepdim: bool, dtype: DType) -> np.ndarray:
        fn = np.argmax if op == "argmax" else np.argmin
        xin = x.astype(_F32) if dtype is bfloat16 else x
        return _a(fn(xin, axis=dim, keepdims=keepdim)).astype(np.int64, copy=False)

    # --- linear algebra --------------------------------------------------------------------------
    def matmul(self, a: np.ndarray, b: np.ndarray, shape_a: Shape, shape_b: Shape, dtype: DType) -> np.ndarray:
        if dtype in _HALF:
            return _a(np.matmul(a.astype(_F32), b.astype(_F32)).astype(dtype.numpy))
        return _a(np.matmul(a, b))

    # --- indexing --------------------------------------------------------------------------------
    @staticmethod
    def _check_range(op: str, index: np.ndarray, size: int) -> None:
        if index.size and (index.min() < 0 or index.max() >= size):
            bad = index[(index < 0) | (index >= size)].flat[0]
            raise DimError(f"{op}: index {bad} is out of range for a dim of size {size}")

    def index_select(self, x: np.ndarray, shape: Shape, index: np.ndarray, n_index: int, dim: int,
                     dtype: DType) -> np.ndarray:
        self._check_range("index_select", index, shape[dim])
        return _a(np.take(x, index, axis=dim))

    @staticmethod
    def _head(x: np.ndarray, index_shape: Shape, dim: int) -> np.ndarray:
        """x restricted to index_shape in every dim but `dim` (a view)."""
        return x[tuple(slice(None) if i == dim else slice(0, s) for i, s in enumerate(index_shape))]

    def gather(self, x: np.ndarray, shape: Shape, dim: int, index: np.ndarray, index_shape: Shape,
               dtype: DType) -> np.ndarray:
        self._check_range("gather", index, shape[dim])
        return _a(np.take_along_axis(self._head(x, index_shape, dim), index, axis=dim))

    def scatter(self, x: np.ndarray, shape: Shape, dim: int, index: np.ndarray, index_shape: Shape,
                src: np.ndarray, reduce: str | None, dtype: DType) -> np.ndarray:
        op = "scatter_add" if reduce == "add" else "scatter"
        self._check_range(op, index, shape[dim])
        out = np.array(x, order="C", copy=True)
        if not shape:
            if index_shape == () and reduce is None:
                out[...] = src
            elif index_shape == ():
                out += src
            return out
        # one flat index into the output: ufunc.at and fancy assignment are several times faster on a 1-d
        # array than with a tuple of broadcast index arrays, and run in the same (C) order
        pos = _flat_positions(shape, index, index_shape, dim)
        vals = np.broadcast_to(src, index_shape).reshape(-1)
        if reduce is None:
            out.reshape(-1)[pos] = vals
        else:
            np.add.at(out.reshape(-1), pos, vals)
        return out

    def index_add(self, x: np.ndarray, shape: Shape, dim: int, index: np.ndarray, n_index: int, src: np.ndarray,
                  dtype: DType) -> np.ndarray:
        self._check_range("index_add", index, shape[dim])
        out = np.array(x, order="C", copy=True)
        if not shape:
            np.add.at(out, index, src)
            return out
        a, s = math.prod(shape[:dim]), shape[dim]
        b = math.prod(shape[dim + 1:])
        pos = np.multiply(np.asarray(index).reshape(1, n_index, 1), b, dtype=np.intp)
        pos = pos + (np.arange(a, dtype=np.intp) * (s * b)).reshape(a, 1, 1) + np.arange(b, dtype=np.intp)
        vals = np.broadcast_to(src, shape[:dim] + (n_index,) + shape[dim + 1:]).reshape(-1)
        np.add.at(out.reshape(-1), pos.reshape(-1), vals)
        return out

    def cat(self, xs: Sequence[np.ndarray], shapes: Sequence[Shape], dim: int, dtype: DType) -> np.ndarray:
        return np.concatenate(xs, axis=dim)

    def sort(self, x: np.ndarray, shape: Shape, dim: int, descending: bool, dtype: DType) -> tuple[Any, Any]:
        xin = x.astype(_F32) if dtype is bfloat16 else x
        if descending:  # stable: equal elements keep their original order
            n = shape[dim]
            idx = (n - 1) - np.flip(np.argsort(np.flip(xin, dim), axis=dim, kind="stable"), dim)
        else:
            idx = np.argsort(xin, axis=dim, kind="stable")
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        return _a(np.take_along_axis(x, idx, axis=dim)), idx

    # --- fused kernels ---------------------------------------------------------------------------
    def softmax_last_dim(self, x: np.ndarray, shape: Shape, dtype: DType) -> np.ndarray:
        half = dtype in _HALF
        xf = x.astype(_F32) if half else x
        e = xf - np.maximum.reduce(xf, axis=-1, keepdims=True)  # ufunc reduces: no Python wrapper per call
        np.exp(e, out=e)
        e /= np.add.reduce(e, axis=-1, keepdims=True)
        return e.astype(dtype.numpy) if half else e  # the ndim >= 1 result is always an array

    def log_softmax_last_dim(self, x: np.ndarray, shape: Shape, dtype: DType) -> np.ndarray:
        xf = x.astype(_F32) if dtype in _HALF else x
        s = xf - xf.max(axis=-1, keepdims=True)
        s -= np.log(np.exp(s).sum(axis=-1, keepdims=True))
        return _a(s.astype(dtype.numpy, copy=False))

    def cumsum(self, x: np.ndarray, shape: Shape, dim: int, dtype: DType) -> np.ndarray:
        if dtype in _HALF:
            return _a(np.cumsum(x.astype(_F32), axis=dim).astype(dtype.numpy))
        return _a(np.cumsum(x, axis=dim, dtype=dtype.numpy))



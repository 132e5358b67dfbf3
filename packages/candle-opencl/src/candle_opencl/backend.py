"""`OpenCLBackend`: candle's op-kernel interface on an OpenCL device, with candle's own kernels.

Native arrays are `CLArray`s (a buffer plus shape, element strides and offset), so views never
copy. Every primitive runs an OpenCL C kernel from `kernels/*.cl`; data crosses between host and
device only in `from_numpy` and `to_numpy`. float16 is stored as half (loaded and stored with
`vload_half`/`vstore_half`, computed in float32), bfloat16 as ushort bits computed in float32;
float64 needs `cl_khr_fp64`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from candle.backend import Backend
from candle.device import Device
from candle.dtype import DType, bfloat16, float16, float32, int64, uint8
from candle.errors import DTypeError, UnsupportedError
from candle.strides import view_strides

from .fused import FusedKernels
from .quant import QuantKernels
from .runtime import (
    CH,
    F32,
    I32,
    I64,
    LS,
    MAXD,
    VCH,
    CLArray,
    Runtime,
    broadcast_strides,
    collapse,
    compute_type,
    dense_strides,
    geometry,
    is_dense,
    round_up,
    runtime,
)

Shape = tuple[int, ...]
_HALF = (float16, bfloat16)
_INT_IDENTITY = frozenset({"floor", "ceil", "round", "trunc"})
_VDT = (float32, float16, bfloat16)  # dtypes of the vector program
# ops with 8-wide vector kernels (`<op>_v_<dtype>`, float dtypes, dense operands)
_VEC = frozenset({"neg", "sqr", "abs", "sqrt", "rsqrt", "recip", "exp", "expm1", "log", "log1p", "sin", "cos",
                  "tanh", "erf", "gelu", "gelu_erf", "silu", "sigmoid", "floor", "ceil", "trunc", "relu", "affine",
                  "add", "sub", "mul", "div", "maximum", "minimum", "silu_mul"})


def _n(shape: Shape) -> int:
    return math.prod(shape)


def _pack(*fields: Any, size: int) -> np.ndarray:
    """A struct of longs: scalars and sequences (padded with zeros to MAXD) in order, `size` longs."""
    g = np.zeros(size, dtype=np.int64)
    i = 0
    for f in fields:
        if isinstance(f, (list, tuple)):
            g[i:i + len(f)] = f
            i += MAXD
        else:
            g[i] = f
            i += 1
    return g


class OpenCLBackend(QuantKernels, FusedKernels, Backend):
    """candle on one OpenCL device (`opencl:N`)."""

    name = "opencl"

    def __init__(self, index: int = 0) -> None:
        self.rt: Runtime = runtime(index)
        self.device = Device("opencl", index)
        self.index = index
        dev = self.rt.device
        import pyopencl as cl

        self._cpu = bool(dev.type & cl.device_type.CPU)
        self._mm_local: tuple[int, int, int] | None = (1, 1, 1) if self._cpu else None

    def __repr__(self) -> str:
        return f"OpenCLBackend(opencl:{self.index}: {self.rt.name})"

    # --- capabilities -------------------------------------------------------------------------
    def supports_dtype(self, dtype: DType) -> bool:
        return dtype.short != "f64" or self.rt.fp64

    def _check(self, dtype: DType) -> None:
        if not self.supports_dtype(dtype):
            raise DTypeError(f"dtype {dtype.name} is not supported on OpenCL device {self.rt.name} (no cl_khr_fp64)")

    # --- helpers --------------------------------------------------------------------------------
    def _k(self, file: str, name: str, dtype: DType, types: Sequence[Any], src: DType | None = None) -> Any:
        return self.rt.kernel(file, name, dtype, types, src)

    def _empty(self, shape: Shape, dtype: DType) -> CLArray:
        return self.rt.empty(shape, dtype)

    def _dense(self, x: CLArray) -> CLArray:
        """x itself if dense, else a dense copy."""
        return x if is_dense(x.shape, x.strides) else self._copy(x)

    def _copy(self, x: CLArray) -> CLArray:
        out = self._empty(x.shape, x.dtype)
        self._copy_into(out, x, x.shape)
        return out

    def _copy_into(self, dst: CLArray, src: CLArray, shape: Shape) -> None:
        n = _n(shape)
        if not n:
            return
        dt = dst.dtype
        if src.shape == shape and is_dense(shape, dst.strides) and is_dense(shape, src.strides):
            k = self._k("elementwise", "copy_c", dt, [I64, None, I64, None, I64])
            self.rt.launch(k, (round_up(-(-n // CH)),), (LS,), n, dst.buf, dst.offset, src.buf, src.offset)
            return
        g, gs = geometry(shape, [(dst.strides, dst.offset), (broadcast_strides(src, shape), src.offset)])
        k = self._k("elementwise", "copy_s", dt, [None, None, None])
        self.rt.launch(k, (round_up(gs),), (LS,), g, dst.buf, src.buf)

    def _map1(self, name: str, x: CLArray, shape: Shape, dtype: DType, extra: tuple[Any, ...] = (),
              types: tuple[Any, ...] = (), file: str = "elementwise", out_dtype: DType | None = None,
              src: DType | None = None) -> CLArray:
        """A one-input elementwise kernel (`<name>_c` or `<name>_s`) into a new dense array."""
        out = self._empty(shape, out_dtype or dtype)
        n = _n(shape)
        if not n:
            return out
        if x.shape == shape and is_dense(shape, x.strides):
            if name in _VEC and dtype in _VDT and src is None:
                k = self._k("vector", f"{name}_v", dtype, [I64, None, I64, None, I64, *types])
                per = VCH
            else:
                k = self._k(file, f"{name}_c", dtype, [I64, None, I64, None, I64, *types], src)
                per = CH
            self.rt.launch(k, (round_up(-(-n // per)),), (LS,), n, out.buf, 0, x.buf, x.offset, *extra)
        else:
            g, gs = geometry(shape, [(out.strides, 0), (broadcast_strides(x, shape), x.offset)])
            k = self._k(file, f"{name}_s", dtype, [None, None, None, *types], src)
            self.rt.launch(k, (round_up(gs),), (LS,), g, out.buf, x.buf, *extra)
        return out

    def _map2(self, name: str, a: CLArray, b: CLArray, shape: Shape, dtype: DType,
              out_dtype: DType | None = None) -> CLArray:
        """A two-input elementwise kernel (broadcasting) into a new dense array."""
        out = self._empty(shape, out_dtype or dtype)
        n = _n(shape)
        if not n:
            return out
        if a.shape == shape and b.shape == shape and is_dense(shape, a.strides) and is_dense(shape, b.strides):
            vec = name in _VEC and dtype in _VDT
            k = self._k("vector" if vec else "elementwise", f"{name}_{'v' if vec else 'c'}", dtype,
                        [I64, None, I64, None, I64, None, I64])
            self.rt.launch(k, (round_up(-(-n // (VCH if vec else CH))),), (LS,), n, out.buf, 0, a.buf, a.offset,
                           b.buf, b.offset)
        else:
            g, gs = geometry(shape, [(out.strides, 0), (broadcast_strides(a, shape), a.offset),
                                     (broadcast_strides(b, shape), b.offset)])
            k = self._k("elementwise", f"{name}_s", dtype, [None, None, None, None])
            self.rt.launch(k, (round_up(gs),), (LS,), g, out.buf, a.buf, b.buf)
        return out

    def _scalar(self, dtype: DType, v: float | int) -> Any:
        ct = compute_type(dtype)
        if dtype.is_floating_point:
            return ct(v)
        return np.array(int(v), dtype=np.int64).astype(ct)

    # --- transfer -----------------------------------------------------------------------------
    def from_numpy(self, array: np.ndarray, dtype: DType) -> CLArray:
        self._check(dtype)
        if array.dtype != dtype.numpy:
            array = array.astype(dtype.numpy)
        return self.rt.upload(array, dtype)

    def to_numpy(self, x: CLArray, shape: Shape, dtype: DType) -> np.ndarray:
        xd = self._dense(x)
        return self.rt.download(xd, dtype.numpy).reshape(shape)

    def strides(self, x: CLArray, shape: Shape, dtype: DType) -> Shape:
        return x.strides

    # --- creation -----------------------------------------------------------------------------
    def full(self, shape: Shape, value: float | int, dtype: DType) -> CLArray:
        self._check(dtype)
        out = self._empty(shape, dtype)
        n = _n(shape)
        if n:
            k = self._k("elementwise", "fill_c", dtype, [I64, None, I64, compute_type(dtype)])
            self.rt.launch(k, (round_up(-(-n // CH)),), (LS,), n, out.buf, 0, self._scalar(dtype, value))
        return out

    def arange(self, start: float | int, step: float | int, n: int, dtype: DType) -> CLArray:
        self._check(dtype)
        out = self._empty((n,), dtype)
        if n:
            if dtype.is_floating_point:
                at = np.float64 if (dtype.short == "f64" or self.rt.fp64) else np.float32
                args = (at(start), at(step))
            else:
                at = I64
                args = (I64(int(start)), I64(int(step)))
            k = self._k("elementwise", "arange_c", dtype, [I64, None, at, at])
            self.rt.launch(k, (round_up(-(-n // CH)),), (LS,), n, out.buf, *args)
        return out

    def _rand(self, name: str, shape: Shape, a: float, b: float, dtype: DType, seed: int) -> CLArray:
        self._check(dtype)
        out = self._empty(shape, dtype)
        n = _n(shape)
        if n:
            per = 2 if dtype.short == "f64" else 4
            ct = compute_type(dtype)
            k = self._k("random", name, dtype, [I64, None, np.uint32, np.uint32, ct, ct])
            seed &= (1 << 64) - 1
            self.rt.launch(k, (round_up(-(-n // per)),), (LS,), n, out.buf, np.uint32(seed & 0xFFFFFFFF),
                           np.uint32(seed >> 32), ct(a), ct(b))
        return out

    def rand_uniform(self, shape: Shape, low: float, high: float, dtype: DType, seed: int) -> CLArray:
        return self._rand("rand_uniform_c", shape, low, high, dtype, seed)

    def rand_normal(self, shape: Shape, mean: float, std: float, dtype: DType, seed: int) -> CLArray:
        return self._rand("rand_normal_c", shape, mean, std, dtype, seed)

    # --- views and copies ---------------------------------------------------------------------
    def reshape(self, x: CLArray, shape: Shape, new_shape: Shape) -> CLArray:
        if is_dense(x.shape, x.strides):
            return x.view(new_shape, dense_strides(new_shape))
        st = view_strides(x.shape, x.strides, new_shape)
        if st is None:
            y = self._copy(x)
            return y.view(new_shape, dense_strides(new_shape))
        return x.view(new_shape, st)

    def permute(self, x: CLArray, shape: Shape, dims: Sequence[int]) -> CLArray:
        return x.view(tuple(x.shape[d] for d in dims), tuple(x.strides[d] for d in dims))

    def slice(self, x: CLArray, shape: Shape, specs: Sequence[tuple[int, int, int]]) -> CLArray:
        off = x.offset
        new_shape, new_st = [], []
        for (a, b, c), st in zip(specs, x.strides):
            n = len(range(a, b, c))
            if n:
                off += a * st
            new_shape.append(n)
            new_st.append(st * c)
        return x.view(tuple(new_shape), tuple(new_st), off)

    def expand(self, x: CLArray, shape: Shape, new_shape: Shape) -> CLArray:
        st = tuple(0 if n == 1 and m != 1 else s for n, m, s in zip(x.shape, new_shape, x.strides))
        return x.view(tuple(new_shape), st)

    def contiguous(self, x: CLArray, shape: Shape) -> CLArray:
        return x if is_dense(x.shape, x.strides) else self._copy(x)

    def is_contiguous(self, x: CLArray, shape: Shape) -> bool:
        return is_dense(x.shape, x.strides)

    def copy_(self, dst: CLArray, src: CLArray, shape: Shape) -> None:
        if any(s == 0 and n > 1 for s, n in zip(dst.strides, dst.shape)):
            raise UnsupportedError("copy_: the destination is a broadcast (expanded) view and cannot be written")
        self._copy_into(dst, src, shape)

    def cast(self, x: CLArray, shape: Shape, src: DType, dst: DType) -> CLArray:
        self._check(dst)
        if src is dst:
            return self._copy(x)
        return self._map1("cast", x, shape, dst, file="cast", src=src)

    def flip(self, x: CLArray, shape: Shape, dims: Sequence[int]) -> CLArray:
        off = x.offset
        st = list(x.strides)
        for d in dims:
            if x.shape[d] > 1:
                off += (x.shape[d] - 1) * st[d]
                st[d] = -st[d]
        return x.view(x.shape, tuple(st), off)

    # --- elementwise --------------------------------------------------------------------------
    def unary(self, op: str, x: CLArray, shape: Shape, dtype: DType) -> CLArray:
        if not dtype.is_floating_point and op in _INT_IDENTITY:
            return self._copy(x)
        if not dtype.is_floating_point and op not in ("neg", "abs", "sqr", "relu", "sign"):
            raise UnsupportedError(f"opencl: unary {op} is not defined for {dtype.name} (cast to a float first)")
        return self._map1(op, x, shape, dtype)

    def affine(self, x: CLArray, shape: Shape, mul: float | int, add: float | int, dtype: DType) -> CLArray:
        if dtype.is_floating_point:
            ct = compute_type(dtype)
            return self._map1("affine", x, shape, dtype, (ct(mul), ct(add)), (ct, ct))
        return self._map1("affine", x, shape, dtype, (I64(int(mul)), I64(int(add))), (I64, I64))

    def powf(self, x: CLArray, shape: Shape, exponent: float, dtype: DType) -> CLArray:
        ct = compute_type(dtype)
        return self._map1("powf", x, shape, dtype, (ct(exponent),), (ct,))

    def elu(self, x: CLArray, shape: Shape, alpha: float, dtype: DType) -> CLArray:
        ct = compute_type(dtype)
        return self._map1("elu", x, shape, dtype, (ct(alpha),), (ct,))

    def clamp(self, x: CLArray, shape: Shape, low: float | int | None, high: float | int | None,
              dtype: DType) -> CLArray:
        ct = compute_type(dtype)
        flags = (1 if low is not None else 0) | (2 if high is not None else 0)
        lo = self._scalar(dtype, low if low is not None else 0)
        hi = self._scalar(dtype, high if high is not None else 0)
        return self._map1("clamp", x, shape, dtype, (lo, hi, I32(flags)), (ct, ct, I32))

    def binary(self, op: str, a: CLArray, b: CLArray, shape: Shape, dtype: DType) -> CLArray:
        return self._map2(op, a, b, shape, dtype)

    def cmp(self, op: str, a: CLArray, b: CLArray, shape: Shape, dtype: DType) -> CLArray:
        return self._map2(op, a, b, shape, dtype, out_dtype=uint8)

    def where(self, cond: CLArray, a: CLArray, b: CLArray, shape: Shape, dtype: DType) -> CLArray:
        out = self._empty(shape, dtype)
        if _n(shape):
            g, gs = geometry(shape, [(out.strides, 0), (broadcast_strides(cond, shape), cond.offset),
                                     (broadcast_strides(a, shape), a.offset), (broadcast_strides(b, shape), b.offset)])
            k = self._k("elementwise", "where_s", dtype, [None, None, None, None, None])
            self.rt.launch(k, (round_up(gs),), (LS,), g, out.buf, cond.buf, a.buf, b.buf)
        return out

    # --- reductions ---------------------------------------------------------------------------
    def _red_geometry(self, x: CLArray, kept: Sequence[int], red: Sequence[int]) -> tuple[np.ndarray, int, int, int]:
        """The `red_t` of reducing x over `red` keeping `kept` (in order): (struct, nout, R, collapsed nr)."""
        kshape = [x.shape[d] for d in kept]
        kst = [x.strides[d] for d in kept]
        nout = _n(tuple(kshape))
        if kshape and any(n != 1 for n in kshape):
            kd, (ks,) = collapse(tuple(kshape), [tuple(kst)])
        else:
            kd, ks = [], []
        rshape = tuple(x.shape[d] for d in red)
        R = _n(rshape)
        rd, (rs,) = collapse(rshape, [tuple(x.strides[d] for d in red)])
        if len(kd) > MAXD or len(rd) > MAXD:
            raise UnsupportedError(f"opencl: reduction of shape {list(x.shape)} has too many dims")
        g = _pack(len(kd), len(rd), x.offset, nout, R, kd, ks, rd, rs, size=5 + 4 * MAXD)
        return g, nout, R, len(rd)

    def reduce(self, op: str, x: CLArray, shape: Shape, dims: Sequence[int], keepdim: bool,
               dtype: DType) -> CLArray:
        kept = [d for d in range(len(shape)) if d not in dims]
        out_shape = tuple(1 if d in dims else n for d, n in enumerate(shape)) if keepdim else \
            tuple(shape[d] for d in kept)
        g, nout, R, nr = self._red_geometry(x, kept, dims)
        if R == 0:
            return self.full(out_shape, 0 if op == "sum" else 1, dtype)
        out = self._empty(out_shape, dtype)
        if nout:
            if nr == 1 and nout <= 1024 and R >= 256:
                k = self._k("reduce", f"{op}_wg", dtype, [None, None, None])
                self.rt.launch(k, (nout * 64,), (64,), g, out.buf, x.buf)
            else:
                k = self._k("reduce", f"{op}_wi", dtype, [None, None, None])
                self.rt.launch(k, (round_up(nout),), (LS,), g, out.buf, x.buf)
        return out

    def arg_reduce(self, op: str, x: CLArray, shape: Shape, dim: int, keepdim: bool, dtype: DType) -> CLArray:
        kept = [d for d in range(len(shape)) if d != dim]
        out_shape = tuple(1 if d == dim else n for d, n in enumerate(shape)) if keepdim else \
            tuple(shape[d] for d in kept)
        g, nout, R, _ = self._red_geometry(x, kept, [dim])
        out = self._empty(out_shape, int64)
        if nout:
            if nout <= 256 and R >= 1024:
                k = self._k("reduce", f"{op}_wg", dtype, [None, None, None])
                self.rt.launch(k, (nout * 64,), (64,), g, out.buf, x.buf)
            else:
                k = self._k("reduce", f"{op}_wi", dtype, [None, None, None])
                self.rt.launch(k, (round_up(nout),), (LS,), g, out.buf, x.buf)
        return out

    # --- linear algebra -----------------------------------------------------------------------
    def matmul(self, a: CLArray, b: CLArray, shape_a: Shape, shape_b: Shape, dtype: DType) -> CLArray:
        if a.shape != shape_a:
            a = self.reshape(a, a.shape, shape_a)
        if b.shape != shape_b:
            b = self.reshape(b, b.shape, shape_b)
        return self._mm(a, b, dtype, 1.0)

    def _mm(self, a: CLArray, b: CLArray, dtype: DType, alpha: float) -> CLArray:
        """alpha * a @ b for a [..., M, K], b [..., K, N] with one batch shape, any strides; dense out."""
        batch = a.shape[:-2]
        M, K = a.shape[-2:]
        N = b.shape[-1]
        if dtype in _HALF:  # computed in float32, rounded once
            a32 = self._map1("cast", a, a.shape, float32, file="cast", src=dtype)
            b32 = self._map1("cast", b, b.shape, float32, file="cast", src=dtype)
            r = self._mm(a32, b32, float32, alpha)
            return self._map1("cast", r, r.shape, dtype, file="cast", src=float32)
        shape = batch + (M, N)
        nb = _n(batch)
        if not (nb and M and N):
            return self._empty(shape, dtype)
        if not K:
            return self.full(shape, 0, dtype)
        sam, sak = a.strides[-2:]
        sbk, sbn = b.strides[-2:]
        if M == 1:  # strides of size-1 dims are never used: make the fast paths apply
            sam = 0
        if N == 1:
            sbn = 1
        if K == 1:
            sak = sbk = 1
        f32 = dtype is float32
        packed = f32 and M >= 24 and N >= 32 and K >= 16  # pack_a/pack_b read any strides
        if f32 and not packed and sbn != 1 and not (sak == 1 and sbk == 1):
            b = self._copy(b)  # a small product with both operands transposed: mm_nn needs B dense along N
            sbk, sbn = b.strides[-2:]
        bd, (bsa, bsb) = collapse(batch, [a.strides[:-2], b.strides[:-2]]) if batch else ([1], [[0], [0]])
        if len(bd) > MAXD:
            raise UnsupportedError(f"opencl: matmul batch shape {list(batch)} has too many dims")
        out = self._empty(shape, dtype)
        ls = self._mm_local
        types = [None, compute_type(dtype), None, None, None]
        al = compute_type(dtype)(alpha) if dtype.is_floating_point else compute_type(dtype)(int(alpha))

        def geom(r0: int) -> np.ndarray:
            return _pack(len(bd), r0, M, N, K, a.offset, b.offset, sam, sak, sbk, sbn, bd, bsa, bsb,
                         size=11 + 3 * MAXD)

        if packed:  # packed panels + the 6x16 register tile
            mp, np_ = -(-M // 6), -(-N // 16)
            ap, bp = self.rt.alloc(nb * mp * K * 24), self.rt.alloc(nb * np_ * K * 64)
            g0 = geom(0)
            k = self.rt.raw_kernel("matmul", "pack_a_f32", float32, [None, I64, None, None])
            self.rt.launch(k, (round_up(mp * K), nb), (LS, 1), g0, mp, ap, a.buf)
            k = self.rt.raw_kernel("matmul", "pack_b_f32", float32, [None, I64, None, None])
            self.rt.launch(k, (round_up(np_ * K), nb), (LS, 1), g0, np_, bp, b.buf)
            k = self.rt.raw_kernel("matmul", "mm_pk_f32", float32, [I64, I64, I64, I64, I64, F32, None, None, None])
            self.rt.launch(k, (mp, np_, nb), ls, M, N, K, mp, np_, F32(alpha), out.buf, ap, bp)
        elif not f32:
            k = self._k("matmul", "mm_gen", dtype, types)
            self.rt.launch(k, (N, M, nb), None, geom(0), al, out.buf, a.buf, b.buf)
        elif M == 1 and nb == 1 and sbn == 1:
            p = max(1, min(8, K // 64))
            kc = -(-K // p)
            p = -(-K // kc)
            part = out.buf if p == 1 and alpha == 1.0 else self.rt.alloc(p * N * 4)
            k = self.rt.raw_kernel("matmul", "mm_gemv_f32", float32, [None, I64, None, None, None])
            self.rt.launch(k, (-(-N // 64), p), ls and (1, 1), geom(0), kc, part, a.buf, b.buf)
            if part is not out.buf:
                k = self.rt.raw_kernel("matmul", "mm_gemv_sum_f32", float32, [I64, I64, F32, None, None])
                self.rt.launch(k, (round_up(N),), (LS,), N, p, F32(alpha), part, out.buf)
        elif sbn == 1:
            nj = -(-N // 16)
            m6 = (M // 6) * 6 if M >= 6 else 0
            if m6:
                k = self.rt.raw_kernel("matmul", "mm_nn6_f32", float32, types)
                self.rt.launch(k, (nj, m6 // 6, nb), ls, geom(0), al, out.buf, a.buf, b.buf)
            if M > m6:
                k = self.rt.raw_kernel("matmul", "mm_nn1_f32", float32, types)
                self.rt.launch(k, (nj, M - m6, nb), ls, geom(m6), al, out.buf, a.buf, b.buf)
        elif M < 4:
            k = self.rt.raw_kernel("matmul", "mm_nt1_f32", float32, types)
            self.rt.launch(k, (-(-N // 4), M, nb), ls, geom(0), al, out.buf, a.buf, b.buf)
        else:
            k = self.rt.raw_kernel("matmul", "mm_nt_f32", float32, types)
            self.rt.launch(k, (-(-N // 4), -(-M // 4), nb), ls, geom(0), al, out.buf, a.buf, b.buf)
        return out

    # --- indexing -----------------------------------------------------------------------------
    @staticmethod
    def _split(shape: Shape, dim: int) -> tuple[int, int, int]:
        return _n(shape[:dim]), shape[dim], _n(shape[dim + 1:])

    def index_select(self, x: CLArray, shape: Shape, index: CLArray, n_index: int, dim: int,
                     dtype: DType) -> CLArray:
        xd, idx = self._dense(x), self._dense(index)
        outer, D, inner = self._split(shape, dim)
        out_shape = shape[:dim] + (n_index,) + shape[dim + 1:]
        out = self._empty(out_shape, dtype)
        total = _n(out_shape)
        if total:
            k = self._k("index", "index_select_c", dtype, [I64, I64, I64, I64, None, None, I64, None, I64])
            self.rt.launch(k, (round_up(total),), (LS,), total, D, n_index, inner, out.buf, xd.buf, xd.offset,
                           idx.buf, idx.offset)
        return out

    def _gs(self, shape: Shape, dim: int, index_shape: Shape, xo: int, io: int, so: int,
            sst: Shape, total: int) -> np.ndarray:
        if len(shape) > MAXD:
            raise UnsupportedError(f"opencl: gather/scatter on {len(shape)} dims (at most {MAXD})")
        return _pack(len(shape), dim, total, xo, io, so, shape[dim], list(index_shape), list(dense_strides(shape)),
                     list(shape), list(sst), size=7 + 4 * MAXD)

    def gather(self, x: CLArray, shape: Shape, dim: int, index: CLArray, index_shape: Shape,
               dtype: DType) -> CLArray:
        xd, idx = self._dense(x), self._dense(index)
        out = self._empty(index_shape, dtype)
        total = _n(index_shape)
        if total:
            g = self._gs(shape, dim, index_shape, xd.offset, idx.offset, 0, (0,) * len(shape), total)
            k = self._k("index", "gather_c", dtype, [None, None, None, None])
            self.rt.launch(k, (round_up(total),), (LS,), g, out.buf, xd.buf, idx.buf)
        return out

    def scatter(self, x: CLArray, shape: Shape, dim: int, index: CLArray, index_shape: Shape,
                src: CLArray, reduce: str | None, dtype: DType) -> CLArray:
        idx = self._dense(index)
        total = _n(index_shape)
        sst = broadcast_strides(src, index_shape)
        if reduce is None:
            out = self._copy(x)
            if total:
                g = self._gs(shape, dim, index_shape, 0, idx.offset, src.offset, sst, total)
                k = self._k("index", "scatter_c", dtype, [None, None, None, None])
                self.rt.launch(k, (round_up(total),), (LS,), g, out.buf, idx.buf, src.buf)
            return out
        xd = self._dense(x)
        out = self._empty(shape, dtype)
        n = _n(shape)
        if n:
            g = self._gs(shape, dim, index_shape, xd.offset, idx.offset, src.offset, sst, n)
            k = self._k("index", "scatter_add_c", dtype, [None, None, None, None, None])
            self.rt.launch(k, (round_up(n),), (LS,), g, out.buf, xd.buf, idx.buf, src.buf)
        return out

    def index_add(self, x: CLArray, shape: Shape, dim: int, index: CLArray, n_index: int, src: CLArray,
                  dtype: DType) -> CLArray:
        xd, idx, sd = self._dense(x), self._dense(index), self._dense(src)
        outer, D, inner = self._split(shape, dim)
        out = self._empty(shape, dtype)
        total = _n(shape)
        if total:
            k = self._k("index", "index_add_c", dtype, [I64, I64, I64, I64, None, None, I64, None, I64, None, I64])
            self.rt.launch(k, (round_up(total),), (LS,), total, D, n_index, inner, out.buf, xd.buf, xd.offset,
                           idx.buf, idx.offset, sd.buf, sd.offset)
        return out

    def cat(self, xs: Sequence[CLArray], shapes: Sequence[Shape], dim: int, dtype: DType) -> CLArray:
        total = sum(s[dim] for s in shapes)
        shape = shapes[0][:dim] + (total,) + shapes[0][dim + 1:]
        out = self._empty(shape, dtype)
        start = 0
        for x, s in zip(xs, shapes):
            if s[dim]:
                view = out.view(s, out.strides, start * out.strides[dim])
                self._copy_into(view, x, s)
            start += s[dim]
        return out

    def sort(self, x: CLArray, shape: Shape, dim: int, descending: bool, dtype: DType) -> tuple[CLArray, CLArray]:
        xd = self._dense(x)
        outer, n, inner = self._split(shape, dim)
        vals = self._empty(shape, dtype)
        idx = self._empty(shape, int64)
        lines = outer * inner
        if lines and n:
            s1 = self.rt.alloc(lines * n * 8)
            s2 = self.rt.alloc(lines * n * 8)
            k = self._k("index", "sort_c", dtype, [I64, I64, I64, None, I64, None, None, None, None, I32])
            self.rt.launch(k, (round_up(lines),), (LS,), lines, n, inner, xd.buf, xd.offset, vals.buf, idx.buf,
                           s1, s2, I32(int(descending)))
        return vals, idx

    # --- misc -----------------------------------------------------------------------------------
    def synchronize(self) -> None:
        """Wait for every queued kernel (benchmarks)."""
        self.rt.finish()


__all__ = ["OpenCLBackend"]

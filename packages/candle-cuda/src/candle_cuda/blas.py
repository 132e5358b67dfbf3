"""Matrix products through cuBLAS (`cublasGemmStridedBatchedEx`): f32, f64, f16 and bf16 (mixed
precision: 16-bit operands, float32 accumulation, `CUDA_R_16BF` for bfloat16's raw words).

cuBLAS is column-major; candle's arrays are row-major views with any strides. A row-major [R, C] view
with element strides (s_row, s_col) is, read column-major, the transposed matrix with leading dimension
s_row when s_col == 1, or the matrix itself (an `OP_T` operand) with leading dimension s_col when
s_row == 1. So `C = A @ B` (row-major) is computed as `C^T = B^T A^T` in column-major terms, and a
transposed operand (a weight stored [out, in] and used as `x @ W.T`, or `k.transpose(-1, -2)`) costs no
copy. Operands that are neither (other strides, negative strides) are copied to contiguous first.
`plan` is pure Python and tested without a GPU against numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .dtypes import CUBLAS_GEMM_DEFAULT, compute_type, cuda_data_type

OP_N, OP_T = 0, 1
_INT32_MAX = (1 << 31) - 1


@dataclass(frozen=True)
class GemmPlan:
    """Arguments of one cublasGemmStridedBatchedEx call computing row-major C [batch, M, N] = A @ B: the
    first cuBLAS operand is candle's B, the second candle's A."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int
    stride_a: int
    stride_b: int
    stride_c: int
    batch: int


def operand(rows: int, cols: int, s_row: int, s_col: int) -> tuple[int, int] | None:
    """(op, ld) giving X^T in column-major terms for a row-major [rows, cols] view with element strides
    (s_row, s_col); None when the layout needs a copy."""
    if cols == 1:
        s_col = 1
    if rows == 1:
        s_row = max(cols, 1) if s_col == 1 else 1
    if s_col == 1 and s_row >= max(1, cols) and s_row <= _INT32_MAX:
        return OP_N, s_row
    if s_row == 1 and s_col >= max(1, rows) and s_col <= _INT32_MAX:
        return OP_T, s_col
    return None


def batch_stride(shape: tuple[int, ...], strides: tuple[int, ...]) -> int | None:
    """One element stride stepping through the batch dims (row-major order), 0 for a broadcast operand,
    None when the dims do not collapse to one stride."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if not dims:
        return 0
    inner = dims[-1][1]
    acc = inner
    for n, s in reversed(dims):
        if s != acc:
            return None
        acc = s * n
    return inner if inner >= 0 else None


def plan(shape_a: tuple[int, ...], strides_a: tuple[int, ...], shape_b: tuple[int, ...],
         strides_b: tuple[int, ...]) -> tuple[GemmPlan | None, bool, bool]:
    """The plan of `a @ b` (same batch shape, ndim >= 2), and whether a / b must be copied to contiguous
    first (then plan again with the copies' strides; the plan is None while a copy is needed)."""
    batch = shape_a[:-2]
    m, k = shape_a[-2:]
    n = shape_b[-1]
    pa = operand(m, k, strides_a[-2], strides_a[-1])
    pb = operand(k, n, strides_b[-2], strides_b[-1])
    sa = batch_stride(batch, strides_a[:-2])
    sb = batch_stride(batch, strides_b[:-2])
    copy_a, copy_b = pa is None or sa is None, pb is None or sb is None
    if copy_a or copy_b:
        return None, copy_a, copy_b
    assert pa is not None and pb is not None and sa is not None and sb is not None
    nb = math.prod(batch)
    return GemmPlan(transa=pb[0], transb=pa[0], m=n, n=m, k=k, lda=pb[1], ldb=pa[1], ldc=n,
                    stride_a=sb, stride_b=sa, stride_c=m * n, batch=max(nb, 1)), False, False


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    st, acc = [], 1
    for s in reversed(shape):
        st.append(acc)
        acc *= s
    return tuple(reversed(st))


def gemm(rt: Any, a: Any, b: Any, out: Any, p: GemmPlan, dtype: str) -> None:
    """Run the plan: out (contiguous [batch, M, N]) = a @ b, on the runtime's stream."""
    import numpy as np

    cublas, handle = rt.cublas()
    one = np.ones(1, dtype=np.float64 if dtype == "f64" else np.float32)
    zero = np.zeros(1, dtype=one.dtype)
    dt = cuda_data_type(dtype)
    cublas.gemmStridedBatchedEx(handle, p.transa, p.transb, p.m, p.n, p.k, one.ctypes.data,
                                b.data.ptr, dt, p.lda, p.stride_a, a.data.ptr, dt, p.ldb, p.stride_b,
                                zero.ctypes.data, out.data.ptr, dt, p.ldc, p.stride_c, p.batch,
                                compute_type(dtype), CUBLAS_GEMM_DEFAULT)

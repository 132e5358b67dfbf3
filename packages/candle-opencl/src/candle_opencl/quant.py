"""Quantized kernels of the OpenCL backend (GGML blocks, see /candle/io/ggml_quants.py and the
`qdequantize`/`qmatmul`/`qembedding` entries of `candle.backend.FUSED_KERNELS`).

The resident form of a quantized weight is its raw GGML bytes on the device (the default `qstore`):
a uint8 `CLArray` [N, row_bytes]. `kernels/quant.cl` decodes the blocks of Q4_0, Q4_1, Q5_0, Q5_1,
Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K with the reference's float operations (bit-exact in
float32); F16/BF16/F32 "quantized" weights are the same bytes viewed as that dtype. Products with few
rows of x (decode) decode W in registers (`qmv1`, `qmv2`: W is read once per 2 rows of x); larger
ones dequantize W to float32 once and run the packed float32 matmul.
"""

from __future__ import annotations

import math
from typing import Any

from candle.dtype import DType, bfloat16, float16, float32, int64, uint8
from candle.errors import ShapeError, UnsupportedError

from .runtime import I32, I64, LS, CLArray, dense_strides, round_up

Shape = tuple[int, ...]

#: GGML block types with kernels: name -> (elements per block, bytes per block)
QBLOCKS: dict[str, tuple[int, int]] = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
    "Q8_K": (256, 292),
}
#: plain types stored element by element: their bytes are a tensor of this dtype
QPLAIN: dict[str, DType] = {"F32": float32, "F16": float16, "BF16": bfloat16}
QTYPES = tuple(QBLOCKS) + tuple(QPLAIN)

QMV_MAX_ROWS = 32  # products with more rows of x dequantize W once and use the (packed) float32 matmul


class QuantKernels:
    """Mixed into `OpenCLBackend` (uses its helpers: `_k`, `_empty`, `_dense`, `_map1`, `_mm`, `rt`)."""

    rt: Any
    _cpu: bool

    # --- validation ---------------------------------------------------------------------------
    def _qcheck(self, op: str, qtype: str, shape_w: Shape, w: CLArray) -> str:
        """The upper-case qtype after checking it and W's shape/bytes; clear errors otherwise."""
        name = str(getattr(qtype, "name", qtype)).upper()
        if name not in QBLOCKS and name not in QPLAIN:
            raise UnsupportedError(f"opencl: {op} of GGML type {name} is not supported on OpenCL device "
                                   f"{self.rt.name} (supported: {', '.join(QTYPES)})")
        if len(shape_w) != 2:
            raise ShapeError(f"opencl: {op} expects a 2-d quantized weight (N, K), got shape {list(shape_w)}")
        n, k = shape_w
        bs, ts = QBLOCKS.get(name, (1, QPLAIN[name].itemsize if name in QPLAIN else 1))
        if k % bs:
            raise ShapeError(f"opencl: {op}: K={k} of weight {list(shape_w)} is not a multiple of the "
                             f"{name} block size {bs}")
        want = (n, k // bs * ts)
        if w.dtype is not uint8 or math.prod(w.shape) != math.prod(want):
            raise ShapeError(f"opencl: {op}: the {name} weight {list(shape_w)} needs {want[0]} x {want[1]} bytes, "
                             f"got a {w.dtype.name} array of shape {list(w.shape)}")
        return name

    def _qplain(self, w: CLArray, name: str, shape_w: Shape) -> CLArray:
        """The bytes of an F32/F16/BF16 weight viewed as a tensor of that dtype (no copy)."""
        wd = self._dense(w)  # type: ignore[attr-defined]
        dt = QPLAIN[name]
        if wd.offset % dt.itemsize:
            wd = self._copy(wd)  # type: ignore[attr-defined]
        return CLArray(wd.buf, tuple(shape_w), dense_strides(tuple(shape_w)), wd.offset // dt.itemsize, dt)

    def _rows_per_item(self, n: int) -> int:
        """Rows of W per work-item of qmv: a few work-items per compute unit on CPUs, one row on GPUs."""
        if not self._cpu:
            return 1
        cu = max(1, int(self.rt.device.max_compute_units))
        return max(1, -(-n // (8 * cu)))

    # --- kernels ---------------------------------------------------------------------------------
    def qdequantize(self, qnative: CLArray, qtype: str, shape: Shape, dtype: DType) -> CLArray:
        """W [N, K] dequantized to `dtype` (float32: bit-exact to the numpy reference)."""
        name = self._qcheck("qdequantize", qtype, shape, qnative)
        if not dtype.is_floating_point:
            raise UnsupportedError(f"opencl: qdequantize to {dtype.name}: the result must be a float dtype")
        if name in QPLAIN:
            src = self._qplain(qnative, name, shape)
            if src.dtype is dtype:
                return self._copy(src)  # type: ignore[attr-defined]
            return self._map1("cast", src, src.shape, dtype, file="cast", src=src.dtype)  # type: ignore
        return self._qdeq(qnative, name, shape, None, shape[0], dtype)

    def qembedding(self, qnative: CLArray, qtype: str, shape_w: Shape, ids: CLArray, n_ids: int,
                   dtype: DType) -> CLArray:
        """Rows `ids` (int64) of W dequantized: [n_ids, K] of `dtype` (ids out of range are clamped, as in
        index_select: a kernel cannot raise)."""
        name = self._qcheck("qembedding", qtype, shape_w, qnative)
        if ids.dtype is not int64:
            raise UnsupportedError(f"opencl: qembedding ids must be int64, got {ids.dtype.name}")
        if name in QPLAIN:
            src = self._qplain(qnative, name, shape_w)
            rows = self.index_select(src, src.shape, ids, n_ids, 0, src.dtype)  # type: ignore[attr-defined]
            if rows.dtype is dtype:
                return rows
            return self._map1("cast", rows, rows.shape, dtype, file="cast", src=rows.dtype)  # type: ignore
        return self._qdeq(qnative, name, shape_w, self._dense(ids), n_ids, dtype)  # type: ignore[attr-defined]

    def _qdeq(self, w: CLArray, name: str, shape_w: Shape, ids: CLArray | None, rows: int,
              dtype: DType) -> CLArray:
        n, k = shape_w
        if dtype is not float32:  # decoded in float32 (exact), then rounded once: one program, the f32 one
            r = self._qdeq(w, name, shape_w, ids, rows, float32)
            return self._map1("cast", r, r.shape, dtype, file="cast", src=float32)  # type: ignore[attr-defined]
        wd = self._dense(w)  # type: ignore[attr-defined]
        out = self._empty((rows, k), dtype)  # type: ignore[attr-defined]
        total = rows * (k // 32)
        if total:
            bs, ts = QBLOCKS[name]
            kern = self.rt.raw_kernel("quant", f"qdeq_{name.lower()}_f32", float32,
                                      [I64, I64, I64, I64, None, None, I64, None, I64, I32])
            idb, ido = (ids.buf, ids.offset) if ids is not None else (wd.buf, 0)
            self.rt.launch(kern, (round_up(total),), (LS,), total, k // 32, k // bs * ts, n, out.buf, wd.buf,
                           wd.offset, idb, ido, I32(ids is not None))
        return out

    def qmatmul(self, x: CLArray, qnative: CLArray, qtype: str, shape_x: Shape, shape_w: Shape,
                dtype: DType) -> CLArray:
        """x [..., K] @ dequantize(W)^T -> [..., N]; float32 sums in any order (within matmul tolerance)."""
        name = self._qcheck("qmatmul", qtype, shape_w, qnative)
        n, k = shape_w
        if not shape_x or shape_x[-1] != k:
            raise ShapeError(f"opencl: qmatmul of x {list(shape_x)} with a weight {list(shape_w)}: "
                             f"x's last dim must be K={k}")
        out_shape = tuple(shape_x[:-1]) + (n,)
        m = math.prod(shape_x[:-1])
        if dtype in (float16, bfloat16):  # computed in float32, rounded once
            x32 = self._map1("cast", x, x.shape, float32, file="cast", src=dtype)  # type: ignore[attr-defined]
            r = self.qmatmul(x32, qnative, name, shape_x, shape_w, float32)
            return self._map1("cast", r, r.shape, dtype, file="cast", src=float32)  # type: ignore
        if not m or not n:
            return self._empty(out_shape, dtype)  # type: ignore[attr-defined]
        xd = self._dense(x)  # type: ignore[attr-defined]
        x2 = xd.view((m, k), (k, 1))
        if dtype is not float32 or name in QPLAIN or m > QMV_MAX_ROWS:
            w = self.qdequantize(qnative, name, shape_w, dtype)
            r = self._mm(x2, w.view((k, n), (1, k)), dtype, 1.0)  # type: ignore[attr-defined]
            return r.view(out_shape, dense_strides(out_shape))
        wd = self._dense(qnative)  # type: ignore[attr-defined]
        bs, ts = QBLOCKS[name]
        out = self._empty(out_shape, float32)  # type: ignore[attr-defined]
        nr = self._rows_per_item(n)
        ls = (1, 1) if self._cpu else None
        if m == 1:
            kern = self.rt.raw_kernel("quant", f"qmv1_{name.lower()}_f32", float32,
                                      [I64, I64, I64, I64, None, None, I64, None, I64])
            self.rt.launch(kern, (-(-n // nr),), ls and (1,), n, k, k // bs * ts, nr, out.buf, xd.buf, xd.offset,
                           wd.buf, wd.offset)
        else:
            kern = self.rt.raw_kernel("quant", f"qmv2_{name.lower()}_f32", float32,
                                      [I64, I64, I64, I64, I64, None, None, I64, None, I64])
            self.rt.launch(kern, (-(-n // nr), -(-m // 2)), ls, n, k, m, k // bs * ts, nr, out.buf, xd.buf,
                           xd.offset, wd.buf, wd.offset)
        return out


__all__ = ["QBLOCKS", "QPLAIN", "QTYPES", "QuantKernels"]

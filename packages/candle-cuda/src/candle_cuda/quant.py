"""Quantized kernels of the CUDA backend (notes/QUANT_INTERFACE.md): GGML blocks stay on the GPU as raw
bytes (a uint8 CuPy array [N, row_bytes], the interface's default `qstore`), and

- `qdequantize` decodes them with `qdequantize_<type>_<dtype>` (kernels/quant.cu), bit for bit the
  numpy reference in float32;
- `qmatmul` runs `qmatvec_<type>_<dtype>` for up to `launch.QMATVEC_MAX_ROWS` rows of x (a decode
  step: the weight is read once, dequantized on the fly), and for more rows dequantizes the weight once
  into the activation dtype and runs one cuBLAS GEMM with the weight as a transposed operand.

Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K and Q6_K have kernels; F32/F16/BF16 "quantized" tensors are
reinterpreted; every other type raises `UnsupportedError` naming the op, the type and the device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from candle.dtype import DType, bfloat16, float16, float32, float64
from candle.errors import DTypeError, ShapeError, UnsupportedError

from . import launch
from .kernels import QUANT_TYPES

Shape = tuple[int, ...]
_PLAIN = {"F32": "float32", "F16": "float16", "BF16": "uint16"}


def block_geometry(qtype: str) -> tuple[int, int]:
    """(elements per block, bytes per block) of a GGML type name."""
    from candle.io.ggml_quants import GGML_BLOCK_SIZES, ggml_type

    return GGML_BLOCK_SIZES[ggml_type(qtype)]


def check_quant_args(op: str, qtype: str, shape_w: Shape, row_bytes: int, device: Any) -> None:
    """Clear errors for an unsupported type or a byte count that does not match (N, K)."""
    qt = qtype.upper()
    if qt not in QUANT_TYPES and qt not in _PLAIN:
        raise UnsupportedError(f"{op}: GGML type {qtype} has no CUDA kernel on {device} (supported: "
                               f"{', '.join(QUANT_TYPES + tuple(_PLAIN))})")
    bs, ts = block_geometry(qt)
    n, k = shape_w
    if k % bs or row_bytes != k // bs * ts:
        raise ShapeError(f"{op}: a {qt} weight of shape [{n}, {k}] needs rows of {k // bs * ts} bytes "
                         f"(K a multiple of {bs}), got {row_bytes}")


class QuantKernels:
    """Mixed into `CudaBackend`."""

    rt: Any
    xp: Any

    def _plain_weight(self, qnative: Any, qt: str, shape: Shape, dtype: DType) -> Any:
        raw = qnative if qnative.flags.c_contiguous else self.xp.ascontiguousarray(qnative)
        w = raw.view(_PLAIN[qt]).reshape(shape)
        src = {"F32": float32, "F16": float16, "BF16": bfloat16}[qt]
        return w if src is dtype else self.cast(w, shape, src, dtype)  # type: ignore[attr-defined]

    def qdequantize(self, qnative: Any, qtype: str, shape: Shape, dtype: DType) -> Any:
        """W [N, K] of float `dtype` from its raw GGML blocks."""
        if not dtype.is_floating_point:
            raise DTypeError(f"qdequantize: expected a float dtype, got {dtype.name}")
        qt = qtype.upper()
        n, k = shape
        check_quant_args("qdequantize", qt, shape, int(qnative.shape[-1]) if qnative.ndim else 0,
                         self.device)  # type: ignore[attr-defined]
        if qt in _PLAIN:
            return self._plain_weight(qnative, qt, shape, dtype)
        out = self.xp.empty((n, k), dtype=self._st(dtype))  # type: ignore[attr-defined]
        if n * k:
            grid, block = launch.grid_1d(n * k)
            w = qnative if qnative.flags.c_contiguous else self.xp.ascontiguousarray(qnative)
            self.rt.launch("quant", f"qdequantize_{qt.lower()}", dtype.short, grid, block,
                           (w, out, np.int64(n), np.int64(k), np.int64(qnative.shape[-1])))
        return out

    def qmatmul(self, x: Any, qnative: Any, qtype: str, shape_x: Shape, shape_w: Shape, dtype: DType) -> Any:
        """x [..., K] @ dequantize(W)^T -> [..., N]."""
        qt = qtype.upper()
        n, k = shape_w
        if shape_x[-1] != k:
            raise ShapeError(f"qmatmul: x of shape {list(shape_x)} does not match a weight of shape [{n}, {k}]")
        check_quant_args("qmatmul", qt, shape_w, int(qnative.shape[-1]), self.device)  # type: ignore[attr-defined]
        m = int(np.prod(shape_x[:-1], dtype=np.int64))
        out_shape = tuple(shape_x[:-1]) + (n,)
        if qt in QUANT_TYPES and 0 < m <= launch.QMATVEC_MAX_ROWS and dtype in (float32, float16, bfloat16, float64):
            xc = x if x.flags.c_contiguous else self.xp.ascontiguousarray(x)
            out = self.xp.empty(out_shape, dtype=self._st(dtype))  # type: ignore[attr-defined]
            if n:
                grid, block = launch.qmatvec_grid(m, n)
                w = qnative if qnative.flags.c_contiguous else self.xp.ascontiguousarray(qnative)
                self.rt.launch("quant", f"qmatvec_{qt.lower()}", dtype.short, grid, block,
                               (xc, w, out, np.int64(m), np.int64(n), np.int64(k), np.int64(qnative.shape[-1])))
            return out
        wt = self.qdequantize(qnative, qt, (n, k), dtype).T  # [K, N]: a transposed operand, no copy
        x2 = x.reshape(m, k)
        return self.matmul(x2, wt, (m, k), (k, n), dtype).reshape(out_shape)  # type: ignore[attr-defined]

"""Ops on quantized weights: `qdequantize`, `qmatmul`, `qembedding`.

Each runs the backend's fused kernel of the same name when it has one (`candle.backend.FUSED_KERNELS`)
and otherwise core's composition, the reference the kernels are tested against:

- qmatmul(x, W) = x @ qdequantize(W).T (a float matmul on the dequantized weight);
- qembedding(W, ids) = qdequantize of the rows `ids`: index_select on the raw bytes when the backend keeps
  raw bytes (no qstore), else rows of the whole dequantized weight.

A backend without `qdequantize` cannot run quantized weights: an UnsupportedError names the op, the type
and the device (there is no hidden trip through the host). None of these ops record gradients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dtype import DType, float32, int64, uint8
from ..errors import DeviceError, DTypeError, ShapeError, UnsupportedError, fmt_shape
from ..io.ggml_quants import row_nbytes
from ..ops._base import fused, make
from ..tensor import Tensor

if TYPE_CHECKING:
    from .qtensor import QTensor

__all__ = ["qdequantize", "qembedding", "qmatmul"]


def _check_float(op: str, dtype: DType) -> None:
    if not dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a float dtype, got {dtype.name}")


def qdequantize(w: QTensor, dtype: DType = float32) -> Tensor:
    """`w`'s values as a float Tensor of `w.shape` and `dtype` on its device."""
    _check_float("qdequantize", dtype)
    b = w.device.backend
    fn = getattr(b, "qdequantize", None)
    if fn is None:
        raise UnsupportedError(f"qdequantize: backend {b.name} has no kernel for quantized weights "
                               f"({w.qtype.name} on {w.device})")
    out = fn(w._native, w.qtype.name, w.matrix_shape, dtype)
    return make(b.reshape(out, w.matrix_shape, w.shape) if w.ndim != 2 else out, w.shape, dtype, w.device, b)


def qmatmul(x: Tensor, w: QTensor) -> Tensor:
    """`x @ w.dequantize().T` for a float `x` `[..., K]` and `w` `(N, K)`: `[..., N]` in x's dtype."""
    if not isinstance(x, Tensor):
        raise DTypeError(f"qmatmul: x must be a Tensor, got {type(x).__name__}")
    _check_float("qmatmul", x.dtype)
    n, k = w.matrix_shape
    if x.ndim < 1 or x.shape[-1] != k or w.ndim != 2:
        raise ShapeError(f"shape mismatch in qmatmul: x {fmt_shape(x.shape)} @ W{fmt_shape(w.shape)}.T "
                         f"(W must be 2-d with x's last dim)")
    if x.device != w.device:
        raise DeviceError(f"device mismatch in qmatmul: x on {x.device}, weight on {w.device}")
    b = x._backend
    out_shape = (*x.shape[:-1], n)
    fn = fused(b, "qmatmul")
    if fn is not None:
        xc = b.contiguous(x._data, x.shape)
        return make(fn(xc, w._native, w.qtype.name, x.shape, (n, k), x.dtype), out_shape, x.dtype, x.device, b)
    wt = qdequantize(w, x.dtype)
    return x @ wt.t()


def qembedding(w: QTensor, ids: Tensor, dtype: DType = float32) -> Tensor:
    """Rows `ids` (an integer Tensor of any shape) of `w` dequantized: `[*ids.shape, K]`."""
    _check_float("qembedding", dtype)
    if not isinstance(ids, Tensor) or ids.dtype.is_floating_point:
        raise DTypeError("qembedding: ids must be an integer Tensor")
    if w.ndim != 2:
        raise ShapeError(f"qembedding: the weight must be 2-d, got {fmt_shape(w.shape)}")
    if ids.device != w.device:
        raise DeviceError(f"device mismatch in qembedding: ids on {ids.device}, weight on {w.device}")
    n, k = w.shape
    flat = ids.reshape(-1)
    if flat.dtype is not int64:
        flat = flat.to(dtype=int64)
    m = flat.shape[0]
    b = w.device.backend
    fn = fused(b, "qembedding")
    if fn is not None:
        out = make(fn(w._native, w.qtype.name, (n, k), flat._data, m, dtype), (m, k), dtype, w.device, b)
    elif getattr(b, "qstore", None) is None and getattr(b, "qdequantize", None) is not None:
        rb = row_nbytes(w.qtype, k)
        rows = b.index_select(w._native, (n, rb), flat._data, m, 0, uint8)
        out = make(b.qdequantize(rows, w.qtype.name, (m, k), dtype), (m, k), dtype, w.device, b)
    else:
        from ..ops.indexing import index_select

        out = index_select(qdequantize(w, dtype), 0, flat)
    return out.reshape(*ids.shape, k)

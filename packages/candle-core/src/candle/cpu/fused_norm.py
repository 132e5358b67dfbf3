"""Fused normalisation kernels of the numpy backend (rms_norm, layer_norm, silu_mul).

They run in every layer of an LLM, so each makes one output buffer and works in place on it
(float16/bfloat16 are computed in float32 like the rest of the CPU backend and rounded once).
Row sums of squares use `np.vecdot` (numpy >= 2; a BLAS-speed dot per row, no temporary array),
or `einsum` on older numpy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..dtype import DType, bfloat16, float16

Shape = tuple[int, ...]
_HALF = (float16, bfloat16)
_F32 = np.dtype(np.float32)


def _rows(x: np.ndarray, shape: Shape, half: bool) -> tuple[np.ndarray, bool]:
    """x as [rows, D] in the compute dtype, and whether that array is a fresh copy we may overwrite."""
    x2 = np.asarray(x).reshape(math.prod(shape[:-1]), shape[-1])
    return (x2.astype(_F32), True) if half else (x2, False)


def _sq_sum(x: np.ndarray) -> np.ndarray:
    """Sum of squares of each row of a 2-d array."""
    return _vecdot(x, x) if _vecdot is not None else np.einsum("ij,ij->i", x, x)


_vecdot = getattr(np, "vecdot", None)


def _inv_rms(sq_sum: np.ndarray, d: int, eps: float) -> np.ndarray:
    """rsqrt(sq_sum / d + eps) in place on `sq_sum`, as a column [rows, 1]."""
    sq_sum *= sq_sum.dtype.type(1.0 / d) if d else 0
    sq_sum += sq_sum.dtype.type(eps)
    np.sqrt(sq_sum, out=sq_sum)
    np.reciprocal(sq_sum, out=sq_sum)
    return sq_sum[:, None]


def _param(p: Any, half: bool) -> Any:
    return p.astype(_F32) if half else p


class NormKernels:
    """Mixed into `NumpyBackend`."""

    def rms_norm(self, x: np.ndarray, w: np.ndarray | None, shape: Shape, eps: float, dtype: DType) -> np.ndarray:
        half = dtype in _HALF
        xf, owned = _rows(x, shape, half)
        ss = _sq_sum(xf)
        if len(ss) == 1:  # one row (a decode step): the scale in Python floats, two fewer array passes
            d = shape[-1]
            r: Any = xf.dtype.type(1.0 / math.sqrt(float(ss[0]) / d + eps)) if d else xf.dtype.type(0)
        else:
            r = _inv_rms(ss, shape[-1], eps)
        out = np.multiply(xf, r, out=xf if owned else None)
        if w is not None:
            out *= _param(w, half)
        return out.astype(dtype.numpy, copy=False).reshape(shape)

    def layer_norm(self, x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, shape: Shape, eps: float,
                   dtype: DType) -> np.ndarray:
        half = dtype in _HALF
        xf, owned = _rows(x, shape, half)
        mu = xf.mean(axis=1, keepdims=True)
        out = np.subtract(xf, mu, out=xf if owned else None)
        out *= _inv_rms(_sq_sum(out), shape[-1], eps)
        if w is not None:
            out *= _param(w, half)
        if b is not None:
            out += _param(b, half)
        return out.astype(dtype.numpy, copy=False).reshape(shape)

    def silu_mul(self, a: np.ndarray, b: np.ndarray, shape: Shape, dtype: DType) -> np.ndarray:
        half = dtype in _HALF
        af = a.astype(_F32) if half else a
        out = np.negative(af)
        with np.errstate(over="ignore"):  # exp(-a) = inf for very negative a gives silu(a) = -0, like torch
            np.exp(out, out=out)
        out += out.dtype.type(1)
        np.divide(af, out, out=out)
        out *= _param(b, half)
        return np.asarray(out.astype(dtype.numpy, copy=False))

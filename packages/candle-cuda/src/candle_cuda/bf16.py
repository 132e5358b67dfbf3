"""bfloat16 on an array module without a bfloat16 dtype: raw uint16 words, converted with integer ops
(the same on CuPy and numpy, so the emulated runtime of the tests runs this very code)."""

from __future__ import annotations

from typing import Any


def to_f32(xp: Any, u: Any) -> Any:
    """uint16 bfloat16 bits -> float32 (exact)."""
    return (u.astype(xp.uint32) << 16).view(xp.float32)


def from_f32(xp: Any, f: Any) -> Any:
    """float32 -> uint16 bfloat16 bits, rounding to nearest even; NaN stays NaN (quiet)."""
    if f.dtype != xp.float32:
        f = f.astype(xp.float32)
    if not f.flags.c_contiguous:
        f = xp.ascontiguousarray(f)
    u = f.view(xp.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(xp.uint16)
    if bool(nan.any()) if xp.__name__ == "numpy" else True:
        r = xp.where(nan, ((u >> 16) | 0x40).astype(xp.uint16), r)
    return r


def scalar_bits(value: float) -> int:
    """The bfloat16 bits of a Python float (round to nearest even), via ml_dtypes like candle's CPU side."""
    import numpy as np

    from candle.dtype import bfloat16

    return int(np.array(value, dtype=bfloat16.numpy).view(np.uint16))

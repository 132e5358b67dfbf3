"""numpy arrays in and out of files: dtypes candle holds (native byte order, lossless widening only)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..dtype import bfloat16
from ..errors import FileFormatError

#: `(kind, itemsize)` of numpy dtypes candle lacks -> the numpy dtype they widen to without loss.
_WIDEN = {("b", 1): "uint8", ("i", 1): "int64", ("i", 2): "int64", ("i", 4): "int64", ("u", 2): "uint32"}
_KEEP = {("u", 1), ("u", 4), ("i", 8), ("f", 2), ("f", 4), ("f", 8)}


def host_array(t: Any) -> np.ndarray:
    """The host numpy array of tensor `t`, with `t`'s shape (guarding against backends that hand
    0-d tensors out as shape (1,))."""
    return np.asarray(t.numpy()).reshape(t.shape)


def bf16_from_bits(bits: np.ndarray) -> np.ndarray:
    """A bfloat16 view of little- or big-endian uint16 bits (zero-copy when already native)."""
    return bits.astype(np.dtype("=u2"), copy=False).view(bfloat16.numpy)


def bf16_to_le_bits(arr: np.ndarray) -> np.ndarray:
    """The little-endian uint16 bits of a bfloat16 array."""
    bits = arr.view(np.uint16)
    return bits if sys.byteorder == "little" else bits.astype("<u2")


def to_candle_array(arr: np.ndarray, what: str) -> np.ndarray:
    """`arr` in a dtype candle holds: bool -> uint8 (a view), int8/16/32 -> int64, uint16 -> uint32,
    byte order made native; everything else (uint64, complex, strings, objects...) raises
    `FileFormatError` naming `what` (the file and entry)."""
    dt = arr.dtype
    if dt == bfloat16.numpy:
        return arr
    key = (dt.kind, dt.itemsize)
    if key in _KEEP:
        return arr.astype(dt.newbyteorder("="), copy=False)
    if key == ("b", 1):
        return arr.view(np.uint8)
    if key in _WIDEN:
        return arr.astype(_WIDEN[key])
    raise FileFormatError(f"{what}: dtype {dt} has no lossless candle equivalent "
                          "(candle holds u8, u32, i64, f16, bf16, f32, f64)")

"""Quantizers of the 32-element GGML block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and BF16, from float32.

Each function takes float32 blocks `(n, 32)` (BF16: any float32 array) and returns the packed bytes
`(n, type_size)`, computing with the same float32 operations, in the same order, as ggml's
`quantize_row_*_ref` (and gguf-py's `gguf.quants.quantize`, which reproduces them), so the bytes are
identical to both. Everything is whole-array numpy: no per-block Python.
"""

from __future__ import annotations

import numpy as np

__all__ = ["quantize_bf16", "quantize_q4_0", "quantize_q4_1", "quantize_q5_0", "quantize_q5_1", "quantize_q8_0"]

_F32 = np.float32


def _f16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 column `(n, 1)` -> its little-endian f16 bytes `(n, 2)`."""
    return v.astype("<f2").view(np.uint8)


def _inverse(d: np.ndarray) -> np.ndarray:
    """`1 / d`, and 0 where d is 0 (ggml's `id = d ? 1.0f/d : 0.0f`)."""
    with np.errstate(divide="ignore"):
        return np.where(d == 0, _F32(0), _F32(1) / d).astype(_F32)


def _signed_max(blocks: np.ndarray) -> np.ndarray:
    """The element of largest magnitude of every block (the first one on ties), as a column."""
    i = np.abs(blocks).argmax(axis=-1)[:, None]
    return np.take_along_axis(blocks, i, axis=-1)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """`(n, 32)` values 0..15 -> `(n, 16)` bytes: element j in the low nibble of byte j, j+16 in the high."""
    return (q[:, :16] & 15) | (q[:, 16:] << 4)


def _pack_high_bits(q: np.ndarray) -> np.ndarray:
    """Bit 4 of each of the 32 values -> `(n, 4)` bytes, bit j of the little-endian u32 for element j."""
    return np.packbits((q >> 4) & 1, axis=-1, bitorder="little")


def _trunc_u8(v: np.ndarray, top: int) -> np.ndarray:
    """`MIN(top, (int8_t)v)` of ggml for v >= 0 (NaN gives 0, as the C conversion does on x86 in practice)."""
    with np.errstate(invalid="ignore"):
        t = np.trunc(v)
    t = np.nan_to_num(t, nan=0.0, posinf=top, neginf=0.0)
    return np.clip(t, 0, top).astype(np.uint8)


def quantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    d = _signed_max(blocks) / _F32(-8)
    q = _trunc_u8(blocks * _inverse(d) + _F32(8.5), 15)
    return np.concatenate([_f16_bytes(d), _pack_nibbles(q)], axis=1)


def quantize_q4_1(blocks: np.ndarray) -> np.ndarray:
    mn = blocks.min(axis=-1, keepdims=True)
    d = (blocks.max(axis=-1, keepdims=True) - mn) / _F32(15)
    q = _trunc_u8((blocks - mn) * _inverse(d) + _F32(0.5), 15)
    return np.concatenate([_f16_bytes(d), _f16_bytes(mn), _pack_nibbles(q)], axis=1)


def quantize_q5_0(blocks: np.ndarray) -> np.ndarray:
    d = _signed_max(blocks) / _F32(-16)
    q = _trunc_u8(blocks * _inverse(d) + _F32(16.5), 31)
    return np.concatenate([_f16_bytes(d), _pack_high_bits(q), _pack_nibbles(q)], axis=1)


def quantize_q5_1(blocks: np.ndarray) -> np.ndarray:
    mn = blocks.min(axis=-1, keepdims=True)
    d = (blocks.max(axis=-1, keepdims=True) - mn) / _F32(31)
    q = _trunc_u8((blocks - mn) * _inverse(d) + _F32(0.5), 31)
    return np.concatenate([_f16_bytes(d), _f16_bytes(mn), _pack_high_bits(q), _pack_nibbles(q)], axis=1)


def round_away(v: np.ndarray) -> np.ndarray:
    """C's `roundf`: to nearest, halves away from zero (exact: `a - floor(a)` is exact in float)."""
    a = np.abs(v)
    f = np.floor(a)
    return np.copysign(f + np.floor(_F32(2) * (a - f)), v)


def quantize_q8_0(blocks: np.ndarray) -> np.ndarray:
    d = np.abs(blocks).max(axis=-1, keepdims=True) / _F32(127)
    q = round_away(blocks * _inverse(d))
    with np.errstate(invalid="ignore"):
        q = np.nan_to_num(q, nan=0.0).astype(np.int8)
    return np.concatenate([_f16_bytes(d), q.view(np.uint8)], axis=1)


def quantize_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16) like ggml: round to nearest even, NaNs made quiet."""
    n = np.ascontiguousarray(x, dtype=_F32).view(np.uint32)
    nan = (n & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    r = (n.astype(np.uint64) + (np.uint64(0x7FFF) + ((n >> np.uint32(16)) & np.uint32(1)))) >> np.uint64(16)
    quiet = ((n >> np.uint32(16)) | np.uint32(64)).astype(np.uint64)
    return np.where(nan, quiet, r).astype(np.uint16)

"""GGML blocks as integer levels and float scales: `W = s * (u - bias) + o` per group of `g` elements.

Every quantized type stores, per block, unsigned integer levels `u` (4 to 8 bits, or int8 for Q8_0/Q8_K)
and per-group float32 scales `s` and offsets `o` derived from its header bytes. This module splits raw
blocks into those parts (`split_blocks`) and packs levels back into the type's bit layout
(`pack_levels`), so the CPU backend can keep weights in a layout made for its matmul and still give
the exact GGML bytes back. `s * (u - bias) + o` computed in float32 (in that order, without `o` when the
type has none) is bit-identical to `candle.io.ggml_quants.dequantize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..io.ggml_quants import GGML_BLOCK_SIZES, QK_K, GGMLType, _bits, _crumbs, _f16, _k_scale_min, _nibbles

__all__ = ["GGML_BLOCK_SIZES", "LAYOUTS", "Layout", "Split", "header_bytes", "join_blocks", "pack_levels",
           "split_blocks"]

_F32 = np.float32


@dataclass(frozen=True)
class Layout:
    """How a type's blocks split: `group` elements share a scale; `bias` is subtracted from the levels;
    `bits` is the width of a level (8 = int8 values stored as is); `quant` are the byte ranges of a block
    that hold the levels (the rest is the header: scales, mins, sums); `has_offset` whether `o` exists."""

    group: int
    bias: int
    bits: int
    quant: tuple[tuple[int, int], ...]
    has_offset: bool


LAYOUTS: dict[GGMLType, Layout] = {
    GGMLType.Q4_0: Layout(32, 8, 4, ((2, 18),), False),
    GGMLType.Q4_1: Layout(32, 0, 4, ((4, 20),), True),
    GGMLType.Q5_0: Layout(32, 16, 5, ((2, 22),), False),
    GGMLType.Q5_1: Layout(32, 0, 5, ((4, 24),), True),
    GGMLType.Q8_0: Layout(32, 0, 8, ((2, 34),), False),
    GGMLType.Q2_K: Layout(16, 0, 2, ((16, 80),), True),
    GGMLType.Q3_K: Layout(16, 4, 3, ((0, 96),), False),
    GGMLType.Q4_K: Layout(32, 0, 4, ((16, 144),), True),
    GGMLType.Q5_K: Layout(32, 0, 5, ((16, 176),), True),
    GGMLType.Q6_K: Layout(16, 32, 6, ((0, 192),), False),
    GGMLType.Q8_K: Layout(QK_K, 0, 8, ((4, 260),), False),
}


@dataclass
class Split:
    """Blocks `(n, ...)` as levels `u` `(n, block)` (uint8; int8 for 8-bit types), scales `s` and offsets `o`
    `(n, block // group)` float32 (`o` None when the type has none)."""

    u: np.ndarray
    s: np.ndarray
    o: np.ndarray | None


def _u_nib(blk: np.ndarray, at: int) -> np.ndarray:
    n = blk.shape[0]
    q = np.empty((n, 2, 16), np.uint8)
    _nibbles(blk[:, at:at + 16], q)
    return q.reshape(n, 32)


def _u_q5(blk: np.ndarray, at: int) -> np.ndarray:
    """5-bit levels of Q5_0/Q5_1 with their high-bit word at byte `at`."""
    u = _u_nib(blk, at + 4)
    u |= np.unpackbits(blk[:, at:at + 4], axis=1, bitorder="little") << 4
    return u


def split_blocks(t: GGMLType, blk: np.ndarray) -> Split:
    """Raw blocks `(n, type_size)` uint8 of type `t` -> levels, scales, offsets (see the module docs)."""
    with np.errstate(all="ignore"):  # inf/NaN scales stay inf/NaN, as in ggml
        return _split(t, blk)


def _split(t: GGMLType, blk: np.ndarray) -> Split:
    n = blk.shape[0]
    if t is GGMLType.Q4_0:
        return Split(_u_nib(blk, 2), _f16(blk, 0), None)
    if t is GGMLType.Q4_1:
        return Split(_u_nib(blk, 4), _f16(blk, 0), _f16(blk, 2))
    if t is GGMLType.Q5_0:
        return Split(_u_q5(blk, 2), _f16(blk, 0), None)
    if t is GGMLType.Q5_1:
        return Split(_u_q5(blk, 4), _f16(blk, 0), _f16(blk, 2))
    if t is GGMLType.Q8_0:
        return Split(blk[:, 2:].view(np.int8).copy(), _f16(blk, 0), None)
    if t is GGMLType.Q8_K:
        return Split(blk[:, 4:4 + QK_K].view(np.int8).copy(), blk[:, :4].copy().view("<f4").astype(_F32), None)
    if t is GGMLType.Q2_K:
        sc = blk[:, :16]
        u = _crumbs(blk[:, 16:80].reshape(n, 2, 32)).reshape(n, 256)
        return Split(u, _f16(blk, 80) * (sc & 0xF).astype(_F32), -(_f16(blk, 82) * (sc >> 4).astype(_F32)))
    if t is GGMLType.Q3_K:
        sc = blk[:, 96:108]
        lo = np.concatenate([sc[:, :8] & 0x0F, sc[:, :8] >> 4], axis=1)
        hi = _crumbs(sc[:, 8:12]).reshape(n, 16)
        scale = ((lo | (hi << 4)).view(np.int8) - np.int8(32)).astype(_F32)
        u = _crumbs(blk[:, 32:96].reshape(n, 2, 32)).reshape(n, 8, 32)
        u |= _bits(blk[:, :32]) << 2
        return Split(u.reshape(n, 256), _f16(blk, 108) * scale, None)
    if t in (GGMLType.Q4_K, GGMLType.Q5_K):
        sc, mn = _k_scale_min(blk[:, 4:16])
        s, o = _f16(blk, 0) * sc, -(_f16(blk, 2) * mn)
        if t is GGMLType.Q4_K:
            u = np.empty((n, 4, 2, 32), np.uint8)
            _nibbles(blk[:, 16:].reshape(n, 4, 32), u)
            return Split(u.reshape(n, 256), s, o)
        u = np.empty((n, 4, 2, 32), np.uint8)
        _nibbles(blk[:, 48:].reshape(n, 4, 32), u)
        u = u.reshape(n, 8, 32)
        u |= _bits(blk[:, 16:48]) << 4
        return Split(u.reshape(n, 256), s, o)
    if t is GGMLType.Q6_K:
        u = np.empty((n, 2, 2, 64), np.uint8)
        _nibbles(blk[:, :128].reshape(n, 2, 64), u)
        u = u.reshape(n, 2, 4, 32)
        u |= _crumbs(blk[:, 128:192].reshape(n, 2, 32)) << 4
        return Split(u.reshape(n, 256), _f16(blk, 208) * blk[:, 192:208].view(np.int8).astype(_F32), None)
    raise NotImplementedError(f"no level layout for GGML type {t.name}")


def _nib_pack(u: np.ndarray) -> np.ndarray:
    """`(..., 2, k)` levels -> `(..., k)` bytes, the first half in the low nibbles."""
    return (u[..., 0, :] & 15) | (u[..., 1, :] << 4)


def _crumb_pack(u: np.ndarray) -> np.ndarray:
    """`(n, 256)` levels 0..3 -> 64 bytes (byte 32h + l holds element 128h + 32k + l at bits 2k)."""
    q = u.reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _bit_planes(bits: np.ndarray) -> np.ndarray:
    """`(n, 8, 32)` 0/1 -> `(n, 32)` bytes with plane b in bit b."""
    out = np.zeros((bits.shape[0], bits.shape[2]), np.uint8)
    for b in range(bits.shape[1]):
        out |= bits[:, b] << b
    return out


def pack_levels(t: GGMLType, u: np.ndarray) -> np.ndarray:
    """Levels `(n, block)` (as `split_blocks` gives them) -> the bytes of the type's level ranges, concatenated."""
    n = u.shape[0]
    u = u.view(np.uint8) if u.dtype == np.int8 else u.astype(np.uint8, copy=False)
    if t in (GGMLType.Q4_0, GGMLType.Q4_1):
        return _nib_pack(u.reshape(n, 2, 16))
    if t in (GGMLType.Q5_0, GGMLType.Q5_1):
        return np.concatenate([np.packbits((u >> 4) & 1, axis=1, bitorder="little"), _nib_pack(u.reshape(n, 2, 16))],
                              axis=1)
    if t in (GGMLType.Q8_0, GGMLType.Q8_K):
        return u
    if t is GGMLType.Q2_K:
        return _crumb_pack(u)
    if t is GGMLType.Q3_K:
        return np.concatenate([_bit_planes((u >> 2).reshape(n, 8, 32)), _crumb_pack(u & 3)], axis=1)
    if t is GGMLType.Q4_K:
        return _nib_pack(u.reshape(n, 4, 2, 32)).reshape(n, 128)
    if t is GGMLType.Q5_K:
        return np.concatenate([_bit_planes((u >> 4).reshape(n, 8, 32)),
                               _nib_pack((u & 15).reshape(n, 4, 2, 32)).reshape(n, 128)], axis=1)
    if t is GGMLType.Q6_K:
        q = u.reshape(n, 2, 2, 2, 32)  # [half h, nibble s, quarter c, j] = element 128h + 64s + 32c + j
        ql = (q[:, :, 0] & 15) | ((q[:, :, 1] & 15) << 4)
        hi = q >> 4
        qh = hi[:, :, 0, 0] | (hi[:, :, 0, 1] << 2) | (hi[:, :, 1, 0] << 4) | (hi[:, :, 1, 1] << 6)
        return np.concatenate([ql.reshape(n, 128), qh.reshape(n, 64)], axis=1)
    raise NotImplementedError(f"no level layout for GGML type {t.name}")


def header_bytes(t: GGMLType, blk: np.ndarray) -> np.ndarray:
    """The bytes of each block outside its level ranges (scales, mins, sums), `(n, header)`."""
    ts = blk.shape[1]
    keep = np.ones(ts, bool)
    for a, b in LAYOUTS[t].quant:
        keep[a:b] = False
    return blk[:, keep]


def join_blocks(t: GGMLType, header: np.ndarray, levels_bytes: np.ndarray) -> np.ndarray:
    """Inverse of `header_bytes` + `pack_levels`: the raw blocks `(n, type_size)`."""
    n = header.shape[0]
    ts = header.shape[1] + levels_bytes.shape[1]
    out = np.empty((n, ts), np.uint8)
    keep = np.ones(ts, bool)
    for a, b in LAYOUTS[t].quant:
        keep[a:b] = False
    out[:, keep] = header
    out[:, ~keep] = levels_bytes
    return out

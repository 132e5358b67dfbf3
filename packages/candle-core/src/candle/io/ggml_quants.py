"""GGML tensor types and vectorised numpy dequantization of their blocks.

A quantized GGML tensor is a sequence of fixed-size blocks along its first dimension (ne0, the
innermost, contiguous one): `block_size` elements stored in `type_size` bytes. Every kernel here
views the raw bytes as an `(n_blocks, type_size)` array and decodes all blocks of a chunk with whole
array numpy ops (no per-block Python), writing into the float32 output. The float arithmetic is the
same sequence of float32 roundings as ggml's C code and gguf-py's `gguf.quants.dequantize`, so the
results are bit-identical to both (checked in tests/test_gguf.py).

The type table (`GGMLType`, `GGML_BLOCK_SIZES`) is shared by the GGUF reader and (later) writer.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

import numpy as np

__all__ = ["DEQUANTIZE_TYPES", "GGML_BLOCK_SIZES", "GGMLType", "dequantize", "ggml_type", "row_nbytes"]


class GGMLType(IntEnum):
    """GGML tensor element/block types, by their id in GGUF files (ids 4, 5, 31-33, 36-38 were retired)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


QK_K = 256  # elements per super-block of the k-quants

#: `(block_size, type_size)`: elements per block and bytes per block, for every known type.
GGML_BLOCK_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4), GGMLType.F16: (1, 2), GGMLType.BF16: (1, 2), GGMLType.F64: (1, 8),
    GGMLType.I8: (1, 1), GGMLType.I16: (1, 2), GGMLType.I32: (1, 4), GGMLType.I64: (1, 8),
    GGMLType.Q4_0: (32, 2 + 16), GGMLType.Q4_1: (32, 2 + 2 + 16), GGMLType.Q5_0: (32, 2 + 4 + 16),
    GGMLType.Q5_1: (32, 2 + 2 + 4 + 16), GGMLType.Q8_0: (32, 2 + 32), GGMLType.Q8_1: (32, 4 + 4 + 32),
    GGMLType.Q2_K: (QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    GGMLType.Q3_K: (QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    GGMLType.Q4_K: (QK_K, 2 + 2 + QK_K // 2 + 12),
    GGMLType.Q5_K: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    GGMLType.Q6_K: (QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    GGMLType.Q8_K: (QK_K, 4 + QK_K + QK_K // 8),
    GGMLType.IQ2_XXS: (QK_K, 2 + QK_K // 4), GGMLType.IQ2_XS: (QK_K, 2 + QK_K // 4 + QK_K // 32),
    GGMLType.IQ3_XXS: (QK_K, 2 + QK_K // 4 + QK_K // 8), GGMLType.IQ1_S: (QK_K, 2 + QK_K // 8 + QK_K // 16),
    GGMLType.IQ4_NL: (32, 2 + 16), GGMLType.IQ3_S: (QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    GGMLType.IQ2_S: (QK_K, 2 + QK_K // 4 + QK_K // 16), GGMLType.IQ4_XS: (QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    GGMLType.IQ1_M: (QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    GGMLType.TQ1_0: (QK_K, 2 + 4 * 13), GGMLType.TQ2_0: (QK_K, 2 + 64),
    GGMLType.MXFP4: (32, 1 + 16), GGMLType.NVFP4: (64, 4 + 32), GGMLType.Q1_0: (128, 2 + 16),
}

#: Types whose plain elements numpy holds directly (one element per "block").
PLAIN_NUMPY: dict[GGMLType, str] = {
    GGMLType.F32: "<f4", GGMLType.F16: "<f2", GGMLType.F64: "<f8", GGMLType.I8: "i1", GGMLType.I16: "<i2",
    GGMLType.I32: "<i4", GGMLType.I64: "<i8",
}


def ggml_type(t: GGMLType | int | str) -> GGMLType:
    """The `GGMLType` of an id, a name (`"Q4_K"`, case-insensitive) or a `GGMLType`; ValueError if unknown."""
    if isinstance(t, GGMLType):
        return t
    if isinstance(t, str):
        try:
            return GGMLType[t.upper()]
        except KeyError:
            raise ValueError(f"unknown GGML type name {t!r}") from None
    return GGMLType(int(t))


def row_nbytes(t: GGMLType, n: int) -> int:
    """Bytes taken by `n` consecutive elements of type `t` (`n` must be a whole number of blocks)."""
    bs, ts = GGML_BLOCK_SIZES[t]
    if n % bs:
        raise ValueError(f"{n} elements are not a whole number of {t.name} blocks of {bs}")
    return n // bs * ts


# --- lookup tables and helpers ------------------------------------------------------------------
_BYTES = np.arange(256, dtype=np.uint32)
#: byte -> its four 2-bit fields (bits 0-1, 2-3, 4-5, 6-7) as 4 bytes, packed in one 4-byte item.
_CRUMBS = np.stack([(_BYTES >> s) & 3 for s in (0, 2, 4, 6)], axis=1).astype(np.uint8).view(np.uint32).ravel()
#: byte -> its 8 bits (bit 0 first) times 16, as 8 bytes packed in one 8-byte item; and the same minus 16
#: (wrapping: as int8 that is -16 or 0), which turns Q5_0's unsigned 5-bit values into signed ones.
_HIGH_BIT = np.stack([((_BYTES >> k) & 1) << 4 for k in range(8)], axis=1).astype(np.uint8).view(np.uint64).ravel()
_HIGH_BIT_MINUS_16 = (np.stack([((_BYTES >> k) & 1) << 4 for k in range(8)], axis=1) - 16).astype(np.uint8) \
    .view(np.uint64).ravel()
_UNSAFE = "unsafe"  # float outputs of integer ops: exact, the values are small integers


def _f16(blk: np.ndarray, at: int) -> np.ndarray:
    """The little-endian f16 at byte `at` of every block, as a float32 column `(n, 1)`."""
    return blk[:, at:at + 2].view("<f2").astype(np.float32)


def _crumbs(x: np.ndarray) -> np.ndarray:
    """`(..., k)` bytes -> `(..., 4, k)` uint8: the 2-bit fields at shifts 0, 2, 4, 6 of each byte."""
    c = np.take(_CRUMBS, x).view(np.uint8).reshape(*x.shape, 4)
    return np.moveaxis(c, -1, -2)


def _bits(x: np.ndarray) -> np.ndarray:
    """`(n, k)` bytes -> `(n, 8, k)` uint8: bit b of byte j at `[:, b, j]`."""
    return np.unpackbits(x, axis=1, bitorder="little").reshape(x.shape[0], x.shape[1], 8).transpose(0, 2, 1)


def _nibbles(qs: np.ndarray, out: np.ndarray) -> None:
    """Low nibbles of `qs` (..., k) into `out[..., 0, :]`, high nibbles into `out[..., 1, :]`."""
    np.bitwise_and(qs, 15, out=out[..., 0, :], casting=_UNSAFE)
    np.right_shift(qs, 4, out=out[..., 1, :], casting=_UNSAFE)


def _k_scale_min(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The eight 6-bit scales and mins packed in the 12 bytes of Q4_K/Q5_K blocks, as float32 `(n, 8)`."""
    n = scales.shape[0]
    s = scales.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


# --- block kernels: blk (n, type_size) uint8 -> out (n, block_size) float32 ----------------------
def _q4_0(blk: np.ndarray, out: np.ndarray) -> None:
    n = blk.shape[0]
    _nibbles(blk[:, 2:], out.reshape(n, 2, 16))
    out -= 8
    out *= _f16(blk, 0)


def _q4_1(blk: np.ndarray, out: np.ndarray) -> None:
    n = blk.shape[0]
    _nibbles(blk[:, 4:], out.reshape(n, 2, 16))
    out *= _f16(blk, 0)
    out += _f16(blk, 2)


def _q5(blk: np.ndarray, hi_at: int, table: np.ndarray) -> np.ndarray:
    """The 5-bit values of Q5_0/Q5_1 blocks, uint8 `(n, 32)`: the nibbles plus `table` looked up on the
    4 bytes at `hi_at` that hold the 5th bits (bit j of that little-endian u32 belongs to element j)."""
    n = blk.shape[0]
    q = np.empty((n, 2, 16), np.uint8)
    _nibbles(blk[:, hi_at + 4:hi_at + 20], q)
    q = q.reshape(n, 32)
    q += np.take(table, blk[:, hi_at:hi_at + 4]).view(np.uint8)
    return q


def _q5_0(blk: np.ndarray, out: np.ndarray) -> None:
    np.multiply(_q5(blk, 2, _HIGH_BIT_MINUS_16).view(np.int8), _f16(blk, 0), out=out)


def _q5_1(blk: np.ndarray, out: np.ndarray) -> None:
    np.multiply(_q5(blk, 4, _HIGH_BIT), _f16(blk, 0), out=out)
    out += _f16(blk, 2)


def _q8_0(blk: np.ndarray, out: np.ndarray) -> None:
    np.multiply(blk[:, 2:].view(np.int8), _f16(blk, 0), out=out)


def _q2_k(blk: np.ndarray, out: np.ndarray) -> None:
    n = blk.shape[0]
    scales = blk[:, :16]
    dl = _f16(blk, 80) * (scales & 0xF).astype(np.float32)
    ml = _f16(blk, 82) * (scales >> 4).astype(np.float32)
    out.reshape(n, 2, 4, 32)[...] = _crumbs(blk[:, 16:80].reshape(n, 2, 32))
    o = out.reshape(n, 16, 16)
    o *= dl[:, :, None]
    o -= ml[:, :, None]


def _q3_k(blk: np.ndarray, out: np.ndarray) -> None:
    n = blk.shape[0]
    sc = blk[:, 96:108]
    lo = np.concatenate([sc[:, :8] & 0x0F, sc[:, :8] >> 4], axis=1)
    hi = _crumbs(sc[:, 8:12]).reshape(n, 16)
    scale = ((lo | (hi << 4)).view(np.int8) - np.int8(32)).astype(np.float32)
    dl = _f16(blk, 108) * scale
    # value = 2 low bits + 4 * high bit - 4; the high bit of element 32*k + j is bit k of hmask byte j
    q = _crumbs(blk[:, 32:96].reshape(n, 2, 32)).reshape(n, 8, 32).view(np.int8)
    h = _bits(blk[:, :32]).view(np.int8)
    q += h << 2
    q -= 4
    o = out.reshape(n, 16, 16)
    np.multiply(q.reshape(n, 16, 16), dl[:, :, None], out=o)


def _q4_k(blk: np.ndarray, out: np.ndarray) -> None:
    n = blk.shape[0]
    sc, mn = _k_scale_min(blk[:, 4:16])
    dsc = _f16(blk, 0) * sc
    dm = _f16(blk, 2) * mn
    _nibbles(blk[:, 16:].reshape(n, 4, 32), out.reshape(n, 4, 2, 32))
    o = out.reshape(n, 8, 32)
    o *= dsc[:, :, None]
    o -= dm[:, :, None]


def _q5_k(blk: np.ndarray, out: np.ndarray) -> None:
    n = blk.shape[0]
    sc, mn = _k_scale_min(blk[:, 4:16])
    dsc = _f16(blk, 0) * sc
    dm = _f16(blk, 2) * mn
    q = np.empty((n, 4, 2, 32), np.uint8)
    _nibbles(blk[:, 48:].reshape(n, 4, 32), q)
    q = q.reshape(n, 8, 32)
    q |= _bits(blk[:, 16:48]) << 4
    o = out.reshape(n, 8, 32)
    np.multiply(q, dsc[:, :, None], out=o)
    o -= dm[:, :, None]


def _q6_k(blk: np.ndarray, out: np.ndarray) -> None:
    n = blk.shape[0]
    dl = _f16(blk, 208) * blk[:, 192:208].view(np.int8).astype(np.float32)
    # element 128*h + 64*s + 32*c + j: low 4 bits = nibble s of ql byte 64*h + 32*c + j,
    # high 2 bits = bits 2*(2*s + c) of qh byte 32*h + j
    q = np.empty((n, 2, 2, 64), np.uint8)
    _nibbles(blk[:, :128].reshape(n, 2, 64), q)
    q = q.reshape(n, 2, 4, 32)
    q |= _crumbs(blk[:, 128:192].reshape(n, 2, 32)) << 4
    o = out.reshape(n, 16, 16)
    np.subtract(q.reshape(n, 16, 16), np.float32(32), out=o)
    o *= dl[:, :, None]


def _q8_k(blk: np.ndarray, out: np.ndarray) -> None:
    np.multiply(blk[:, 4:4 + QK_K].view(np.int8), blk[:, :4].view("<f4"), out=out)


def _f16_kernel(blk: np.ndarray, out: np.ndarray) -> None:
    out[...] = blk.view("<f2")


def _bf16_kernel(blk: np.ndarray, out: np.ndarray) -> None:
    bits = out.view(np.uint32)
    bits[...] = blk.view("<u2")
    bits <<= 16


def _f32_kernel(blk: np.ndarray, out: np.ndarray) -> None:
    out[...] = blk.view("<f4")


_Kernel = Callable[[np.ndarray, np.ndarray], None]
_KERNELS: dict[GGMLType, _Kernel] = {
    GGMLType.F32: _f32_kernel, GGMLType.F16: _f16_kernel, GGMLType.BF16: _bf16_kernel,
    GGMLType.Q4_0: _q4_0, GGMLType.Q4_1: _q4_1, GGMLType.Q5_0: _q5_0, GGMLType.Q5_1: _q5_1, GGMLType.Q8_0: _q8_0,
    GGMLType.Q2_K: _q2_k, GGMLType.Q3_K: _q3_k, GGMLType.Q4_K: _q4_k, GGMLType.Q5_K: _q5_k, GGMLType.Q6_K: _q6_k,
    GGMLType.Q8_K: _q8_k,
}

#: The types `dequantize` decodes.
DEQUANTIZE_TYPES: frozenset[GGMLType] = frozenset(_KERNELS)

#: Elements decoded per chunk: the temporaries of one chunk stay in the CPU cache.
CHUNK_ELEMENTS = 1 << 17


def dequantize(data: np.ndarray, qtype: GGMLType | int | str, out: np.ndarray | None = None) -> np.ndarray:
    """Decode raw GGML bytes to float32, like `gguf.quants.dequantize` (and bit-identical to it).

    `data` is a uint8 array whose last dimension holds whole blocks (`(rows, bytes_per_row)` or flat);
    the result has shape `data.shape[:-1] + (elements_per_row,)`. `out`, if given, is a C-contiguous
    float32 array of that many elements that receives the result. Types outside `DEQUANTIZE_TYPES`
    raise `NotImplementedError`; a byte count that is not a whole number of blocks raises ValueError.
    """
    t = ggml_type(qtype)
    kernel = _KERNELS.get(t)
    if kernel is None:
        raise NotImplementedError(f"dequantization of GGML type {t.name} is not implemented "
                                  f"(supported: {', '.join(sorted(k.name for k in DEQUANTIZE_TYPES))})")
    data = np.asarray(data)
    if data.dtype != np.uint8:
        data = data.view(np.uint8) if data.flags.c_contiguous else np.ascontiguousarray(data).view(np.uint8)
    bs, ts = GGML_BLOCK_SIZES[t]
    if data.ndim == 0:
        data = data.reshape(1)
    lead, last = data.shape[:-1], data.shape[-1]
    if last % ts:
        raise ValueError(f"{last} bytes per row are not a whole number of {t.name} blocks of {ts} bytes")
    shape = (*lead, last // ts * bs)
    n_blocks = data.size // ts
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.dtype != np.float32 or not out.flags.c_contiguous or out.size != n_blocks * bs:
        raise ValueError(f"out must be a C-contiguous float32 array of {n_blocks * bs} elements")
    blocks = np.ascontiguousarray(data).reshape(n_blocks, ts)
    flat = out.reshape(n_blocks, bs)
    step = max(1, CHUNK_ELEMENTS // bs)
    with np.errstate(all="ignore"):  # inf/NaN scales give inf/NaN values, as in ggml: no warnings
        for s in range(0, n_blocks, step):
            kernel(blocks[s:s + step], flat[s:s + step])
    return out.reshape(shape)

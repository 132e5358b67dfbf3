"""Quantized-weight kernels of the numpy backend: qstore, qraw, qdequantize, qmatmul, qembedding.

Resident form (`QWeight`, what `qstore` returns) of a weight W (N, K) of a block type, transposed to K-major
order so that a tile of output columns is a set of contiguous row segments: the signed integer value of every
weight as int8 `(K, N)` (Q2_K's 2-bit levels packed two per byte instead: row j holds k = j in the low nibble
and k = j + K/2 in the high one, `(K/2, N)`), float32 scales and offsets per group of 16-32 weights
`(K/group, N)` (see `candle.quantized._layout`), and the k-quants' block header bytes so that `qraw` rebuilds
the exact GGML bytes (the 32-element types' f16 scales are rebuilt from the float32 ones). That is 1.1-1.3
bytes per weight, 28-33% of float32 (Q2_K: 27%).

`qmatmul` for a few rows of x (decode) never makes float weights: a tile of columns of the levels is widened
to float32 in a cache-sized buffer, the per-group partial dots `P[g, m, n] = x[m, group g] . u[group g, n]` come
from one batched BLAS matmul (one gemv over a contiguous (group, tile) block per group), and
`y[m, n] = sum_g s[g, n] P[g, m, n] + sum_g o[g, n] sum(x[m, group g])`. Float weights are never formed and
the widened levels stay in cache. Many rows (prefill) dequantize each tile and run one sgemm on it. Tiles
can be split over worker threads (CANDLE_QMATMUL_THREADS; numpy and BLAS release the GIL). Plain
F32/F16/BF16 weights are kept as stored (row-major) and cast per tile.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np

from ..dtype import DType, float32

__all__ = ["GEMM_ROWS", "QWeight", "QuantKernels", "TILE_ELEMENTS"]

Shape = tuple[int, ...]
_F32 = np.float32
_PLAIN = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}  # by GGML type name
_F16_HEADER = frozenset({"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"})


def _lib() -> Any:
    """candle.quantized._layout, imported on the first quantized op (it pulls in candle.io, which the backend
    does not need before)."""
    from ..quantized import _layout

    return _layout

#: Elements of one widened tile (float32: 2 MiB; measured best for SmolLM2's shapes, docs/quantized.md).
TILE_ELEMENTS = 1 << 19
#: Rows of x from which qmatmul dequantizes tiles and runs sgemm instead of the per-group dots.
GEMM_ROWS = 8
#: Level widths kept two per byte (widening nibbles costs ~40% more than casting int8, see docs/quantized.md);
#: wider levels are int8. Only Q2_K is packed: in int8 its 16-element groups would take 39% of float32.
PACK_BITS = 2


class QWeight:
    """The CPU backend's resident form of a quantized weight (see the module docs)."""

    __slots__ = ("cols", "header", "layout", "levels", "mm_offsets", "offsets", "packed", "qtype", "scales", "shape")

    def __init__(self, qtype: Any, shape: tuple[int, int], levels: np.ndarray, scales: np.ndarray | None,
                 offsets: np.ndarray | None, mm_offsets: np.ndarray | None, header: np.ndarray | None,
                 packed: bool, cols: int = 0, layout: Any = None) -> None:
        self.qtype = qtype  # candle.io.ggml_quants.GGMLType
        self.shape = shape
        # (tiles, K/2, cols) uint8 nibble pairs or (tiles, K, cols) int8, columns zero-padded to tiles * cols;
        # plain types: the stored (N, K) array
        self.levels = levels
        self.scales = scales  # (K/group, N) float32
        self.offsets = offsets  # (K/group, N) float32, the type's o (None when it has none)
        # offsets of the levels as stored: o - bias*s for biased nibbles, else o
        self.mm_offsets = mm_offsets
        self.header = header  # (N, n_blocks * header bytes) uint8, or None (32-element types: from scales)
        self.packed = packed  # levels are nibble pairs
        self.cols = cols  # columns (output features) per tile
        self.layout = layout  # the type's candle.quantized._layout.Layout (None for plain types)

    def tile_ranges(self) -> list[tuple[int, int]]:
        """The column range `(n0, n1)` of every stored tile."""
        n, c = self.shape[0], self.cols
        return [(n0, min(n, n0 + c)) for n0 in range(0, n, c)]

    def level_matrix(self) -> np.ndarray:
        """All stored levels as one K-major matrix `(K or K/2, N)` (a copy)."""
        lv = self.levels
        return lv.transpose(1, 0, 2).reshape(lv.shape[1], -1)[:, :self.shape[0]]

    @property
    def nbytes(self) -> int:
        """Resident bytes."""
        parts = {id(a): a for a in (self.levels, self.scales, self.offsets, self.mm_offsets, self.header)
                 if a is not None}
        return sum(a.nbytes for a in parts.values())


def _workers() -> int:
    """Threads qmatmul splits its tiles over: CANDLE_QMATMUL_THREADS, default 1."""
    try:
        return max(1, int(os.environ.get("CANDLE_QMATMUL_THREADS", "1")))
    except ValueError:
        return 1


_POOLS: dict[int, Any] = {}


def _pool(n: int) -> Any:
    """A thread pool of `n` workers (concurrent.futures is imported only when threads are asked for)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = _POOLS.get(n)
    if pool is None:
        pool = _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="candle-qmatmul")
    return pool


def _store(raw: np.ndarray, t: Any, shape: tuple[int, int]) -> QWeight:
    n, k = shape
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(n, -1)
    if t.name in _PLAIN:
        plain = raw.view(_PLAIN[t.name]).reshape(n, k).copy()
        return QWeight(t, shape, plain, None, None, None, None, False)
    lib = _lib()
    lay = lib.LAYOUTS[t]
    blk = raw.reshape(n * k // lib.GGML_BLOCK_SIZES[t][0], -1)
    sp = lib.split_blocks(t, blk)
    groups = k // lay.group
    s = np.ascontiguousarray(sp.s.reshape(n, groups).T, dtype=_F32)
    o = np.ascontiguousarray(sp.o.reshape(n, groups).T, dtype=_F32) if sp.o is not None else None
    # the 32-element types' headers are their f16 scale (and min), which s (and o) hold exactly (NaN payloads
    # aside: then the header is kept)
    exact = t.name in _F16_HEADER and not np.isnan(sp.s).any() and (sp.o is None or not np.isnan(sp.o).any())
    header = None if exact else lib.header_bytes(t, blk).reshape(n, -1).copy()
    u = sp.u.reshape(n, k)
    n_tiles = max(1, -(-n * k // TILE_ELEMENTS))
    cols = -(-n // n_tiles)
    if lay.bits <= PACK_BITS and k % 2 == 0:
        h = k // 2
        mm = (o - s * _F32(lay.bias) if o is not None else -(s * _F32(lay.bias))) if lay.bias else o
        return QWeight(t, shape, _tile_major(u[:, :h] | (u[:, h:] << 4), cols), s, o, mm, header, True, cols, lay)
    if lay.bits < 8:
        u = (u.astype(np.int16) - lay.bias).astype(np.int8)  # signed values
    return QWeight(t, shape, _tile_major(u.view(np.int8), cols), s, o, o, header, False, cols, lay)


def _tile_major(rows: np.ndarray, cols: int) -> np.ndarray:
    """Row-major levels (N, L) -> (tiles, L, cols): each tile of `cols` columns of the transpose contiguous."""
    n, length = rows.shape
    tiles = -(-n // cols)
    out = np.zeros((tiles, length, cols), rows.dtype)
    for ti in range(tiles):
        part = rows[ti * cols:(ti + 1) * cols]
        out[ti, :, :part.shape[0]] = part.T
    return out


def _levels_into(lv: np.ndarray, packed: bool, out: np.ndarray) -> None:
    """Stored levels `lv` (L, cols) widened into the float32 buffer `out` (K, cols)."""
    if packed:
        h = lv.shape[0]
        np.bitwise_and(lv, 15, out=out[:h], casting="unsafe")
        np.right_shift(lv, 4, out=out[h:], casting="unsafe")
    else:
        out[...] = lv


def _tile_levels(w: QWeight, n0: int, n1: int) -> np.ndarray:
    """The stored levels of columns n0:n1, which lie in one tile."""
    ti = n0 // w.cols
    c0 = n0 - ti * w.cols
    return w.levels[ti, :, c0:c0 + n1 - n0]


def _tile_values(w: QWeight, n0: int, n1: int, out: np.ndarray) -> np.ndarray:
    """Columns n0:n1 (within one tile) of W^T (K, n1-n0) dequantized into `out`, bit-identical to the reference."""
    _levels_into(_tile_levels(w, n0, n1), w.packed, out)
    lay = w.layout
    o3 = out.reshape(-1, lay.group, n1 - n0)
    if w.packed and lay.bias:
        o3 -= _F32(lay.bias)
    assert w.scales is not None
    o3 *= w.scales[:, None, n0:n1]
    if w.offsets is not None:
        o3 += w.offsets[:, None, n0:n1]
    return out


def _plain_rows(w: QWeight, n0: int, n1: int) -> np.ndarray:
    """Rows n0:n1 (n1-n0, K) of a plain-type weight as float32."""
    rows = w.levels[n0:n1]
    if w.qtype.name == "BF16":
        return (rows.astype(np.uint32) << np.uint32(16)).view(_F32)
    return rows.astype(_F32, copy=False)


_LOCAL = threading.local()


def _buffer(k: int, nt: int) -> np.ndarray:
    """A float32 (k, nt) scratch array of this thread (reused: decode allocates nothing per tile)."""
    b = getattr(_LOCAL, "buf", None)
    if b is None or b.size < k * nt:
        b = _LOCAL.buf = np.empty(max(k * nt, TILE_ELEMENTS), _F32)
    return b[:k * nt].reshape(k, nt)


def _matmul_tile(w: QWeight, x: np.ndarray, x3: np.ndarray | None, xs: np.ndarray | None, n0: int, n1: int,
                 y: np.ndarray) -> None:
    """y[:, n0:n1] = x @ W[n0:n1].T for x (M, K) float32; x3: x as (groups, M, group) for the per-group dots
    (None: dequantize the tile and run sgemm); xs: the group sums of x (M, groups)."""
    if w.layout is None:
        np.matmul(x, _plain_rows(w, n0, n1).T, out=y[:, n0:n1])
        return
    k = w.shape[1]
    nt = n1 - n0
    buf = _buffer(k, nt)
    if x3 is None:
        np.matmul(x, _tile_values(w, n0, n1, buf), out=y[:, n0:n1])
        return
    assert w.scales is not None
    _levels_into(_tile_levels(w, n0, n1), w.packed, buf)
    groups, m, g = x3.shape
    p = np.matmul(x3, buf.reshape(groups, g, nt))  # (groups, m, nt)
    s = w.scales[:, n0:n1]
    out = y[:, n0:n1]
    if m == 1:
        np.einsum("gn,gn->n", p[:, 0], s, out=out[0])
    else:
        np.einsum("gmn,gn->mn", p, s, out=out)
    if w.mm_offsets is not None and xs is not None:
        out += xs @ w.mm_offsets[:, n0:n1]


def _tiles(w: QWeight) -> list[tuple[int, int]]:
    if w.layout is not None:
        return w.tile_ranges()
    n, k = w.shape
    step = max(1, TILE_ELEMENTS // max(1, k))
    return [(r, min(n, r + step)) for r in range(0, n, step)]


class QuantKernels:
    """Mixed into `NumpyBackend`: the quantized fused kernels of `candle.backend.FUSED_KERNELS`."""

    def qstore(self, raw: np.ndarray, qtype: str, shape: Shape) -> QWeight:
        from ..io.ggml_quants import ggml_type

        t = ggml_type(qtype)
        layouts = _lib().LAYOUTS
        if t.name not in _PLAIN and t not in layouts:
            supported = sorted([*_PLAIN, *(x.name for x in layouts)])
            raise NotImplementedError(f"qstore: GGML type {t.name} is not supported on the CPU "
                                      f"(supported: {', '.join(supported)})")
        with np.errstate(all="ignore"):
            return _store(raw, t, (int(shape[0]), int(shape[1])))

    def qraw(self, w: QWeight, qtype: str, shape: Shape) -> np.ndarray:
        t = w.qtype
        n, k = w.shape
        if w.layout is None:
            return np.ascontiguousarray(w.levels).view(np.uint8).reshape(n, -1).copy()
        lib = _lib()
        lay = w.layout
        bs, _ = lib.GGML_BLOCK_SIZES[t]
        if w.packed:
            h = k // 2
            lv = w.level_matrix().T
            u = np.empty((n, k), np.uint8)
            np.bitwise_and(lv, 15, out=u[:, :h])
            np.right_shift(lv, 4, out=u[:, h:])
        elif lay.bits == 8 or lay.bias == 0:
            u = np.ascontiguousarray(w.level_matrix().T).view(np.uint8)
        else:
            u = (w.level_matrix().T.astype(np.int16) + lay.bias).astype(np.uint8)
        nb = n * k // bs
        if w.header is not None:
            header = w.header.reshape(nb, -1)
        else:  # a 32-element type: its f16 scale (and min) come back exactly from s (and o)
            assert w.scales is not None
            parts = [w.scales.T.reshape(nb, 1)] + ([w.offsets.T.reshape(nb, 1)] if w.offsets is not None else [])
            header = np.concatenate([p.astype("<f2").view(np.uint8) for p in parts], axis=1)
        return lib.join_blocks(t, header, lib.pack_levels(t, u.reshape(nb, bs))).reshape(n, -1)

    def qdequantize(self, w: QWeight, qtype: str, shape: Shape, dtype: DType) -> np.ndarray:
        n, k = w.shape
        out = np.empty((n, k), _F32)
        with np.errstate(all="ignore"):
            for n0, n1 in _tiles(w):
                out[n0:n1] = _plain_rows(w, n0, n1) if w.layout is None else \
                    _tile_values(w, n0, n1, np.empty((k, n1 - n0), _F32)).T
        return out if dtype is float32 else out.astype(dtype.numpy)

    def qmatmul(self, x: np.ndarray, w: QWeight, qtype: str, shape_x: Shape, shape_w: Shape,
                dtype: DType) -> np.ndarray:
        n, k = w.shape
        m = math.prod(shape_x[:-1])
        x2 = np.asarray(x).reshape(m, k)
        if x2.dtype != _F32:
            x2 = x2.astype(_F32)
        y = np.empty((m, n), _F32)
        xs = x3 = None
        if w.layout is not None and m < GEMM_ROWS:
            g = w.layout.group
            x3 = x2.reshape(m, k // g, g)
            xs = x3.sum(axis=2, dtype=_F32)
            x3 = x3.transpose(1, 0, 2)
        tiles = _tiles(w)
        nw = _workers()
        # (numpy's float warnings from this module are silenced by the backend's filter, like PyTorch's)
        if len(tiles) > 1 and nw > 1:
            list(_pool(nw).map(lambda rr: _matmul_tile(w, x2, x3, xs, rr[0], rr[1], y), tiles))
        else:
            for n0, n1 in tiles:
                _matmul_tile(w, x2, x3, xs, n0, n1, y)
        out = y.reshape(*shape_x[:-1], n)
        return out if dtype is float32 else out.astype(dtype.numpy)

    def qembedding(self, w: QWeight, qtype: str, shape_w: Shape, ids: np.ndarray, n_ids: int,
                   dtype: DType) -> np.ndarray:
        n, k = w.shape
        idx = np.asarray(ids).reshape(-1)
        check = getattr(self, "_check_range", None)
        if check is not None:
            check("qembedding", idx, n)
        with np.errstate(all="ignore"):
            if w.layout is None:
                sub = QWeight(w.qtype, (len(idx), k), w.levels[idx], None, None, None, None, False)
                out = _plain_rows(sub, 0, len(idx))
            else:
                lv = w.levels[idx // w.cols, :, idx % w.cols].T[None]  # (1, L, ids): one tile of the rows
                sc, of = (a[:, idx] if a is not None else None for a in (w.scales, w.offsets))
                sub = QWeight(w.qtype, (len(idx), k), lv, sc, of, None, None, w.packed, max(1, len(idx)), w.layout)
                out = _tile_values(sub, 0, len(idx), np.empty((k, len(idx)), _F32)).T
        out = np.ascontiguousarray(out)
        return out if dtype is float32 else out.astype(dtype.numpy)

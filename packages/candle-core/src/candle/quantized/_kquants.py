"""Quantizers of the k-quant types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K), from float32.

gguf-py only dequantizes these types, so this is a numpy rendering of the logic of ggml's reference
quantizers (`quantize_row_q*_K_ref` with their helpers `make_qkx2_quants`, `make_qx_quants`,
`make_q3_quants`): the same scale searches, the same float32 expressions and the same order of every
running sum. The per-element loops of the C code become whole-array operations over all sub-blocks
at once; the sums that C accumulates element by element are `cumsum`s (sequential, unlike numpy's
pairwise `sum`); the only Python loops are over the fixed number of search steps or of elements of
one sub-block, each of them vectorised over every block.

The bytes equal those of ggml-quants.c compiled for baseline x86-64 (ggml-base's flags), checked in
tests/test_quantized.py against its output (fixtures/make_ggml_quants_reference.py). A build that lets
the compiler contract `a * b + c` into fused multiply-adds (e.g. `-march=native`) rounds some sums once
instead of twice and differs in about 1% of blocks.
"""

from __future__ import annotations

import numpy as np

from ..io.ggml_quants import _k_scale_min

__all__ = ["quantize_q2_k", "quantize_q3_k", "quantize_q4_k", "quantize_q5_k", "quantize_q6_k", "quantize_q8_k"]

_F32 = np.float32
_EPS = _F32(1e-15)  # ggml's GROUP_MAX_EPS


def _seq_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis in order, element by element in float32 (what a C `for` loop computes)."""
    return np.cumsum(a, axis=-1, dtype=_F32)[..., -1]


def _nearest(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """`MAX(lo, MIN(hi, nearest_int(v)))`: round half to even, clamped, as float32 (NaN -> lo)."""
    with np.errstate(invalid="ignore"):
        r = np.clip(np.rint(v), lo, hi)
    return np.nan_to_num(r, nan=lo).astype(_F32)


def _f16_round(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the f16 bytes `(n, 2)`, the f16 value back in float32 `(n,)`) of a float32 vector."""
    h = v.astype("<f2")
    return h.view(np.uint8).reshape(-1, 2), h.astype(_F32)


def _signed_absmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the first element of largest magnitude along the last axis, that magnitude)."""
    ax = np.abs(x)
    i = ax.argmax(axis=-1)[..., None]
    return np.take_along_axis(x, i, axis=-1)[..., 0], np.take_along_axis(ax, i, axis=-1)[..., 0]


def _safe_div(a: np.ndarray | float, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.divide(a, b, dtype=_F32)


# --- the scale searches ----------------------------------------------------------------------------
def make_qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                     use_mad: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ggml's scale-and-min search of sub-blocks `x` `(m, n)` with weights `w`: (scale (m,), -min (m,),
    levels L (m, n) in 0..nmax as float32)."""
    mn0 = np.minimum(x.min(axis=-1), _F32(0))
    mn = mn0
    mx = x.max(axis=-1)
    sum_w = _seq_sum(w)
    sum_x = _seq_sum(w * x)

    def err(scale: np.ndarray, level: np.ndarray, off: np.ndarray) -> np.ndarray:
        diff = scale[:, None] * level + off[:, None] - x
        return _seq_sum(w * (np.abs(diff) if use_mad else diff * diff))

    iscale = _safe_div(_F32(nmax), mx - mn)
    scale = _safe_div(_F32(1), iscale)
    level = _nearest(iscale[:, None] * (x - mn[:, None]), 0, nmax)
    best = err(scale, level, mn)
    for step in range(nstep + 1):
        # as in the C loop, a better (scale, min) found at one step changes the grid of the next ones
        isc = _safe_div(_F32(rmin) + _F32(rdelta) * _F32(step) + _F32(nmax), mx - mn)
        aux = _nearest(isc[:, None] * (x - mn[:, None]), 0, nmax)
        wl = w * aux
        sum_l, sum_l2, sum_xl = _seq_sum(wl), _seq_sum(wl * aux), _seq_sum(wl * x)
        d = sum_w * sum_l2 - sum_l * sum_l
        this_scale = _safe_div(sum_w * sum_xl - sum_x * sum_l, d)
        this_min = _safe_div(sum_l2 * sum_x - sum_l * sum_xl, d)
        pos = this_min > 0
        this_min = np.where(pos, _F32(0), this_min)
        this_scale = np.where(pos, _safe_div(sum_xl, sum_l2), this_scale)
        with np.errstate(invalid="ignore"):
            cur = err(this_scale, aux, this_min)
            better = (d > 0) & (cur < best)
        level = np.where(better[:, None], aux, level)
        best = np.where(better, cur, best)
        scale = np.where(better, this_scale, scale)
        mn = np.where(better, this_min, mn)
    flat = mx == mn0
    level = np.where(flat[:, None], _F32(0), level)
    scale = np.where(flat, _F32(0), scale)
    mn = np.where(flat, mn0, mn)
    return scale.astype(_F32), (-mn).astype(_F32), level


def make_qx_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's symmetric scale search (`rmse_type` 1, no importance weights) of sub-blocks `x` `(m, n)`:
    (scale (m,), levels L (m, n) in 0..2*nmax-1 as float32)."""
    mx, amax = _signed_absmax(x)
    zero = amax < _EPS
    w = x * x
    wx = w * x

    def levels(isc: np.ndarray) -> np.ndarray:
        return _nearest(isc[:, None] * x, -nmax, nmax - 1)

    def sums(lv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _seq_sum(wx * lv), _seq_sum(w * lv * lv)

    iscale = _safe_div(_F32(-nmax), mx)
    lv = levels(iscale)
    sumlx, suml2 = sums(lv)
    scale = np.where(suml2 != 0, _safe_div(sumlx, suml2), _F32(0))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        isc = _safe_div(-(_F32(nmax) + _F32(0.1) * _F32(step)), mx)
        cand = levels(isc)
        slx, sl2 = sums(cand)
        with np.errstate(invalid="ignore"):
            upd = (sl2 > 0) & (slx * slx > best * sl2)
        lv = np.where(upd[:, None], cand, lv)
        scale = np.where(upd, _safe_div(slx, sl2), scale)
        best = np.where(upd, scale * slx, best)
    lv = np.where(zero[:, None], _F32(0), lv + _F32(nmax))
    return np.where(zero, _F32(0), scale).astype(_F32), lv


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """ggml's `make_q3_quants(..., do_rmse=true)` of sub-blocks `x` `(m, n)`: (scale, levels 0..2*nmax-1)."""
    mx, amax = _signed_absmax(x)
    zero = amax < _EPS
    iscale = _safe_div(_F32(-nmax), mx)
    lv = _nearest(iscale[:, None] * x, -nmax, nmax - 1)
    w = x * x
    wx = w * x
    sumlx = _seq_sum(wx * lv)
    suml2 = _seq_sum(w * lv * lv)
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(5):  # a pass that changes nothing leaves the state as it was: no early exit needed
            for i in range(x.shape[1]):
                li, wi, wxi, xi = lv[:, i], w[:, i], wx[:, i], x[:, i]
                slx = sumlx - wxi * li
                sl2 = suml2 - wi * li * li
                new = _nearest(xi * sl2 / slx, -nmax, nmax - 1)
                slx2 = slx + wxi * new
                sl22 = sl2 + wi * new * new
                ok = (slx > 0) & (new != li) & (sl22 > 0) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
                lv[:, i] = np.where(ok, new, li)
                sumlx = np.where(ok, slx2, sumlx)
                suml2 = np.where(ok, sl22, suml2)
        scale = sumlx / suml2
    lv = np.where(zero[:, None], _F32(0), lv + _F32(nmax))
    return np.where(zero, _F32(0), scale).astype(_F32), lv


# --- packing helpers --------------------------------------------------------------------------------
def _u8(v: np.ndarray) -> np.ndarray:
    """float32 small integers -> uint8 (negative values wrap, like C's conversion to uint8_t)."""
    return v.astype(np.int64).astype(np.uint8)


def _pack_k_scales(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins `(n, 8)` uint8 -> the 12 packed bytes of Q4_K/Q5_K."""
    out = np.zeros((ls.shape[0], 12), np.uint8)
    out[:, 0:4] = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    out[:, 4:8] = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    out[:, 8:12] = (ls[:, 4:] & 0xF) | ((lm[:, 4:] & 0xF) << 4)
    return out


def _pack_crumbs(lv: np.ndarray) -> np.ndarray:
    """Levels 0..3 `(n, 256)` -> 64 bytes: for each half h, byte 32h + l holds elements 128h + 32k + l at bits 2k."""
    q = _u8(lv).reshape(-1, 2, 4, 32)
    return (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(-1, 64)


def _requant(x: np.ndarray, lv: np.ndarray, d: np.ndarray, dm: np.ndarray | None, lo: int, hi: int) -> np.ndarray:
    """Levels `clamp(nearest((x + dm) / d))` per sub-block (`x` `(n, s, g)`, d/dm `(n, s)`); where d == 0 the
    levels of the search `lv` stay."""
    num = x + dm[..., None] if dm is not None else x
    new = _nearest(_safe_div(num, d[..., None]), lo, hi)
    return np.where((d == 0)[..., None], lv, new)


def _k_quant_scales(x: np.ndarray, nmax: int, rmin: float, nstep: int) -> tuple[np.ndarray, np.ndarray]:
    """The shared first half of Q4_K/Q5_K: header bytes (d, dmin, 12 scale bytes) `(n, 16)` and levels `(n, 256)`."""
    nb = x.shape[0]
    xs = x.reshape(nb, 8, 32)
    av = np.sqrt(_seq_sum(xs * xs) / _F32(32))
    w = av[..., None] + np.abs(xs)
    scales, mins, lv = make_qkx2_quants(xs.reshape(-1, 32), w.reshape(-1, 32), nmax, rmin, 0.1, nstep, False)
    scales, mins = scales.reshape(nb, 8), mins.reshape(nb, 8)
    max_scale = np.maximum(np.nan_to_num(scales, nan=0.0).max(axis=1), _F32(0))
    max_min = np.maximum(np.nan_to_num(mins, nan=0.0).max(axis=1), _F32(0))
    inv_s = np.where(max_scale > 0, _safe_div(_F32(63), max_scale), _F32(0))
    inv_m = np.where(max_min > 0, _safe_div(_F32(63), max_min), _F32(0))
    ls = np.minimum(_u8(np.rint(inv_s[:, None] * scales)), 63)
    lm = np.minimum(_u8(np.rint(inv_m[:, None] * mins)), 63)
    packed = _pack_k_scales(ls, lm)
    d_b, d = _f16_round(max_scale / _F32(63))
    m_b, dmin = _f16_round(max_min / _F32(63))
    sc, mn = _k_scale_min(packed)
    lv = _requant(xs, lv.reshape(nb, 8, 32), d[:, None] * sc, dmin[:, None] * mn, 0, nmax)
    return np.concatenate([d_b, m_b, packed], axis=1), lv.reshape(nb, 256)


# --- the block quantizers: float32 (n, 256) -> bytes (n, type_size) --------------------------------------
def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    head, lv = _k_quant_scales(x, 15, -1.0, 20)
    q = _u8(lv).reshape(-1, 4, 2, 32)
    return np.concatenate([head, (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(-1, 128)], axis=1)


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    head, lv = _k_quant_scales(x, 31, -0.5, 15)
    q = _u8(lv)
    hi = (q >> 4).reshape(-1, 8, 32)
    qh = np.zeros((q.shape[0], 32), np.uint8)
    for k in range(8):
        qh |= hi[:, k] << k
    lo = (q & 15).reshape(-1, 4, 2, 32)
    return np.concatenate([head, qh, (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(-1, 128)], axis=1)


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    xs = x.reshape(nb, 16, 16)
    scales, lv = make_qx_quants(xs.reshape(-1, 16), 32)
    scales = scales.reshape(nb, 16)
    max_scale, max_abs = _signed_absmax(scales)
    zero = max_abs < _EPS
    iscale = _safe_div(_F32(-128), max_scale)
    d_b, d = _f16_round(_safe_div(_F32(1), iscale))
    sc = np.minimum(np.nan_to_num(np.rint(iscale[:, None] * scales), nan=0.0), 127).astype(np.int64).astype(np.int8)
    lv = _requant(xs, lv.reshape(nb, 16, 16) - _F32(32), d[:, None] * sc.astype(_F32), None, -32, 31) + _F32(32)
    q = _u8(lv).reshape(nb, 2, 2, 2, 32)  # [half h, nibble s, quarter c, j] = element 128h + 64s + 32c + j
    ql = (q[:, :, 0] & 15) | ((q[:, :, 1] & 15) << 4)  # (nb, 2, 2, 32): byte 64h + 32c + j
    hi = q >> 4
    qh = hi[:, :, 0, 0] | (hi[:, :, 0, 1] << 2) | (hi[:, :, 1, 0] << 4) | (hi[:, :, 1, 1] << 6)
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8), d_b], axis=1)
    out[zero] = 0
    return out


def quantize_q3_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    xs = x.reshape(nb, 16, 16)
    scales, lv = make_q3_quants(xs.reshape(-1, 16), 4)
    scales = scales.reshape(nb, 16)
    max_scale, _ = _signed_absmax(np.nan_to_num(scales, nan=0.0))
    has = max_scale != 0
    iscale = _safe_div(_F32(-32), max_scale)
    raw = np.nan_to_num(np.rint(iscale[:, None] * scales), nan=0.0).astype(np.int64).astype(np.int8)
    lvl = (np.clip(raw.astype(np.int64), -32, 31) + 32).astype(np.uint8)
    lvl[~has] = 0
    packed = np.zeros((nb, 12), np.uint8)
    packed[:, :8] = (lvl[:, :8] & 0xF) | ((lvl[:, 8:] & 0xF) << 4)
    top = (lvl >> 4).reshape(nb, 4, 4)  # [j // 4, j % 4]
    packed[:, 8:] = top[:, 0] | (top[:, 1] << 2) | (top[:, 2] << 4) | (top[:, 3] << 6)
    d_b, d = _f16_round(np.where(has, _safe_div(_F32(1), iscale), _F32(0)))
    sc = lvl.astype(_F32) - _F32(32)
    lv = _requant(xs, lv.reshape(nb, 16, 16) - _F32(4), d[:, None] * sc, None, -4, 3) + _F32(4)
    q = _u8(lv).reshape(nb, 256)
    hi = (q >> 2).reshape(nb, 8, 32)
    hmask = np.zeros((nb, 32), np.uint8)
    for b in range(8):
        hmask |= hi[:, b] << b
    return np.concatenate([hmask, _pack_crumbs(q & 3), packed, d_b], axis=1)


def quantize_q2_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    xs = x.reshape(nb, 16, 16)
    scales, mins, lv = make_qkx2_quants(xs.reshape(-1, 16), np.abs(xs).reshape(-1, 16), 3, -0.5, 0.1, 15, True)
    scales, mins = scales.reshape(nb, 16), mins.reshape(nb, 16)
    max_scale = np.maximum(np.nan_to_num(scales, nan=0.0).max(axis=1), _F32(0))
    max_min = np.maximum(np.nan_to_num(mins, nan=0.0).max(axis=1), _F32(0))
    q4 = _F32(15)
    ls = np.where((max_scale > 0)[:, None], _u8(np.nan_to_num(np.rint(_safe_div(q4, max_scale)[:, None] * scales))),
                  np.uint8(0)).astype(np.uint8)
    lm = np.where((max_min > 0)[:, None], _u8(np.nan_to_num(np.rint(_safe_div(q4, max_min)[:, None] * mins))),
                  np.uint8(0)).astype(np.uint8)
    packed = ls | (lm << 4)
    d_b, d = _f16_round(np.where(max_scale > 0, max_scale / q4, _F32(0)))
    m_b, dmin = _f16_round(np.where(max_min > 0, max_min / q4, _F32(0)))
    dd = d[:, None] * (packed & 0xF).astype(_F32)
    dm = dmin[:, None] * (packed >> 4).astype(_F32)
    lv = _requant(xs, lv.reshape(nb, 16, 16), dd, dm, 0, 3)
    return np.concatenate([packed, _pack_crumbs(lv.reshape(nb, 256)), d_b, m_b], axis=1)


def quantize_q8_k(x: np.ndarray) -> np.ndarray:
    nb = x.shape[0]
    mx, amax = _signed_absmax(x)
    zero = amax == 0
    iscale = _safe_div(_F32(-127), mx)
    q = np.minimum(np.nan_to_num(np.rint(iscale[:, None] * x), nan=0.0), 127).astype(np.int64)
    q[zero] = 0
    bsums = q.reshape(nb, 16, 16).sum(axis=2).astype("<i2")
    d = np.where(zero, _F32(0), _safe_div(_F32(1), iscale)).astype("<f4")
    return np.concatenate([d.view(np.uint8).reshape(nb, 4), q.astype(np.int8).view(np.uint8),
                           bsums.view(np.uint8).reshape(nb, 32)], axis=1)

"""Fused attention kernels of the numpy backend (rope, sdpa).

float16 and bfloat16 inputs are computed in float32, like the rest of the CPU backend.

`sdpa` is the hot path of LLM inference. It never repeats K/V for grouped-query attention: the
G query heads that share one kv head are stacked as the rows of one matrix, so each kv head is one
BLAS call ([G*L, E] x [E, S]); with few rows (the decode step) the scores are computed as
(K Q^T)^T once there are more than a few hundred keys, which OpenBLAS then runs several times faster
than Q K^T with a transposed K. The scale is
folded into Q (L*E multiplies, not L*S), the softmax runs in place on the score matrix, and its
normalisation is applied to the [L, Ev] output rather than to the [L, S] probabilities. Long
prefills are processed in blocks of query rows that bound the score matrix; causal prefills are
split into blocks (L/8 rows, at least 32) that only multiply the keys their rows can see (about
half the work of a square causal mask). A decode step (L = 1, causal) needs no mask at all.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dtype import DType, bfloat16, float16

Shape = tuple[int, ...]
_F32 = np.dtype(np.float32)
_HALF = (float16, bfloat16)
_SCORE_BLOCK = 1 << 22  # elements of the score matrix per block of query rows (16 MiB in float32)
_CAUSAL_ROWS = 32  # smallest block of query rows when a causal prefill is split to skip hidden keys
_FEW_ROWS = 48  # up to this many query rows per kv head, scores are computed as (K Q^T)^T (measured)...
_FEW_KEYS = 384  # ...when there are more keys than this (below, OpenBLAS runs Q K^T faster: measured)


def _f(a: np.ndarray, dtype: DType) -> np.ndarray:
    return a.astype(_F32) if dtype in _HALF else a


class AttentionKernels:
    """Mixed into `NumpyBackend`."""

    def rope(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, shape_x: Shape, shape_cs: Shape,
             interleaved: bool, dtype: DType, out: np.ndarray | None = None) -> np.ndarray:
        """Rotary embedding of x [B, H, S, D] with cos/sin [B|1, S, D/2] (see `candle.ops.attention.rope`),
        into a new array or into `out` (x's shape and dtype, any strides; it may be x itself).

        x is viewed as its rotation pairs, `[..., 2, D/2]` (or `[..., D/2, 2]` interleaved), so the rotation
        is four array passes: t = swap(x) * sin, t's first member negated, out = x * cos + t (the same
        roundings as `a*cos - b*sin`, `b*cos + a*sin`)."""
        xf = _f(x, dtype)
        h = shape_x[-1] // 2
        if out is not None and out.dtype == xf.dtype and (out is x or not np.may_share_memory(out, x)):
            dst = out
        else:
            dst = np.empty(shape_x, dtype=xf.dtype)
        pairs = shape_x[:-1] + ((h, 2) if interleaved else (2, h))
        xr = xf.reshape(pairs)
        dr = xr if dst is x else dst.reshape(pairs)
        if (dst is x and xr.base is None) or not np.may_share_memory(dr, dst):  # a layout reshape had to copy
            self._rope_halves(xf, cos, sin, dst, h, interleaved, dtype)
        else:
            c, s = _f(cos, dtype)[:, None], _f(sin, dtype)[:, None]  # [Bc, 1, S, D/2]
            if interleaved:
                t = np.multiply(xr[..., ::-1], s[..., None])
                t0 = t[..., 0]
                np.negative(t0, out=t0)
                np.multiply(xr, c[..., None], out=dr)
            else:
                t = np.multiply(xr[..., ::-1, :], s[..., None, :])
                t0 = t[..., 0, :]
                np.negative(t0, out=t0)
                np.multiply(xr, c[..., None, :], out=dr)
            dr += t
        if out is None:
            return dst if dst.dtype == dtype.numpy else dst.astype(dtype.numpy)
        if dst is not out:
            np.copyto(out, dst, casting="unsafe")
        return out

    @staticmethod
    def _rope_halves(xf: np.ndarray, cos: np.ndarray, sin: np.ndarray, dst: np.ndarray, h: int, interleaved: bool,
                     dtype: DType) -> None:
        """rope on strided halves (any layout), written into `dst` (which may be `xf`)."""
        c, s = _f(cos, dtype)[:, None], _f(sin, dtype)[:, None]
        if interleaved:
            x1, x2, o1, o2 = xf[..., 0::2], xf[..., 1::2], dst[..., 0::2], dst[..., 1::2]
        else:
            x1, x2, o1, o2 = xf[..., :h], xf[..., h:], dst[..., :h], dst[..., h:]
        t1, t2 = np.multiply(x1, s), np.multiply(x2, s)  # both products with sin first: dst may be xf
        np.multiply(x1, c, out=o1)
        o1 -= t2
        np.multiply(x2, c, out=o2)
        o2 += t1

    def sdpa(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None, shape_q: Shape,
             shape_k: Shape, shape_v: Shape, shape_mask: Shape | None, mask_kind: str | None, scale: float,
             causal_offset: int | None, dtype: DType) -> np.ndarray:
        """Scaled dot-product attention (see `FUSED_KERNELS["sdpa"]`)."""
        b, hq, lq, e = shape_q
        hk, s = shape_k[1], shape_k[2]
        ev = shape_v[3]
        g = hq // hk
        half = dtype in _HALF
        if (mask is None and not half and g * lq <= _FEW_ROWS and 0 < s <= _FEW_KEYS
                and (causal_offset is None or causal_offset >= s - 1)):
            # a decode step: few query rows that see every key; the general path's arithmetic, less Python
            sc = np.matmul(np.multiply(q.reshape(b, hk, g * lq, e), q.dtype.type(scale)), k.swapaxes(-1, -2))
            sc -= sc.max(axis=-1, keepdims=True)
            np.exp(sc, out=sc)
            out = np.matmul(sc, v)
            out /= sc.sum(axis=-1, keepdims=True)
            return out.reshape(b, hq, lq, ev)
        ct = _F32 if half else np.dtype(dtype.numpy)
        kf, vf = _f(k, dtype), _f(v, dtype)
        q5 = _f(q, dtype).reshape(b, hk, g, lq, e)  # a view for contiguous q
        m5: Any = None
        if mask is not None:
            assert shape_mask is not None
            mb, mh = shape_mask[0], shape_mask[1]
            m = mask.reshape((mb, hk, g) + shape_mask[2:]) if mh != 1 else mask.reshape((mb, 1, 1) + shape_mask[2:])
            m5 = (m == 0) if mask_kind == "bool" else _f(m, dtype)
        if causal_offset is not None and causal_offset >= s - 1 and m5 is None:
            causal_offset = None  # every query sees every key: the decode step
        rows = max(1, _SCORE_BLOCK // max(1, b * hq * s))
        if causal_offset is not None and lq >= 2 * _CAUSAL_ROWS:  # blocks skip the keys none of their rows see
            rows = min(rows, max(_CAUSAL_ROWS, -(-lq // 8)))
        if rows >= lq:
            return self._sdpa_block(q5, kf, vf, m5, mask_kind, 0, lq, scale, causal_offset, ct, dtype)
        out = np.empty((b, hk, g, lq, ev), dtype=dtype.numpy)
        for i0 in range(0, lq, rows):
            i1 = min(lq, i0 + rows)
            out[:, :, :, i0:i1] = self._sdpa_block(q5, kf, vf, m5, mask_kind, i0, i1, scale, causal_offset, ct,
                                                   dtype).reshape(b, hk, g, i1 - i0, ev)
        return out.reshape(b, hq, lq, ev)

    @staticmethod
    def _sdpa_block(q5: np.ndarray, k: np.ndarray, v: np.ndarray, m5: Any, mask_kind: str | None, i0: int,
                    i1: int, scale: float, offset: int | None, ct: np.dtype, dtype: DType) -> np.ndarray:
        """Attention of query rows i0..i1 -> [B, Hq, i1 - i0, Ev] in `dtype`."""
        b, hk, g, lq, e = q5.shape
        s, ev = k.shape[2], v.shape[3]
        n = i1 - i0
        s_end = s if offset is None else max(0, min(s, i1 + offset))  # keys these rows can see
        if s_end == 0:
            return np.zeros((b, hk * g, n, ev), dtype=dtype.numpy)
        qb = q5 if n == lq else q5[:, :, :, i0:i1]
        kk, vv = (k, v) if s_end == s else (k[:, :, :s_end], v[:, :, :s_end])
        if g * n <= _FEW_ROWS and s_end > _FEW_KEYS:  # BLAS is slow for Q K^T with few rows: compute (K Q^T)^T
            qt = np.multiply(qb.transpose(0, 1, 4, 2, 3), ct.type(scale), dtype=ct, order="C")
            sc = np.ascontiguousarray(np.matmul(kk, qt.reshape(b, hk, e, g * n)).swapaxes(-1, -2))
        else:
            qs = np.multiply(qb, ct.type(scale), dtype=ct)
            sc = np.matmul(qs.reshape(b, hk, g * n, e), kk.swapaxes(-1, -2))  # [B, Hk, G*n, s_end]
        masked = m5 is not None or offset is not None
        if masked:
            s5 = sc.reshape(b, hk, g, n, s_end)
            if m5 is not None:
                m = m5
                if m.shape[3] != 1 and n != lq:
                    m = m[:, :, :, i0:i1]
                if m.shape[4] != 1 and s_end != s:
                    m = m[..., :s_end]
                if mask_kind == "bool":
                    np.copyto(s5, -np.inf, where=m)
                else:
                    s5 += m
            if offset is not None and i0 + offset < s_end - 1:
                hide = np.arange(s_end)[None, :] > np.arange(i0, i1)[:, None] + offset
                np.copyto(s5, -np.inf, where=hide)
        mx = sc.max(axis=-1, keepdims=True)
        if masked:
            np.copyto(mx, 0, where=mx == -np.inf)  # fully masked rows: exp gives 0, not NaN
        sc -= mx
        np.exp(sc, out=sc)
        den = sc.sum(axis=-1, keepdims=True)
        if masked:
            np.copyto(den, 1, where=den == 0)
        out = np.matmul(sc, vv)  # [B, Hk, G*n, Ev]
        out /= den
        out = out.reshape(b, hk * g, n, ev)
        return out if out.dtype == dtype.numpy else out.astype(dtype.numpy)

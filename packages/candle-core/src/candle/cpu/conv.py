"""Convolution, pooling and upsampling kernels of the numpy backend (fused kernels of the interface).

conv2d is an im2col copy (one strided copy per kernel offset, or per output position when the kernel
is larger than the output, as in the weight gradient) and a BLAS matmul; conv_transpose2d is one
matmul per kernel offset accumulated (col2im) into a buffer whose innermost dims are batch and
channels; pooling scans the kernel offsets over strided views. float16/bfloat16 compute in float32
like the rest of the backend. Inputs are contiguous NCHW arrays (core makes them so); signatures are
those of `backend.FUSED_KERNELS`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..dtype import DType, bfloat16, float16

Shape = tuple[int, ...]
Pair = tuple[int, int]
_HALF = (float16, bfloat16)


def _work(x: np.ndarray, dtype: DType) -> np.ndarray:
    return x.astype(np.float32) if dtype in _HALF else x


def _out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _pad(x: np.ndarray, padding: Pair, value: Any = 0) -> np.ndarray:
    ph, pw = padding
    if not ph and not pw:
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def _windows(xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out: Pair) -> np.ndarray:
    """A read-only [N, C, Ho, Wo, kh, kw] view of the windows of the padded `xp`."""
    n, c = xp.shape[:2]
    s_n, s_c, s_h, s_w = xp.strides
    shape = (n, c, out[0], out[1], kernel[0], kernel[1])
    strides = (s_n, s_c, s_h * stride[0], s_w * stride[1], s_h * dilation[0], s_w * dilation[1])
    return as_strided(xp, shape, strides, writeable=False)


def _nearest(n_in: int, n_out: int) -> np.ndarray:
    """PyTorch's nearest source index: floor(dst * float32(in / out)), clamped."""
    if n_out == n_in:
        return np.arange(n_out)
    if n_out == 2 * n_in:
        return np.arange(n_out) >> 1
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


class ConvKernels:
    """Mixed into `NumpyBackend`."""

    def conv2d(self, x: np.ndarray, w: np.ndarray, shape_x: Shape, shape_w: Shape, stride: Pair, padding: Pair,
               dilation: Pair, groups: int, dtype: DType) -> np.ndarray:
        n, c, h, wd = shape_x
        o, cg, kh, kw = shape_w
        (sh, sw), (dh, dw) = stride, dilation
        ho, wo = _out(h, kh, sh, padding[0], dh), _out(wd, kw, sw, padding[1], dw)
        xp = _pad(_work(x, dtype), padding)
        g, og, k = groups, o // groups, cg * kh * kw
        wm = _work(w, dtype).reshape(g, og, k)
        if kh * kw <= ho * wo:
            # im2col: cols[n, c, i, j, y, x] = xp[n, c, y*sh + i*dh, x*sw + j*dw], one strided copy per kernel offset
            cols = np.empty((n, c, kh, kw, ho, wo), dtype=xp.dtype)
            for i in range(kh):
                for j in range(kw):
                    cols[:, :, i, j] = xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh,
                                          j * dw:j * dw + (wo - 1) * sw + 1:sw]
            out = np.matmul(wm, cols.reshape(n, g, k, ho * wo))  # [N, G, O/G, Ho*Wo]: already NCHW
            return out.reshape(n, o, ho, wo).astype(dtype.numpy, copy=False)
        # a kernel larger than the output (e.g. the weight gradient): one copy per output position instead,
        # then one large matmul per group
        cols = np.empty((g, n, ho, wo, cg, kh, kw), dtype=xp.dtype)
        for y in range(ho):
            for x_ in range(wo):
                win = xp[:, :, y * sh:y * sh + (kh - 1) * dh + 1:dh, x_ * sw:x_ * sw + (kw - 1) * dw + 1:dw]
                cols[:, :, y, x_] = win.reshape(n, g, cg, kh, kw).transpose(1, 0, 2, 3, 4)
        out = np.matmul(cols.reshape(g, n * ho * wo, k), wm.transpose(0, 2, 1))  # [G, N*Ho*Wo, O/G]
        out = out.reshape(g, n, ho * wo, og).transpose(1, 0, 3, 2).reshape(n, o, ho, wo)
        return np.ascontiguousarray(out, dtype=dtype.numpy)

    def conv_transpose2d(self, x: np.ndarray, w: np.ndarray, shape_x: Shape, shape_w: Shape, stride: Pair,
                         padding: Pair, output_padding: Pair, dilation: Pair, groups: int,
                         dtype: DType) -> np.ndarray:
        n, c, h, wd = shape_x
        _, og, kh, kw = shape_w
        g, cg = groups, c // groups
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding[0] + 1
        wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + output_padding[1] + 1
        # one matmul per kernel offset (i, j): part[g, y, x, n, o] = sum_c x[n, g*cg + c, y, x] * w[g*cg + c, o, i, j],
        # added at (y*s + i*d, x*s + j*d) of the uncropped output; the batch and channels are the innermost
        # dims so that every strided add runs over long contiguous rows
        xg = np.ascontiguousarray(_work(x, dtype).reshape(n, g, cg, h, wd).transpose(1, 3, 4, 0, 2))
        xg = xg.reshape(g, h * wd * n, cg)
        wg = _work(w, dtype).reshape(g, cg, og, kh, kw)
        hb = max((h - 1) * sh + dh * (kh - 1) + 1, ph + ho)
        wb = max((wd - 1) * sw + dw * (kw - 1) + 1, pw + wo)
        buf = np.zeros((g, hb, wb, n, og), dtype=xg.dtype)
        for i in range(kh):
            for j in range(kw):
                part = np.matmul(xg, wg[:, :, :, i, j]).reshape(g, h, wd, n, og)
                buf[:, i * dh:i * dh + (h - 1) * sh + 1:sh, j * dw:j * dw + (wd - 1) * sw + 1:sw] += part
        out = buf[:, ph:ph + ho, pw:pw + wo].transpose(3, 0, 4, 1, 2).reshape(n, g * og, ho, wo)
        return np.ascontiguousarray(out, dtype=dtype.numpy)

    def max_pool2d(self, x: np.ndarray, shape: Shape, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
                   dtype: DType) -> tuple[np.ndarray, np.ndarray]:
        """PyTorch's scan: the first strictly larger value (or any NaN) in window order wins; padding never
        does, and a window of only the lowest value points at its first input element."""
        n, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        ho, wo = _out(h, kh, sh, ph, dh), _out(w, kw, sw, pw, dw)
        xw = x.astype(np.float32) if dtype is bfloat16 else x
        floating = np.issubdtype(xw.dtype, np.floating)
        low = -np.inf if floating else np.iinfo(xw.dtype).min
        xp = _pad(xw, padding, low)
        r0 = np.arange(ho) * sh - ph  # window starts in input coordinates
        q0 = np.arange(wo) * sw - pw

        def tap(i: int, j: int) -> np.ndarray:
            return xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]

        taps = [(i, j) for i in range(kh) for j in range(kw)]
        kdt = np.int16 if len(taps) < 2 ** 15 else np.int64
        if ph or pw:  # padding holds the lowest value and never wins (strictly larger only)
            best = np.full((n, c, ho, wo), low, dtype=xw.dtype)
            k = np.full((n, c, ho, wo), -1, dtype=kdt)
            first = 0
        else:
            best, k, first = tap(0, 0).copy(), np.zeros((n, c, ho, wo), dtype=kdt), 1
        for t in range(first, len(taps)):
            v = tap(*taps[t])
            upd = v > best
            if floating:
                upd |= v != v  # a NaN always takes over (PyTorch's rule)
            best = np.where(upd, v, best)
            k = np.where(upd, kdt(t), k)
        index = (r0[:, None] + (k // kw) * dh) * w + q0[None, :] + (k % kw) * dw
        if ph or pw:  # windows that never saw a larger value: PyTorch's first in-range start (row, col)
            r_first = np.where(r0 < 0, r0 + dh * -(r0 // dh), r0)
            q_first = np.where(q0 < 0, q0 + dw * -(q0 // dw), q0)
            index = np.where(k < 0, r_first[:, None] * w + q_first[None, :], index)
        return np.ascontiguousarray(best, dtype=dtype.numpy), index.astype(np.int64, copy=False)

    def avg_pool2d(self, x: np.ndarray, shape: Shape, kernel: Pair, stride: Pair, padding: Pair,
                   count_include_pad: bool, dtype: DType) -> np.ndarray:
        n, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        ho, wo = _out(h, kh, sh, ph, 1), _out(w, kw, sw, pw, 1)
        win = _windows(_pad(_work(x, dtype), padding), kernel, stride, (1, 1), (ho, wo))
        total = win[:, :, :, :, 0, 0].copy()
        for i in range(kh):
            for j in range(kw):
                if i or j:
                    total += win[:, :, :, :, i, j]
        if count_include_pad or (ph == 0 and pw == 0):
            total /= kh * kw
        else:
            def counts(size: int, k: int, s: int, p: int, m: int) -> np.ndarray:
                start = np.arange(m) * s - p
                return np.minimum(start + k, size) - np.maximum(start, 0)

            total /= (counts(h, kh, sh, ph, ho)[:, None] * counts(w, kw, sw, pw, wo)[None, :]).astype(total.dtype)
        return np.ascontiguousarray(total, dtype=dtype.numpy)

    def upsample_nearest2d(self, x: np.ndarray, shape: Shape, out_h: int, out_w: int, dtype: DType) -> np.ndarray:
        ih, iw = _nearest(shape[2], out_h), _nearest(shape[3], out_w)
        return np.take(np.take(x, ih, axis=2), iw, axis=3)

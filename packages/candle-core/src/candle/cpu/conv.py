"""Convolution, pooling and upsampling kernels of the numpy backend (fused kernels of the interface).

conv2d is an im2col copy and a BLAS matmul, in the layout (channels last, per kernel offset or per
output position) that makes the fewest short strided runs for the shape (see `_conv2d`);
conv_transpose2d with stride 1 is that conv2d with the flipped kernel, with a larger stride one
matmul per kernel offset accumulated (col2im) into a buffer whose innermost dims are batch and
channels; max pooling gathers the window taps into a contiguous block first, average pooling adds
strided views. float16/bfloat16 compute in float32 like the rest of the backend. Inputs are
contiguous NCHW arrays (core makes them so); signatures are those of `backend.FUSED_KERNELS`.
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


def _crop_pad(x: np.ndarray, pads: tuple[int, int, int, int]) -> np.ndarray:
    """x [N, C, H, W] padded with zeros by (top, bottom, left, right); negative amounts crop."""
    t, b, left, r = pads
    h, w = x.shape[2:]
    x = x[:, :, max(-t, 0):h - max(-b, 0), max(-left, 0):w - max(-r, 0)]
    t, b, left, r = max(t, 0), max(b, 0), max(left, 0), max(r, 0)
    if not (t or b or left or r):
        return x
    n, c, h, w = x.shape
    out = np.zeros((n, c, h + t + b, w + left + r), dtype=x.dtype)
    out[:, :, t:t + h, left:left + w] = x
    return out


# a rough cost model of the im2col copies (ns): numpy copies a strided array one innermost run at a time
_NS_RUN, _NS_ELEM, _NS_GEMM_CALL = 10.0, 0.5, 1000.0


def _conv2d(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int], stride: Pair, dilation: Pair,
            groups: int) -> np.ndarray:
    """Cross-correlation of x [N, C, H, W] (float32/64) with w [O, C/groups, kh, kw], x padded by pads = (top,
    bottom, left, right) (negative crops) -> [N, O, Ho, Wo], by im2col and BLAS in one of three layouts:

    - channels last: x copied to [N, Hp, Wp, C], columns [N*Ho*Wo, kh*kw*C] in one strided copy whose rows
      are runs of kw*C, one GEMM with the weight as [O, kh*kw*C], the result [N*Ho*Wo, O] transposed to NCHW.
      Best when the channels outnumber the columns of the image (small feature maps, weight gradients).
    - per kernel offset: columns [N, G, C/G*kh*kw, Ho*Wo] copied one offset at a time (runs of Wo) and a
      batched matmul that writes NCHW directly: best for wide images with few channels.
    - per output position, when the kernel is larger than the output (weight gradients of wide images).

    The layout is chosen by counting the innermost runs each copy makes (`_NS_RUN`), which dominate for
    small maps, and the elements it moves."""
    t, b, left, r = pads
    x = x[:, :, max(-t, 0):x.shape[2] - max(-b, 0), max(-left, 0):x.shape[3] - max(-r, 0)]  # negative pads crop
    t, b, left, r = max(t, 0), max(b, 0), max(left, 0), max(r, 0)
    n, c, h, wd = x.shape
    hp, wp = h + t + b, wd + left + r
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = _out(hp, kh, sh, 0, dh), _out(wp, kw, sw, 0, dw)
    g, og, k, size = groups, o // groups, cg * kh * kw, ho * wo
    per_offset = kh * kw <= size
    if per_offset:
        cost = kh * kw * n * c * ho * _NS_RUN + n * g * _NS_GEMM_CALL
    else:
        cost = size * n * c * kh * _NS_RUN
    if g == 1:
        cl_cost = ((n * hp * wp if c > 1 else 0) * _NS_RUN + n * c * hp * wp * _NS_ELEM
                   + n * size * kh * (1 if dw == 1 else kw) * _NS_RUN
                   + (o * kh * kw * _NS_RUN + o * k * _NS_ELEM if c > 1 else 0)
                   + n * o * _NS_RUN + n * o * size * _NS_ELEM)
        if cl_cost < cost:
            if t or b or left or r:  # padded straight into the channels-last copy
                xt = np.zeros((n, hp, wp, c), dtype=x.dtype)
                xt[:, t:t + h, left:left + wd] = x.transpose(0, 2, 3, 1)
            else:
                xt = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            s_n, s_h, s_w, s_c = xt.strides
            cols = as_strided(xt, (n, ho, wo, kh, kw, c), (s_n, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c),
                              writeable=False).reshape(n * size, kh * kw * c)
            wm = np.ascontiguousarray(w.transpose(0, 2, 3, 1)).reshape(o, kh * kw * c)
            out = np.matmul(cols, wm.T)  # [N*Ho*Wo, O]
            return np.ascontiguousarray(out.reshape(n, size, o).transpose(0, 2, 1)).reshape(n, o, ho, wo)
    xp = _crop_pad(x, (t, b, left, r))
    wm = w.reshape(g, og, k)
    if per_offset:
        # cols[n, c, i, j, y, x] = xp[n, c, y*sh + i*dh, x*sw + j*dw], one strided copy per kernel offset
        cols = np.empty((n, c, kh, kw, ho, wo), dtype=xp.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, i, j] = xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
        out = np.matmul(wm, cols.reshape(n, g, k, size))  # [N, G, O/G, Ho*Wo]: already NCHW
        return out.reshape(n, o, ho, wo)
    # a kernel larger than the output (e.g. the weight gradient): one copy per output position instead,
    # then one large matmul per group
    cols = np.empty((g, n, ho, wo, cg, kh, kw), dtype=xp.dtype)
    for y in range(ho):
        for x_ in range(wo):
            win = xp[:, :, y * sh:y * sh + (kh - 1) * dh + 1:dh, x_ * sw:x_ * sw + (kw - 1) * dw + 1:dw]
            cols[:, :, y, x_] = win.reshape(n, g, cg, kh, kw).transpose(1, 0, 2, 3, 4)
    # [G, O/G, N*Ho*Wo]: with few output positions and a long k, this orientation keeps OpenBLAS fast
    # (the other one, [N*Ho*Wo, k] @ [k, O/G], ran 1.5x slower on one thread and 2-4x slower on two)
    out = np.matmul(wm, cols.reshape(g, n * size, k).transpose(0, 2, 1))
    out = out.reshape(g, og, n, size).transpose(2, 0, 1, 3).reshape(n, o, ho, wo)
    return np.ascontiguousarray(out)


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


# max_pool2d gathers the taps of this many elements at a time (a cached index of as many intp)
_GATHER_LIMIT = 1 << 18
_PLANS: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
_PLANS_MAX = 8


def _pool_plan(nc: int, hp: int, wp: int, w: int, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
               out: Pair) -> tuple[np.ndarray, np.ndarray]:
    """For pooling `nc` padded [hp, wp] planes: `perm` [kh*kw, nc*Ho*Wo], the flat positions of every tap of
    every window (tap-major), and `base` [nc*Ho*Wo], each window's start in the unpadded [h, w] plane."""
    key = (nc, hp, wp, w, kernel, stride, padding, dilation, out)
    plan = _PLANS.get(key)
    if plan is None:
        (kh, kw), (ho, wo) = kernel, out
        pos = np.arange(nc * hp * wp, dtype=np.intp).reshape(nc, 1, hp, wp)
        win = _windows(pos, kernel, stride, dilation, out)[:, 0]  # [nc, Ho, Wo, kh, kw]
        perm = np.ascontiguousarray(win.transpose(3, 4, 0, 1, 2)).reshape(kh * kw, nc * ho * wo)
        start = (np.arange(ho) * stride[0] - padding[0])[:, None] * w + (np.arange(wo) * stride[1] - padding[1])
        base = np.ascontiguousarray(np.broadcast_to(start, (nc, ho, wo)), dtype=np.int64).reshape(-1)
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.pop(next(iter(_PLANS)))
        plan = _PLANS[key] = (perm, base)
    return plan


class ConvKernels:
    """Mixed into `NumpyBackend`."""

    def conv2d(self, x: np.ndarray, w: np.ndarray, shape_x: Shape, shape_w: Shape, stride: Pair, padding: Pair,
               dilation: Pair, groups: int, dtype: DType) -> np.ndarray:
        ph, pw = padding
        out = _conv2d(_work(x, dtype), _work(w, dtype), (ph, ph, pw, pw), stride, dilation, groups)
        return out.astype(dtype.numpy, copy=False)

    def conv_transpose2d(self, x: np.ndarray, w: np.ndarray, shape_x: Shape, shape_w: Shape, stride: Pair,
                         padding: Pair, output_padding: Pair, dilation: Pair, groups: int,
                         dtype: DType) -> np.ndarray:
        n, c, h, wd = shape_x
        _, og, kh, kw = shape_w
        g, cg = groups, c // groups
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding[0] + 1
        wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + output_padding[1] + 1
        xw, ww = _work(x, dtype), _work(w, dtype)
        if (sh, sw) == (1, 1):
            # a stride-1 transposed convolution is a conv2d of x padded by dilation*(k-1)-padding (negative
            # crops; output_padding adds at the bottom/right) with the flipped kernel, its in/out channels
            # swapped within each group
            eh, ew = dh * (kh - 1) - ph, dw * (kw - 1) - pw
            wf = ww[:, :, ::-1, ::-1].reshape(g, cg, og, kh, kw).transpose(0, 2, 1, 3, 4).reshape(g * og, cg, kh, kw)
            out = _conv2d(xw, np.ascontiguousarray(wf), (eh, eh + output_padding[0], ew, ew + output_padding[1]),
                          (1, 1), dilation, groups)
            return out.astype(dtype.numpy, copy=False)
        # one matmul per kernel offset (i, j): part[g, y, x, n, o] = sum_c x[n, g*cg + c, y, x] * w[g*cg + c, o, i, j],
        # added at (y*s + i*d, x*s + j*d) of the uncropped output; the batch and channels are the innermost
        # dims so that every strided add runs over long contiguous rows
        xg = np.ascontiguousarray(xw.reshape(n, g, cg, h, wd).transpose(1, 3, 4, 0, 2))
        xg = xg.reshape(g, h * wd * n, cg)
        wg = ww.reshape(g, cg, og, kh, kw)
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
        does, and a window of only the lowest value points at its first input element.

        Whole-array ops on strided views with short rows are ten times slower than on contiguous arrays,
        so the taps (kernel offsets) of a block of planes are first gathered into one contiguous
        [kh*kw, planes*Ho*Wo] array with a cached index (one `take`). Then the maximum is a chain of
        `np.maximum`, the winning tap the first one equal to it (boolean ops: `np.where` with a random
        mask is slow too), and the value is read back from that tap when a maximum is zero (the sign of
        zero is the one thing the chain may get wrong). A window holding a NaN sends the whole input to
        `_max_pool2d_scan`, which applies PyTorch's NaN rule."""
        n, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        ho, wo = _out(h, kh, sh, ph, dh), _out(w, kw, sw, pw, dw)
        xw = x.astype(np.float32) if dtype is bfloat16 else x
        floating = np.issubdtype(xw.dtype, np.floating)
        low = -np.inf if floating else np.iinfo(xw.dtype).min
        xp = _pad(xw, padding, low)
        hp, wp = xp.shape[2:]
        nc, ntaps, size = n * c, kh * kw, ho * wo
        per = max(1, min(nc, _GATHER_LIMIT // (ntaps * size)))  # planes per gathered block
        perm, base = _pool_plan(per, hp, wp, w, kernel, stride, padding, dilation, (ho, wo))
        offsets = np.array([i * dh * w + j * dw for i in range(kh) for j in range(kw)], dtype=np.int64)
        flat = xp.reshape(-1)
        values = np.empty(nc * size, dtype=xw.dtype)
        index = np.empty(nc * size, dtype=np.int64)
        for p0 in range(0, nc, per):
            cnt = min(per, nc - p0)
            m = cnt * size
            taps = np.take(flat[p0 * hp * wp:(p0 + cnt) * hp * wp], perm if cnt == per else perm[:, :m])
            best = values[p0 * size:p0 * size + m]
            if ntaps == 1:
                best[...] = taps[0]
                np.copyto(index[p0 * size:p0 * size + m], base[:m])
                continue
            np.maximum(taps[1], taps[0], out=best)
            for t in range(2, ntaps):
                np.maximum(taps[t], best, out=best)
            if floating and np.isnan(best).any():  # np.maximum propagates NaN
                return self._max_pool2d_scan(xp, shape, kernel, stride, padding, dilation, dtype, (ho, wo))
            # the first tap equal to the maximum = the number of leading taps that differ from it
            ahead = np.not_equal(taps[0], best)
            k = ahead.view(np.uint8).copy() if ntaps < 256 else ahead.astype(np.int64)
            eq = np.empty_like(ahead)
            for t in range(1, ntaps - 1):
                np.logical_and(ahead, np.not_equal(taps[t], best, out=eq), out=ahead)
                k += ahead.view(np.uint8)
            np.add(base[:m], offsets.take(k), out=index[p0 * size:p0 * size + m])
            if floating and not best.all():  # a zero maximum: its sign is that of the winning tap
                zero = np.flatnonzero(best == 0)
                best[zero] = taps.reshape(-1).take(k.take(zero).astype(np.intp) * m + zero)
        values = values.reshape(n, c, ho, wo)
        index = index.reshape(n, c, ho, wo)
        if ph or pw:  # windows that never saw a larger value than the padding: PyTorch's first in-range start
            empty = values == low
            if empty.any():
                r0, q0 = np.arange(ho) * sh - ph, np.arange(wo) * sw - pw
                r_first = np.where(r0 < 0, r0 + dh * -(r0 // dh), r0)
                q_first = np.where(q0 < 0, q0 + dw * -(q0 // dw), q0)
                index = np.where(empty, r_first[:, None] * w + q_first[None, :], index)
        return values.astype(dtype.numpy, copy=False), index

    @staticmethod
    def _max_pool2d_scan(xp: np.ndarray, shape: Shape, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
                         dtype: DType, out: Pair) -> tuple[np.ndarray, np.ndarray]:
        """max_pool2d by PyTorch's scan over the kernel offsets of the padded `xp` (NaN-exact)."""
        n, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
        ho, wo = out
        low = -np.inf if np.issubdtype(xp.dtype, np.floating) else np.iinfo(xp.dtype).min
        r0 = np.arange(ho) * sh - ph  # window starts in input coordinates
        q0 = np.arange(wo) * sw - pw

        def tap(i: int, j: int) -> np.ndarray:
            return xp[:, :, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]

        taps = [(i, j) for i in range(kh) for j in range(kw)]
        kdt = np.int16 if len(taps) < 2 ** 15 else np.int64
        if ph or pw:  # padding holds the lowest value and never wins (strictly larger only)
            best = np.full((n, c, ho, wo), low, dtype=xp.dtype)
            k = np.full((n, c, ho, wo), -1, dtype=kdt)
            first = 0
        else:
            best, k, first = tap(0, 0).copy(), np.zeros((n, c, ho, wo), dtype=kdt), 1
        for t in range(first, len(taps)):
            v = tap(*taps[t])
            upd = (v > best) | (v != v)  # a NaN always takes over (PyTorch's rule)
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

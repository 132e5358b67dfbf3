"""Fused kernels of the CUDA backend (`candle.backend.FUSED_KERNELS`).

Two kinds:
- CUDA C kernels (`kernels/*.cu`, listed in `KERNEL_FUSED`): softmax_last_dim, log_softmax_last_dim,
  rms_norm, layer_norm, silu_mul, rope (both layouts, in place with `out=`), sdpa (a flash-attention
  prefill kernel and a single-query decode kernel; grouped-query heads share their kv head without
  copies; masks and the causal offset as in core), max_pool2d.
- array-module compositions that beat core's generic ones: conv2d (im2col as a strided view copied once,
  then one cuBLAS GEMM per group), conv_transpose2d (GEMM then col2im adds), avg_pool2d, upsample_nearest2d,
  cumsum. They run on numpy too, so the emulated runtime of the CI tests checks them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from candle.dtype import DType, bfloat16, float16, float64, int64

from . import launch

Shape = tuple[int, ...]
Pair = tuple[int, int]

#: fused kernels that are CUDA C (absent on the emulated runtime, where core composes them)
KERNEL_FUSED: tuple[str, ...] = ("softmax_last_dim", "log_softmax_last_dim", "rms_norm", "layer_norm", "silu_mul",
                                 "rope", "sdpa", "max_pool2d")


def _out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _i(v: int) -> np.int64:
    return np.int64(v)


def _estrides(x: Any) -> list[int]:
    return [s // x.itemsize for s in x.strides]


def _ptr(a: Any) -> int:
    """The device (CuPy) or host (numpy) address of an array's first element."""
    data = getattr(a, "data", None)
    ptr = getattr(data, "ptr", None)
    return int(ptr) if ptr is not None else int(a.__array_interface__["data"][0])


def _vec(d: int, *arrays: Any) -> np.int32:
    """Whether row kernels may move rows of d elements in 16-byte words: d a multiple of 16 / itemsize and
    every array 16-byte aligned (rows then stay aligned)."""
    per = 16 // arrays[0].itemsize
    return np.int32(d % per == 0 and all(_ptr(a) % 16 == 0 for a in arrays))


class FusedKernels:
    """Mixed into `CudaBackend` (uses `rt`, `xp`, `_st`, `_up`, `_down`, `matmul`)."""

    rt: Any
    xp: Any

    # --- helpers ---------------------------------------------------------------------------------
    def _cts(self, dtype: DType) -> int:
        return 8 if dtype is float64 else 4

    def _c(self, x: Any) -> Any:
        return x if x.flags.c_contiguous else self.xp.ascontiguousarray(x)

    def _empty(self, shape: Shape, dtype: DType) -> Any:
        self.rt.use()
        return self.xp.empty(shape, dtype=self._st(dtype))  # type: ignore[attr-defined]

    # --- softmax and normalisation -----------------------------------------------------------------
    def _softmax(self, x: Any, shape: Shape, dtype: DType, log_: int) -> Any:
        x = self._c(x)
        out = self._empty(shape, dtype)
        d = shape[-1] if shape else 1
        rows = math.prod(shape) // d if d else 0
        if rows and d:
            cache = launch.row_cache(d, self._cts(dtype))
            self.rt.launch("norm", "softmax", dtype.short, (rows,), (launch.row_threads(d),),
                           (x, out, _i(d), np.int32(log_), np.int32(cache > 0), _vec(d, x, out)), smem=cache)
        return out

    def softmax_last_dim(self, x: Any, shape: Shape, dtype: DType) -> Any:
        return self._softmax(x, shape, dtype, 0)

    def log_softmax_last_dim(self, x: Any, shape: Shape, dtype: DType) -> Any:
        return self._softmax(x, shape, dtype, 1)

    def rms_norm(self, x: Any, w: Any | None, shape: Shape, eps: float, dtype: DType) -> Any:
        x = self._c(x)
        out = self._empty(shape, dtype)
        d = shape[-1]
        rows = math.prod(shape) // d if d else 0
        if rows:
            cache = launch.row_cache(d, self._cts(dtype))
            wd = self._c(w) if w is not None else x
            self.rt.launch("norm", "rms_norm", dtype.short, (rows,), (launch.row_threads(d),),
                           (x, wd, out, _i(d), np.int32(w is not None), self.rt.ct(dtype.short, eps),
                            np.int32(cache > 0), _vec(d, x, out)), smem=cache)
        return out

    def layer_norm(self, x: Any, w: Any | None, b: Any | None, shape: Shape, eps: float, dtype: DType) -> Any:
        x = self._c(x)
        out = self._empty(shape, dtype)
        d = shape[-1]
        rows = math.prod(shape) // d if d else 0
        if rows:
            cache = launch.row_cache(d, self._cts(dtype))
            wd = self._c(w) if w is not None else x
            bd = self._c(b) if b is not None else x
            flags = (1 if w is not None else 0) | (2 if b is not None else 0)
            self.rt.launch("norm", "layer_norm", dtype.short, (rows,), (launch.row_threads(d),),
                           (x, wd, bd, out, _i(d), np.int32(flags), self.rt.ct(dtype.short, eps),
                            np.int32(cache > 0), _vec(d, x, out)), smem=cache)
        return out

    def silu_mul(self, a: Any, b: Any, shape: Shape, dtype: DType) -> Any:
        a, b = self._c(a), self._c(b)
        out = self._empty(shape, dtype)
        n = math.prod(shape)
        if n:
            grid, block = launch.grid_1d(n)
            self.rt.launch("act", "silu_mul", dtype.short, grid, block, (a, b, out, _i(n)))
        return out

    # --- attention ----------------------------------------------------------------------------------
    def rope(self, x: Any, cos: Any, sin: Any, shape_x: Shape, shape_cs: Shape, interleaved: bool, dtype: DType,
             out: Any | None = None) -> Any:
        """Rotary embedding of x [B, H, S, D] (any strides) into a new array or into `out` (any strides,
        possibly x itself)."""
        b, h, s, d = shape_x
        cd, sd = self._c(cos), self._c(sin)
        if out is None:
            out = self._empty(shape_x, dtype)
        half = d // 2
        total = b * h * s * half
        if total:
            xs, os_ = _estrides(x), _estrides(out)
            grid, block = launch.grid_1d(total)
            self.rt.launch("rope", "rope", dtype.short, grid, block,
                           (x, cd, sd, out, _i(b), _i(h), _i(s), _i(half), _i(shape_cs[0]), *map(_i, xs),
                            *map(_i, os_), np.int32(bool(interleaved))))
        return out

    def sdpa(self, q: Any, k: Any, v: Any, mask: Any | None, shape_q: Shape, shape_k: Shape, shape_v: Shape,
             shape_mask: Shape | None, mask_kind: str | None, scale: float, causal_offset: int | None,
             dtype: DType) -> Any:
        """Scaled dot-product attention (`candle.backend.FUSED_KERNELS["sdpa"]`)."""
        b, hq, lq, e = shape_q
        hk, s = shape_k[1], shape_k[2]
        ev = shape_v[3]
        out = self._empty((b, hq, lq, ev), dtype)
        if out.size == 0:
            return out
        if s == 0:
            out[...] = 0
            return out
        cts = self._cts(dtype)
        kind = 0 if mask is None else (1 if mask_kind == "bool" else 2)
        ms = [0, 0, 0, 0]
        if mask is not None:
            assert shape_mask is not None
            ms = [0 if n == 1 else st for n, st in zip(shape_mask, _estrides(mask))]
        mb = mask if kind == 1 else out.view(self.xp.uint8)  # an unused pointer of the right type
        ma = mask if kind == 2 else out
        causal = causal_offset is not None
        geo = (_i(hq), _i(lq), _i(e), _i(hk), _i(s), _i(ev), *map(_i, _estrides(q)), *map(_i, _estrides(k)),
               *map(_i, _estrides(v)), *map(_i, ms), np.int32(kind), np.int32(causal), _i(causal_offset or 0),
               self.rt.ct(dtype.short, scale))
        if launch.use_decode_kernel(lq, hq // hk, s, e, cts):
            smem = launch.decode_smem(e, s, cts)
            self.rt.launch("attention", "sdpa_decode", dtype.short, (b * hq * lq,), (launch.DECODE_THREADS,),
                           (q, k, v, mb, ma, out, *geo), smem=smem)
            return out
        tiles = launch.flash_tiles(e, ev, cts)
        if tiles is None:
            from candle.errors import UnsupportedError

            dev = getattr(self, "device", "cuda")
            raise UnsupportedError(f"sdpa on {dev}: head dims E={e}, Ev={ev} are too large for the flash "
                                   f"kernel's shared memory (at most about 700 in float32)")
        grid = (-(-lq // tiles.bq), b * hq)
        self.rt.launch("attention", "sdpa_flash", dtype.short, grid, (launch.FLASH_THREADS,),
                       (q, k, v, mb, ma, out, *geo, _i(tiles.bq), _i(tiles.bk)), smem=tiles.smem)
        return out

    # --- pooling, upsampling, cumsum ----------------------------------------------------------------
    def max_pool2d(self, x: Any, shape: Shape, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
                   dtype: DType) -> tuple[Any, Any]:
        n, c, h, w = shape
        ho = _out(h, kernel[0], stride[0], padding[0], dilation[0])
        wo = _out(w, kernel[1], stride[1], padding[1], dilation[1])
        work = dtype if dtype.is_floating_point else float64  # integers (exact below 2**53) go through f64
        xw = self._c(x) if work is dtype else self._c(x).astype(self.xp.float64)
        vals = self._empty((n, c, ho, wo), work)
        idx = self._empty((n, c, ho, wo), int64)
        total = n * c * ho * wo
        if total:
            grid, block = launch.grid_1d(total)
            self.rt.launch("pool", "max_pool2d", work.short, grid, block,
                           (xw, vals, idx, _i(n * c), _i(h), _i(w), _i(ho), _i(wo), _i(kernel[0]), _i(kernel[1]),
                            _i(stride[0]), _i(stride[1]), _i(padding[0]), _i(padding[1]), _i(dilation[0]),
                            _i(dilation[1])))
        if work is not dtype:
            vals = vals.astype(self._st(dtype))  # type: ignore[attr-defined]
        return vals, idx

    def avg_pool2d(self, x: Any, shape: Shape, kernel: Pair, stride: Pair, padding: Pair, count_include_pad: bool,
                   dtype: DType) -> Any:
        xp = self.xp
        n, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        ho, wo = _out(h, kh, sh, ph, 1), _out(w, kw, sw, pw, 1)
        xf = self._up(self._c(x), dtype)  # type: ignore[attr-defined]
        if not dtype.is_floating_point:
            xf = xf.astype(xp.float64)
        xpd = xp.pad(xf, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else xf
        total = None
        for i in range(kh):
            for j in range(kw):
                tap = xpd[:, :, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw]
                total = tap.copy() if total is None else total + tap
        assert total is not None
        if count_include_pad or (ph == 0 and pw == 0):
            total = total / total.dtype.type(kh * kw)
        else:
            def counts(size: int, k: int, s: int, p: int, m: int) -> np.ndarray:
                start = np.arange(m) * s - p
                return np.minimum(start + k, size) - np.maximum(start, 0)

            cnt = (counts(h, kh, sh, ph, ho)[:, None] * counts(w, kw, sw, pw, wo)[None, :]).astype(total.dtype)
            total = total / self.rt.from_host(cnt)
        if not dtype.is_floating_point:
            return xp.ascontiguousarray(total.astype(self._st(dtype)))  # type: ignore[attr-defined]
        return xp.ascontiguousarray(self._down(total, dtype))  # type: ignore[attr-defined]

    def upsample_nearest2d(self, x: Any, shape: Shape, out_h: int, out_w: int, dtype: DType) -> Any:
        def nearest(n_in: int, n_out: int) -> np.ndarray:
            scale = np.float32(n_in) / np.float32(n_out)
            return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)

        xp = self.xp
        ih = self.rt.from_host(nearest(shape[2], out_h))
        iw = self.rt.from_host(nearest(shape[3], out_w))
        return xp.ascontiguousarray(xp.take(xp.take(x, ih, axis=2), iw, axis=3))

    def cumsum(self, x: Any, shape: Shape, dim: int, dtype: DType) -> Any:
        xp = self.xp
        if dtype in (float16, bfloat16):
            return self._down(xp.cumsum(self._up(x, dtype), axis=dim), dtype)  # type: ignore[attr-defined]
        return xp.cumsum(x, axis=dim, dtype=self._st(dtype))  # type: ignore[attr-defined]

    # --- convolutions -------------------------------------------------------------------------------
    def _im2col(self, xpad: Any, kernel: Pair, stride: Pair, dilation: Pair, out: Pair, groups: int) -> Any:
        """[N, G, C/G * kh * kw, Ho * Wo] columns of the padded xpad [N, C, Hp, Wp] (one strided copy)."""
        xp = self.xp
        n, c = xpad.shape[:2]
        xpad = self._c(xpad)
        s_n, s_c, s_h, s_w = xpad.strides
        view = xp.lib.stride_tricks.as_strided(
            xpad, (n, c, kernel[0], kernel[1], out[0], out[1]),
            (s_n, s_c, s_h * dilation[0], s_w * dilation[1], s_h * stride[0], s_w * stride[1]))
        cg = c // groups
        return xp.ascontiguousarray(view).reshape(n, groups, cg * kernel[0] * kernel[1], out[0] * out[1])

    def _gemm_groups(self, w3: Any, cols: Any, dtype: DType) -> Any:
        """[N, G, Og, L] = w3 [G, Og, K] @ cols [N, G, K, L] (one GEMM per group, weight broadcast over N)."""
        xp = self.xp
        g = w3.shape[0]
        n = cols.shape[0]
        parts = []
        for gi in range(g):
            wg = xp.broadcast_to(w3[gi], (n,) + w3.shape[1:])
            cg = cols[:, gi]
            parts.append(self.matmul(wg, cg, wg.shape, cg.shape, dtype))  # type: ignore[attr-defined]
        return parts[0][:, None] if g == 1 else xp.stack(parts, axis=1)

    def conv2d(self, x: Any, w: Any, shape_x: Shape, shape_w: Shape, stride: Pair, padding: Pair, dilation: Pair,
               groups: int, dtype: DType) -> Any:
        xp = self.xp
        n, c, h, wd = shape_x
        o, cg, kh, kw = shape_w
        ho = _out(h, kh, stride[0], padding[0], dilation[0])
        wo = _out(wd, kw, stride[1], padding[1], dilation[1])
        if n * o * ho * wo == 0:
            return self._empty((n, o, ho, wo), dtype)
        ph, pw = padding
        xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x  # zero bits = +0.0 in bf16
        cols = self._im2col(xpad, (kh, kw), stride, dilation, (ho, wo), groups)
        w3 = self._c(w).reshape(groups, o // groups, cg * kh * kw)
        out = self._gemm_groups(w3, cols, dtype)
        return xp.ascontiguousarray(out.reshape(n, o, ho, wo))

    def conv_transpose2d(self, x: Any, w: Any, shape_x: Shape, shape_w: Shape, stride: Pair, padding: Pair,
                         output_padding: Pair, dilation: Pair, groups: int, dtype: DType) -> Any:
        """The adjoint of conv2d: columns = W^T x by GEMM, then col2im: each kernel offset's columns added at
        their strided output positions (in the compute dtype), cropped by the padding."""
        xp = self.xp
        n, c, h, wd = shape_x
        _, og, kh, kw = shape_w
        g, cg = groups, c // groups
        (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
        ho = (h - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding[0] + 1
        wo = (wd - 1) * sw - 2 * pw + dw * (kw - 1) + output_padding[1] + 1
        if n * og * g * ho * wo == 0:
            return self._empty((n, og * g, ho, wo), dtype)
        # wt [G, Og*kh*kw, Cg] (a transposed view), x [N, G, Cg, H*W]
        wt = self._c(w).reshape(g, cg, og * kh * kw).transpose(0, 2, 1)
        xg = self._c(x).reshape(n, g, cg, h * wd)
        cols = self._gemm_groups(wt, xg, dtype)  # [N, G, Og*kh*kw, H*W]
        cf = self._up(cols, dtype)  # type: ignore[attr-defined]
        if not dtype.is_floating_point:
            cf = cf.astype(xp.float64)
        cf = cf.reshape(n, g * og, kh, kw, h, wd)
        hb = max((h - 1) * sh + dh * (kh - 1) + 1, ph + ho)
        wb = max((wd - 1) * sw + dw * (kw - 1) + 1, pw + wo)
        buf = xp.zeros((n, g * og, hb, wb), dtype=cf.dtype)
        for i in range(kh):
            for j in range(kw):
                buf[:, :, i * dh:i * dh + (h - 1) * sh + 1:sh, j * dw:j * dw + (wd - 1) * sw + 1:sw] += cf[:, :, i, j]
        res = xp.ascontiguousarray(buf[:, :, ph:ph + ho, pw:pw + wo])
        if not dtype.is_floating_point:
            return res.astype(self._st(dtype))  # type: ignore[attr-defined]
        return self._down(res, dtype)  # type: ignore[attr-defined]


__all__ = ["KERNEL_FUSED", "FusedKernels"]

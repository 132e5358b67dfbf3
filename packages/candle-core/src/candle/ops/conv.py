"""Convolutions, pooling and nearest upsampling, with PyTorch's `torch.nn.functional` signatures.

Every op works on NCHW (or NCL) tensors; the 1-d ops insert a dim of size 1 and run the 2-d ones.
The forward uses the backend's fused kernel when it has one (`conv2d`, `conv_transpose2d`,
`max_pool2d`, `avg_pool2d`, `upsample_nearest2d`, see `backend.FUSED_KERNELS`) and otherwise the
composition of primitives below (strided slice views stacked into columns + one batched matmul),
which is the reference the fused kernels are tested against. The forward runs without recording;
each op attaches an explicit backward rule written with these same ops, so it runs on every
backend:

- conv2d: grad_input = conv_transpose2d(grad, weight), grad_weight = a conv2d of the input with the
  grad as kernel (stride and dilation swapped, groups kept by folding the batch into channels),
  grad_bias = sum.
- conv_transpose2d: grad_input = conv2d(grad, weight), grad_weight likewise a conv2d.
- max_pool2d: scatter_add of the grad at the argmax indices (a plain scatter when the windows are
  disjoint); avg_pool2d: a conv_transpose2d of the grad (divided by the window counts) with a kernel
  of ones; upsample: index_add (index_select's adjoint).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from typing import Any

from .. import autograd as ag
from ..dtype import int64, uint8
from ..errors import DTypeError, ShapeError, UnsupportedError, fmt_shape
from ..tensor import Tensor
from ._base import full_of, fused, like, needs_grad, record, same_device, zeros_of
from .elementwise import add, eq, floor_divide, logical_and, mul, ne, remainder, where
from .indexing import copy_, index_add, index_select, scatter, scatter_add, stack
from .linalg import matmul
from .reduce import amax, argmax, sum
from .shape import contiguous, flip, permute, reshape, slice_view, squeeze, unsqueeze

__all__ = ["pad", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool1d", "max_pool2d",
           "avg_pool1d", "avg_pool2d", "upsample_nearest1d", "upsample_nearest2d"]

Pair = tuple[int, int]


# --- argument helpers ---------------------------------------------------------------------------
def _ints(v: Any, n: int, name: str, op: str) -> tuple[int, ...]:
    """An int or a sequence of 1 or `n` ints (anything with `__index__`, not bools), as a tuple of `n` ints."""
    def bad() -> ShapeError:
        return ShapeError(f"{op}: {name} must be an int or a tuple of {n} ints, got {v!r}")

    def as_int(i: Any) -> int:
        if isinstance(i, bool) or not hasattr(i, "__index__"):
            raise bad()
        return operator.index(i)

    if not isinstance(v, (tuple, list)):
        return (as_int(v),) * n
    t = tuple(as_int(i) for i in v)
    if len(t) == 1:
        t = t * n
    if len(t) != n:
        raise bad()
    return t


def _fmt(t: Sequence[int]) -> str:
    return fmt_shape(tuple(t))


def _check_positive(op: str, name: str, t: tuple[int, ...]) -> None:
    if any(v <= 0 for v in t):
        raise ShapeError(f"{op}: {name} must be positive, got {_fmt(t)}")


def _check_nonneg(op: str, name: str, t: tuple[int, ...]) -> None:
    if any(v < 0 for v in t):
        raise ShapeError(f"{op}: {name} must be non-negative, got {_fmt(t)}")


def _check_input(op: str, x: Any, nsp: int, what: str = "input") -> None:
    if not isinstance(x, Tensor):
        raise DTypeError(f"{op}: {what} must be a Tensor, got {type(x).__name__}")
    if x.ndim not in (nsp + 1, nsp + 2):
        raise ShapeError(f"{op}: expected a {nsp + 1}-d (unbatched) or {nsp + 2}-d (batched) {what}, got shape "
                         f"{fmt_shape(x._shape)}")


def _check_float(op: str, **ts: Tensor | None) -> None:
    named = [(k, t) for k, t in ts.items() if t is not None]
    for k, t in named:
        if not t._dtype.is_floating_point:
            raise DTypeError(f"{op}: expected floating-point tensors, got {k} of dtype {t._dtype.name}")
    if any(t._dtype is not named[0][1]._dtype for _, t in named):
        desc = ", ".join(f"{k} {t._dtype.name}" for k, t in named)
        raise DTypeError(f"dtype mismatch in {op}: {desc}")


def _to_4d(x: Tensor, nsp: int) -> tuple[Tensor, bool]:
    """x as [N, C, H, W]: a batch dim for unbatched input, H=1 for 1-d ops; and whether it was batched."""
    batched = x.ndim == nsp + 2
    if not batched:
        x = unsqueeze(x, 0)
    if nsp == 1:
        x = unsqueeze(x, 2)
    return x, batched


def _from_4d(y: Tensor, nsp: int, batched: bool) -> Tensor:
    if nsp == 1:
        y = squeeze(y, 2)
    return y if batched else squeeze(y, 0)


def _pair(t: tuple[int, ...], fill: int) -> Pair:
    """A 1-d op's argument as the 2-d one (`fill` for the inserted H dim)."""
    return (fill, t[0]) if len(t) == 1 else (t[0], t[1])


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


# --- pad ----------------------------------------------------------------------------------------
def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | int | None = None) -> Tensor:  # noqa: A002
    """PyTorch's `F.pad` in constant mode: `pad = (left, right, top, bottom, ...)` from the last dim
    backwards; negative amounts crop."""
    x = input
    if mode != "constant":
        raise UnsupportedError(f"pad: mode {mode!r} is not supported (only 'constant')")
    pads = tuple(int(p) for p in pad)
    if len(pads) % 2 or len(pads) // 2 > x.ndim:
        raise ShapeError(f"pad: padding {list(pads)} must have an even length of at most 2 * {x.ndim} "
                         f"for shape {fmt_shape(x._shape)}")
    crop = [(0, s, 1) for s in x._shape]
    grow = [(0, 0)] * x.ndim
    for k in range(len(pads) // 2):
        d = x.ndim - 1 - k
        lo, hi = pads[2 * k], pads[2 * k + 1]
        n = x._shape[d]
        if n + lo + hi < 0:
            raise ShapeError(f"pad: padding ({lo}, {hi}) of dim {d} makes shape {fmt_shape(x._shape)} negative")
        start, stop = max(-lo, 0), n - max(-hi, 0)
        crop[d] = (start, max(start, stop), 1)
        grow[d] = (max(lo, 0), max(hi, 0))
    if any(c != (0, s, 1) for c, s in zip(crop, x._shape)):
        x = slice_view(x, crop)
    if not any(lo or hi for lo, hi in grow):
        return x
    shape = tuple(s + lo + hi for s, (lo, hi) in zip(x._shape, grow))
    inner = [(lo, lo + s, 1) for s, (lo, _) in zip(x._shape, grow)]
    out = full_of(x, shape, 0 if value is None else value)
    with ag.no_grad():
        copy_(slice_view(out, inner), x)
    if needs_grad(x):
        record(out, "pad", (x,), lambda g: (slice_view(g, inner),))
    return out


# --- columns (im2col) ---------------------------------------------------------------------------
def _columns(xp: Tensor, kernel: Pair, stride: Pair, dilation: Pair, out: Pair) -> Tensor:
    """[N, C, kh*kw, Ho*Wo]: the window elements of the (already padded) `xp` at every output position,
    stacked from strided slice views (one per kernel offset, or one per output position when fewer)."""
    n, c = xp._shape[:2]
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    if kh * kw <= ho * wo:
        parts = [slice_view(xp, [(0, n, 1), (0, c, 1), (i * dh, i * dh + sh * (ho - 1) + 1, sh),
                                 (j * dw, j * dw + sw * (wo - 1) + 1, sw)])
                 for i in range(kh) for j in range(kw)]
        return reshape(stack(parts, 2), (n, c, kh * kw, ho * wo))
    parts = [slice_view(xp, [(0, n, 1), (0, c, 1), (y * sh, y * sh + dh * (kh - 1) + 1, dh),
                             (x * sw, x * sw + dw * (kw - 1) + 1, dw)])
             for y in range(ho) for x in range(wo)]
    return reshape(stack(parts, 4), (n, c, kh * kw, ho * wo))


def _pad2d(x: Tensor, padding: Pair, value: float | int = 0) -> Tensor:
    ph, pw = padding
    return pad(x, (pw, pw, ph, ph), value=value) if ph or pw else x


# --- conv2d / conv_transpose2d forward (no autograd) ----------------------------------------------
def _conv2d_composed(x: Tensor, w: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int) -> Tensor:
    n, _, h, wd = x._shape
    o, cg, kh, kw = w._shape
    ho, wo = (_out_size(h, kh, stride[0], padding[0], dilation[0]),
              _out_size(wd, kw, stride[1], padding[1], dilation[1]))
    cols = _columns(_pad2d(x, padding), (kh, kw), stride, dilation, (ho, wo))  # [N, C, K, L]
    cols = reshape(cols, (n, groups, cg * kh * kw, ho * wo))
    out = matmul(reshape(w, (1, groups, o // groups, cg * kh * kw)), cols)  # [N, G, O/G, L]
    return reshape(out, (n, o, ho, wo))


def _conv2d_fwd(x: Tensor, w: Tensor, stride: Pair, padding: Pair, dilation: Pair, groups: int) -> Tensor:
    """conv2d without bias and without recording: the fused kernel or the composition."""
    kernel = fused(x._backend, "conv2d")
    if kernel is None:
        return _conv2d_composed(x, w, stride, padding, dilation, groups)
    x, w = contiguous(x), contiguous(w)
    n, _, h, wd = x._shape
    o, _, kh, kw = w._shape
    shape = (n, o, _out_size(h, kh, stride[0], padding[0], dilation[0]),
             _out_size(wd, kw, stride[1], padding[1], dilation[1]))
    return like(x, kernel(x._data, w._data, x._shape, w._shape, stride, padding, dilation, groups, x._dtype), shape)


def _convt_size(n: int, k: int, s: int, p: int, op: int, d: int) -> int:
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


def _conv_transpose2d_composed(x: Tensor, w: Tensor, stride: Pair, padding: Pair, output_padding: Pair,
                               dilation: Pair, groups: int) -> Tensor:
    """Zero insertion (stride), padding by dilation*(k-1)-padding (negative crops), then a stride-1
    conv2d with the spatially flipped weight, its in/out channels swapped within each group."""
    n, c, h, wd = x._shape
    cin, og, kh, kw = w._shape
    (sh, sw), (ph, pw), (oh, ow), (dh, dw) = stride, padding, output_padding, dilation
    if sh > 1 or sw > 1:
        hu, wu = (h - 1) * sh + 1, (wd - 1) * sw + 1
        z = zeros_of(x, (n, c, hu, wu))
        copy_(slice_view(z, [(0, n, 1), (0, c, 1), (0, hu, sh), (0, wu, sw)]), x)
        x = z
    eh, ew = dh * (kh - 1) - ph, dw * (kw - 1) - pw
    x = pad(x, (ew, ew + ow, eh, eh + oh))
    cg = cin // groups
    wf = reshape(flip(w, (2, 3)), (groups, cg, og, kh, kw))
    wf = reshape(permute(wf, (0, 2, 1, 3, 4)), (groups * og, cg, kh, kw))
    return _conv2d_fwd(x, wf, (1, 1), (0, 0), dilation, groups)


def _conv_transpose2d_fwd(x: Tensor, w: Tensor, stride: Pair, padding: Pair, output_padding: Pair,
                          dilation: Pair, groups: int) -> Tensor:
    kernel = fused(x._backend, "conv_transpose2d")
    if kernel is None:
        return _conv_transpose2d_composed(x, w, stride, padding, output_padding, dilation, groups)
    x, w = contiguous(x), contiguous(w)
    n, _, h, wd = x._shape
    _, og, kh, kw = w._shape
    shape = (n, og * groups, _convt_size(h, kh, stride[0], padding[0], output_padding[0], dilation[0]),
             _convt_size(wd, kw, stride[1], padding[1], output_padding[1], dilation[1]))
    data = kernel(x._data, w._data, x._shape, w._shape, stride, padding, output_padding, dilation, groups, x._dtype)
    return like(x, data, shape)


def _crop(t: Tensor, h: int, w: int) -> Tensor:
    """The top-left [.., h, w] of t (a view)."""
    if t._shape[2:] == (h, w):
        return t
    return slice_view(t, [(0, t._shape[0], 1), (0, t._shape[1], 1), (0, h, 1), (0, w, 1)])


def _fold_groups(t: Tensor, groups: int, order: tuple[int, ...]) -> Tensor:
    """[N, G*K, H, W] -> [N, G, K, H, W] permuted by `order`, with the group dim merged with the dim after it:
    (2, 1, 0) gives [K, G*N, H, W], (1, 2, 0) gives [G*K, N, H, W]."""
    n, gk, h, w = t._shape
    t = permute(reshape(t, (n, groups, gk // groups, h, w)), order + (3, 4))
    a, b, c = t._shape[:3]
    return reshape(t, (a * b, c, h, w) if order[0] == 1 else (a, b * c, h, w))


def _add_bias(out: Tensor, bias: Tensor | None) -> Tensor:
    return out if bias is None else add(out, reshape(bias, (1, bias._shape[0], 1, 1)))


def _conv2d(x: Tensor, w: Tensor, b: Tensor | None, stride: Pair, padding: Pair, dilation: Pair,
            groups: int) -> Tensor:
    """conv2d on validated 4-d tensors, with its backward rule."""
    with ag.no_grad():
        out = _add_bias(_conv2d_fwd(x, w, stride, padding, dilation, groups), b)
    if needs_grad(x, w, b):
        n, c, h, wd = x._shape
        o, cg, kh, kw = w._shape
        ho, wo = out._shape[2:]

        def grad(g: Tensor) -> tuple[Tensor | None, ...]:
            gx = gw = gb = None
            if x._requires_grad:
                op = tuple(size + 2 * p - d * (k - 1) - 1 - (m - 1) * s for size, p, d, k, m, s in
                           zip((h, wd), padding, dilation, (kh, kw), (ho, wo), stride))
                gx = _conv_transpose2d_fwd(g, w, stride, padding, op, dilation, groups)  # type: ignore[arg-type]
            if w._requires_grad:
                # gw[o, c, i, j] = sum_{n,y,x} g[n, o, y, x] * xpad[n, c, y*s + i*d, x*s + j*d]: a conv2d of
                # x (batch: C/G, channels: G*N) with g as kernel (out: G*O/G, in: N), stride <-> dilation
                xr = _fold_groups(x, groups, (2, 1, 0))  # [C/G, G*N, H, W]
                gr = _fold_groups(g, groups, (1, 2, 0))  # [O, N, Ho, Wo]
                r = _conv2d_fwd(xr, gr, dilation, padding, stride, groups)  # [C/G, O, >=kh, >=kw]
                gw = permute(_crop(r, kh, kw), (1, 0, 2, 3))
            if b is not None and b._requires_grad:
                gb = sum(g, (0, 2, 3))
            return (gx, gw, gb)

        record(out, "conv2d", (x, w) if b is None else (x, w, b), grad)
    return out


def _conv_transpose2d(x: Tensor, w: Tensor, b: Tensor | None, stride: Pair, padding: Pair, output_padding: Pair,
                      dilation: Pair, groups: int) -> Tensor:
    with ag.no_grad():
        out = _add_bias(_conv_transpose2d_fwd(x, w, stride, padding, output_padding, dilation, groups), b)
    if needs_grad(x, w, b):
        h, wd = x._shape[2:]
        kh, kw = w._shape[2:]

        def grad(g: Tensor) -> tuple[Tensor | None, ...]:
            gx = gw = gb = None
            if x._requires_grad:
                gx = _crop(_conv2d_fwd(g, w, stride, padding, dilation, groups), h, wd)
            if w._requires_grad:
                # gw[c, o, i, j] = sum_{n,y,x} x[n, c, y, x] * gpad[n, o, y*s + i*d, x*s + j*d]
                gr = _fold_groups(g, groups, (2, 1, 0))  # [O/G, G*N, Ho, Wo]
                xr = _fold_groups(x, groups, (1, 2, 0))  # [C, N, H, W]
                r = _conv2d_fwd(gr, xr, dilation, padding, stride, groups)  # [O/G, C, >=kh, >=kw]
                gw = permute(_crop(r, kh, kw), (1, 0, 2, 3))
            if b is not None and b._requires_grad:
                gb = sum(g, (0, 2, 3))
            return (gx, gw, gb)

        record(out, "conv_transpose2d", (x, w) if b is None else (x, w, b), grad)
    return out


# --- public convolutions --------------------------------------------------------------------------
def _conv_common(op: str, nsp: int, x: Any, w: Any, b: Any, groups: Any) -> int:
    _check_input(op, x, nsp)
    if not isinstance(w, Tensor):
        raise DTypeError(f"{op}: weight must be a Tensor, got {type(w).__name__}")
    if b is not None and not isinstance(b, Tensor):
        raise DTypeError(f"{op}: bias must be a Tensor or None, got {type(b).__name__}")
    same_device(op, *((x, w) if b is None else (x, w, b)))
    _check_float(op, input=x, weight=w, bias=b)
    if w.ndim != nsp + 2:
        dims = "kH, kW" if nsp == 2 else "kW"
        io = "in_channels, out_channels/groups" if "transpose" in op else "out_channels, in_channels/groups"
        raise ShapeError(f"{op}: expected a {nsp + 2}-d weight [{io}, {dims}], got shape {fmt_shape(w._shape)}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ShapeError(f"{op}: groups must be a positive int, got {groups!r}")
    if any(s == 0 for s in w._shape):
        raise ShapeError(f"{op}: weight {fmt_shape(w._shape)} is empty")
    return groups


def _check_bias(op: str, b: Tensor | None, channels: int) -> None:
    if b is not None and b._shape != (channels,):
        raise ShapeError(f"shape mismatch in {op}: bias {fmt_shape(b._shape)} must have shape [{channels}] "
                         "(one value per output channel)")


def _conv(op: str, nsp: int, x: Tensor, w: Tensor, b: Tensor | None, stride: Any, padding: Any, dilation: Any,
          groups: int) -> Tensor:
    groups = _conv_common(op, nsp, x, w, b, groups)
    s, d = _ints(stride, nsp, "stride", op), _ints(dilation, nsp, "dilation", op)
    _check_positive(op, "stride", s)
    _check_positive(op, "dilation", d)
    c, o, kernel = x._shape[-nsp - 1], w._shape[0], w._shape[2:]
    if c != w._shape[1] * groups:
        raise ShapeError(f"shape mismatch in {op}: input {fmt_shape(x._shape)} has {c} channels, weight "
                         f"{fmt_shape(w._shape)} expects {w._shape[1] * groups} (groups={groups})")
    if o % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the output channels of weight {fmt_shape(w._shape)}")
    _check_bias(op, b, o)
    extra: tuple[int, ...] | None = None  # asymmetric 'same' padding: (left, right) per dim
    if isinstance(padding, str):
        if padding == "valid":
            p = (0,) * nsp
        elif padding == "same":
            if any(v != 1 for v in s):
                raise ShapeError(f"{op}: padding='same' is not supported for strided convolutions "
                                 f"(stride {_fmt(s)})")
            total = [dd * (k - 1) for dd, k in zip(d, kernel)]
            p = tuple(t // 2 for t in total)
            if any(t % 2 for t in total):
                extra = tuple(t % 2 for t in total)
        else:
            raise ShapeError(f"{op}: padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    else:
        p = _ints(padding, nsp, "padding", op)
        _check_nonneg(op, "padding", p)
    spatial = x._shape[-nsp:]
    padded = tuple(n + 2 * pp + (extra[i] if extra else 0) for i, (n, pp) in enumerate(zip(spatial, p)))
    eff = tuple(dd * (k - 1) + 1 for dd, k in zip(d, kernel))
    if any(e > n for e, n in zip(eff, padded)):
        raise ShapeError(f"{op}: kernel {_fmt(kernel)} (dilated {_fmt(eff)}) is larger than the padded input "
                         f"{_fmt(padded)} (input {fmt_shape(x._shape)}, padding {_fmt(p)})")
    x4, batched = _to_4d(x, nsp)
    if extra:
        right = (0,) * (2 - nsp) + extra
        x4 = pad(x4, (0, right[1], 0, right[0]))
    w4 = unsqueeze(w, 2) if nsp == 1 else w
    out = _conv2d(x4, w4, b, _pair(s, 1), _pair(p, 0), _pair(d, 1), groups)
    return _from_4d(out, nsp, batched)


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,  # noqa: A002
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-d convolution (cross-correlation) of [N, C, H, W] (or [C, H, W]) with weight [O, C/groups, kH, kW];
    padding may be an int, a pair, 'valid' or 'same' (stride 1)."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,  # noqa: A002
           dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-d convolution of [N, C, L] (or [C, L]) with weight [O, C/groups, k]."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(op: str, nsp: int, x: Tensor, w: Tensor, b: Tensor | None, stride: Any, padding: Any,
                    output_padding: Any, groups: int, dilation: Any) -> Tensor:
    groups = _conv_common(op, nsp, x, w, b, groups)
    s, d = _ints(stride, nsp, "stride", op), _ints(dilation, nsp, "dilation", op)
    p, opad = _ints(padding, nsp, "padding", op), _ints(output_padding, nsp, "output_padding", op)
    _check_positive(op, "stride", s)
    _check_positive(op, "dilation", d)
    _check_nonneg(op, "padding", p)
    _check_nonneg(op, "output_padding", opad)
    c, kernel = x._shape[-nsp - 1], w._shape[2:]
    if c != w._shape[0]:
        raise ShapeError(f"shape mismatch in {op}: input {fmt_shape(x._shape)} has {c} channels, weight "
                         f"{fmt_shape(w._shape)} expects {w._shape[0]} (its first dim)")
    if c % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the input channels ({c}) of input "
                         f"{fmt_shape(x._shape)}")
    _check_bias(op, b, w._shape[1] * groups)
    if any(o >= max(ss, dd) for o, ss, dd in zip(opad, s, d)):
        raise ShapeError(f"{op}: output_padding {_fmt(opad)} must be smaller than the stride {_fmt(s)} or the "
                         f"dilation {_fmt(d)}")
    spatial = x._shape[-nsp:]
    size = tuple(_convt_size(*a) for a in zip(spatial, kernel, s, p, opad, d))
    if any(v <= 0 for v in size):
        raise ShapeError(f"{op}: the output size {_fmt(size)} is not positive (input {fmt_shape(x._shape)}, "
                         f"kernel {_fmt(kernel)}, stride {_fmt(s)}, padding {_fmt(p)}, dilation {_fmt(d)})")
    x4, batched = _to_4d(x, nsp)
    w4 = unsqueeze(w, 2) if nsp == 1 else w
    out = _conv_transpose2d(x4, w4, b, _pair(s, 1), _pair(p, 0), _pair(opad, 0), _pair(d, 1), groups)
    return _from_4d(out, nsp, batched)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """Transposed 2-d convolution (the adjoint of conv2d) with weight [C, O/groups, kH, kW]; output size
    (H - 1) * stride - 2 * padding + dilation * (kH - 1) + output_padding + 1."""
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


def conv_transpose1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,  # noqa: A002
                     padding: Any = 0, output_padding: Any = 0, groups: int = 1, dilation: Any = 1) -> Tensor:
    """Transposed 1-d convolution with weight [C, O/groups, k]."""
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding, output_padding, groups,
                           dilation)


# --- pooling ------------------------------------------------------------------------------------
def _pool_args(op: str, nsp: int, x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
               ceil_mode: bool) -> tuple[Pair, Pair, Pair, Pair, Pair]:
    _check_input(op, x, nsp)
    if ceil_mode:
        raise UnsupportedError(f"{op}: ceil_mode=True is not supported")
    k = _ints(kernel_size, nsp, "kernel_size", op)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) else _ints(stride, nsp, "stride", op)
    p, d = _ints(padding, nsp, "padding", op), _ints(dilation, nsp, "dilation", op)
    _check_positive(op, "kernel_size", k)
    _check_positive(op, "stride", s)
    _check_positive(op, "dilation", d)
    _check_nonneg(op, "padding", p)
    if any(pp > kk // 2 for pp, kk in zip(p, k)):  # PyTorch's rule (the dilation does not enlarge the bound)
        raise ShapeError(f"{op}: padding {_fmt(p)} must be at most half of the kernel size {_fmt(k)}")
    size = tuple(_out_size(n, kk, ss, pp, dd) for n, kk, ss, pp, dd in zip(x._shape[-nsp:], k, s, p, d))
    if any(v <= 0 for v in size):
        raise ShapeError(f"{op}: the output size {_fmt(size)} is not positive (input {fmt_shape(x._shape)}, kernel "
                         f"{_fmt(k)}, stride {_fmt(s)}, padding {_fmt(p)}, dilation {_fmt(d)})")
    return _pair(k, 1), _pair(s, 1), _pair(p, 0), _pair(d, 1), _pair(size, 1)


def _lowest(x: Tensor) -> float | int:
    if x._dtype.is_floating_point:
        return -math.inf
    import numpy as np

    return int(np.iinfo(x._dtype.numpy).min)


def _max_pool2d_composed(x: Tensor, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
                         out: Pair) -> tuple[Tensor, Tensor]:
    """Values and flat indices into H*W: the first maximum of each window in scan order (the last NaN
    when a window holds NaNs), like PyTorch."""
    from .creation import arange, ones

    n, c, h, w = x._shape
    (kh, kw), (ho, wo) = kernel, out
    cols = _columns(_pad2d(x, padding, _lowest(x)), kernel, stride, dilation, out)  # [N, C, K, L]
    values = amax(cols, 2, keepdim=True)  # NaN propagates
    hit, nan = eq(cols, values), ne(cols, cols)
    if padding != (0, 0):  # padding never counts as the maximum, even where it ties with the input
        valid = _columns(_pad2d(ones((1, 1, h, w), dtype=uint8, device=x._device), padding), kernel, stride,
                         dilation, out)
        hit, nan = logical_and(hit, valid), logical_and(nan, valid)
    first = argmax(hit, 2)
    last = (kh * kw - 1) - argmax(flip(nan, (2,)), 2)
    k = where(ne(values, values)[:, :, 0], last, first)  # [N, C, L]
    rows = reshape(arange(ho, device=x._device) * stride[0] - padding[0], (ho, 1))
    colsp = reshape(arange(wo, device=x._device) * stride[1] - padding[1], (1, wo))
    k = reshape(k, (n, c, ho, wo))
    r = add(mul(floor_divide(k, kw), dilation[0]), rows)
    q = add(mul(remainder(k, kw), dilation[1]), colsp)
    index = add(mul(r, w), q)
    empty = _empty_windows(h, w, kernel, stride, padding, dilation, out)
    if empty is not None:  # windows holding only padding: PyTorch points at its first in-range start
        from .creation import tensor

        has_input = tensor(empty[0], dtype=uint8, device=x._device)
        fallback = tensor(empty[1], dtype=int64, device=x._device)
        index = where(has_input, index, fallback)
    return reshape(values, (n, c, ho, wo)), index


def _empty_windows(h: int, w: int, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
                   out: Pair) -> tuple[list[list[int]], list[list[int]]] | None:
    """For windows that hold no input element (possible with dilation): a [Ho, Wo] 0/1 mask of the windows
    that do, and PyTorch's index for the others (the first non-negative tap, even past the end); else None."""
    def taps(n: int, k: int, s: int, p: int, d: int, m: int) -> tuple[list[bool], list[int]]:
        starts = [y * s - p for y in range(m)]
        first = [a if a >= 0 else a + d * -(a // d) for a in starts]
        return [any(0 <= a + i * d < n for i in range(k)) for a in starts], first

    rows_ok, rows_first = taps(h, kernel[0], stride[0], padding[0], dilation[0], out[0])
    cols_ok, cols_first = taps(w, kernel[1], stride[1], padding[1], dilation[1], out[1])
    if all(rows_ok) and all(cols_ok):
        return None
    mask = [[int(a and b) for b in cols_ok] for a in rows_ok]
    return mask, [[r * w + q for q in cols_first] for r in rows_first]


def _max_pool(op: str, nsp: int, x: Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool, return_indices: bool) -> Any:
    k, s, p, d, size = _pool_args(op, nsp, x, kernel_size, stride, padding, dilation, ceil_mode)
    x4, batched = _to_4d(x, nsp)
    kernel = fused(x4._backend, "max_pool2d")
    with ag.no_grad():
        if kernel is None:
            values, index = _max_pool2d_composed(x4, k, s, p, d, size)
        else:
            x4c = contiguous(x4)
            vals, idx = kernel(x4c._data, x4c._shape, k, s, p, d, x4._dtype)
            shape = x4._shape[:2] + size
            values, index = like(x4, vals, shape), like(x4, idx, shape, int64)
    if needs_grad(x4):
        n, c, h, w = x4._shape

        # windows that share no input element (and no padding, whose empty windows point at a shared
        # fallback) have distinct indices: a plain scatter (a put) instead of scatter_add
        disjoint = p == (0, 0) and all(ss >= dd * (kk - 1) + 1 for kk, ss, dd in zip(k, s, d))
        put = scatter if disjoint else scatter_add

        def grad(g: Tensor) -> tuple[Tensor]:
            flat = put(zeros_of(g, (n, c, h * w)), 2, reshape(index, (n, c, -1)), reshape(g, (n, c, -1)))
            return (reshape(flat, (n, c, h, w)),)

        record(values, op, (x4,), grad)
    values = _from_4d(values, nsp, batched)
    return (values, _from_4d(index, nsp, batched)) if return_indices else values


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,  # noqa: A002
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """Max over kH x kW windows of [N, C, H, W] (padding counts as -inf); with return_indices, also the
    int64 position of each maximum in the flattened H*W input plane."""
    return _max_pool("max_pool2d", 2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,  # noqa: A002
               ceil_mode: bool = False, return_indices: bool = False) -> Any:
    """Max over windows of [N, C, L]; indices are positions in L."""
    return _max_pool("max_pool1d", 1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def _avg_counts(n: int, k: int, s: int, p: int, out: int, include_pad: bool) -> list[int]:
    counts = []
    for i in range(out):
        start = i * s - p
        end = min(start + k, n + p)
        if include_pad:
            counts.append(end - start)
        else:
            counts.append(min(end, n) - max(start, 0))
    return counts


def _avg_pool(op: str, nsp: int, x: Tensor, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              count_include_pad: bool, divisor_override: int | None) -> Tensor:
    k, s, p, _, size = _pool_args(op, nsp, x, kernel_size, stride, padding, 1, ceil_mode)
    _check_float(op, input=x)
    if divisor_override is not None and (not isinstance(divisor_override, int) or divisor_override <= 0):
        raise ShapeError(f"{op}: divisor_override must be a positive int, got {divisor_override!r}")
    x4, batched = _to_4d(x, nsp)
    n, c, h, w = x4._shape
    (kh, kw), (ho, wo) = k, size
    uniform = divisor_override is not None or count_include_pad or p == (0, 0)
    kernel = fused(x4._backend, "avg_pool2d")
    with ag.no_grad():
        if kernel is not None:
            x4c = contiguous(x4)
            out = like(x4, kernel(x4c._data, x4c._shape, k, s, p, count_include_pad or divisor_override is not None,
                                  x4._dtype), (n, c, ho, wo))
        else:
            cols = _columns(_pad2d(x4, p), k, s, (1, 1), size)
            total = reshape(sum(cols, 2), (n, c, ho, wo))
            out = mul(total, 1.0 / (kh * kw)) if uniform else total / _divisors(x4, k, s, p, size)
        if divisor_override is not None:
            out = mul(out, kh * kw / divisor_override)
    if needs_grad(x4):
        def grad(g: Tensor) -> tuple[Tensor]:
            gs = mul(g, 1.0 / (divisor_override or kh * kw)) if uniform else g / _divisors(x4, k, s, p, size)
            gs = reshape(gs, (n * c, 1, ho, wo))
            ones = full_of(g, (1, 1, kh, kw), 1)
            op_ = (h + 2 * p[0] - kh - (ho - 1) * s[0], w + 2 * p[1] - kw - (wo - 1) * s[1])
            gx = _conv_transpose2d_fwd(gs, ones, s, p, op_, (1, 1), 1)
            return (reshape(gx, (n, c, h, w)),)

        record(out, op, (x4,), grad)
    return _from_4d(out, nsp, batched)


def _divisors(x: Tensor, k: Pair, s: Pair, p: Pair, size: Pair) -> Tensor:
    """[Ho, Wo]: the number of input (non-padding) elements in each window."""
    from .creation import tensor

    h, w = x._shape[2:]
    rows = _avg_counts(h, k[0], s[0], p[0], size[0], False)
    cols = _avg_counts(w, k[1], s[1], p[1], size[1], False)
    return tensor([[r * q for q in cols] for r in rows], dtype=x._dtype, device=x._device)


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,  # noqa: A002
               count_include_pad: bool = True, divisor_override: int | None = None) -> Tensor:
    """Mean over kH x kW windows of [N, C, H, W] (zero padding, counted unless count_include_pad=False)."""
    return _avg_pool("avg_pool2d", 2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override)


def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,  # noqa: A002
               count_include_pad: bool = True) -> Tensor:
    """Mean over windows of [N, C, L]."""
    return _avg_pool("avg_pool1d", 1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


# --- nearest upsampling -------------------------------------------------------------------------
def nearest_indices(n_in: int, n_out: int) -> list[int]:
    """PyTorch's nearest rule: source index floor(dst * (in / out)) computed in float32, clamped."""
    if n_out == n_in:
        return list(range(n_out))
    if n_out == 2 * n_in:
        return [i >> 1 for i in range(n_out)]
    import numpy as np

    scale = np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return [int(v) for v in np.minimum(src, n_in - 1)]


def _upsample(op: str, nsp: int, x: Tensor, size: Any, scale_factor: Any) -> Tensor:
    _check_input(op, x, nsp)
    if (size is None) == (scale_factor is None):
        raise ShapeError(f"{op}: give exactly one of size and scale_factor")
    spatial = x._shape[-nsp:]
    if size is not None:
        out = _ints(size, nsp, "size", op)
        _check_positive(op, "size", out)
    else:
        sf = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * nsp
        if len(sf) == 1:
            sf = sf * nsp
        if len(sf) != nsp or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer()
                                     and v >= 1 for v in sf):
            raise UnsupportedError(f"{op}: scale_factor must be a positive integer or a tuple of {nsp} of them "
                                   f"(give `size` for other ratios), got {scale_factor!r}")
        out = tuple(n * int(v) for n, v in zip(spatial, sf))
    if any(n == 0 for n in spatial):
        raise ShapeError(f"{op}: cannot upsample the empty input {fmt_shape(x._shape)}")
    x4, batched = _to_4d(x, nsp)
    n, c, h, w = x4._shape
    ho, wo = _pair(out, 1)
    kernel = fused(x4._backend, "upsample_nearest2d")
    from .creation import tensor

    ih = tensor(nearest_indices(h, ho), dtype=int64, device=x._device)
    iw = tensor(nearest_indices(w, wo), dtype=int64, device=x._device)
    with ag.no_grad():
        if kernel is not None:
            x4c = contiguous(x4)
            y = like(x4, kernel(x4c._data, x4c._shape, ho, wo, x4._dtype), (n, c, ho, wo))
        else:
            y = index_select(index_select(x4, 2, ih), 3, iw)
    if needs_grad(x4):
        rows, cols = nearest_indices(h, ho), nearest_indices(w, wo)

        def grad(g: Tensor) -> tuple[Tensor]:
            g = _unrepeat(g, 3, cols, iw, w)
            return (_unrepeat(g, 2, rows, ih, h),)

        record(y, op, (x4,), grad)
    return _from_4d(y, nsp, batched)


def _unrepeat(g: Tensor, dim: int, src: list[int], index: Tensor, n_in: int) -> Tensor:
    """The adjoint of index_select(., dim, index) (index = src): a sum of strided slices when every
    source element is repeated r times in a row (integer upsampling), else index_add."""
    n_out = len(src)
    r = n_out // n_in
    if n_out % n_in == 0 and src == [i // r for i in range(n_out)]:
        if r == 1:
            return g
        specs = [(0, s, 1) for s in g._shape]
        total = None
        for k in range(r):
            specs[dim] = (k, n_out, r)
            part = slice_view(g, specs)
            total = part if total is None else add(total, part)
        return total  # type: ignore[return-value]
    shape = g._shape[:dim] + (n_in,) + g._shape[dim + 1:]
    return index_add(zeros_of(g, shape), dim, index, g)


def upsample_nearest2d(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:  # noqa: A002
    """Nearest-neighbour upsampling of [N, C, H, W] to `size` (H', W') or by an integer `scale_factor`
    (PyTorch's `F.interpolate(mode="nearest")`)."""
    return _upsample("upsample_nearest2d", 2, input, size, scale_factor)


def upsample_nearest1d(input: Tensor, size: Any = None, scale_factor: Any = None) -> Tensor:  # noqa: A002
    """Nearest-neighbour upsampling of [N, C, L]."""
    return _upsample("upsample_nearest1d", 1, input, size, scale_factor)

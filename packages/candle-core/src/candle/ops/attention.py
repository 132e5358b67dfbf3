"""Attention ops: rotary position embeddings (`rope`) and scaled dot-product attention (`sdpa`).

Both use the backend's fused kernel when it has one (`rope`, `sdpa`, see `backend.FUSED_KERNELS`)
and otherwise the composition of primitives below, which is the reference the fused kernels are
tested against. The forward runs without recording; each op attaches an explicit backward rule
written with core ops, so gradients do not depend on the kernels:

- rope is a rotation of each pair of features: grad_x is the inverse rotation of the grad (rope
  with `-sin`); cos and sin get `g1*x1 + g2*x2` and `g2*x1 - g1*x2` (summed over broadcast dims).
- sdpa recomputes the attention probabilities P (core's composition) and applies the usual rules:
  dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dQ = scale dS K, dK = scale dS^T Q, and the
  float mask gets dS. Grouped-query attention folds the G query heads that share one kv head into
  the rows of one matrix, so K and V are never repeated and their grads sum over the group for free.

Masks follow `torch.nn.functional.scaled_dot_product_attention`: a uint8 (bool-like) mask where
non-zero means "attend", or a float mask that is added to the scores; a query row with no key to
attend to gives zeros (PyTorch's behaviour since 2.5), not NaN.
"""

from __future__ import annotations

import math
from typing import Any

from .. import autograd as ag
from ..dtype import uint8
from ..errors import DTypeError, GradError, ShapeError, fmt_shape
from ..tensor import Tensor
from ._base import broadcast_shapes, full_of, fused, like, make, needs_grad, numel, record, unbroadcast
from .activation import softmax
from .creation import arange, rand
from .elementwise import cast, eq, exp, masked_fill, ne, neg, where
from .indexing import cat, stack
from .linalg import matmul
from .reduce import amax, sum
from .shape import expand, narrow, reshape, squeeze, transpose

__all__ = ["rope", "rope_composed", "scaled_dot_product_attention", "sdpa_composed", "causal_mask"]

_NEG_INF = float("-inf")


def _fits(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether `shape` broadcasts to `target` (without growing it)."""
    if len(shape) > len(target):
        return False
    try:
        return broadcast_shapes(target, shape, "") == target
    except ShapeError:
        return False


# --- rotary embeddings ----------------------------------------------------------------------------
def _pairs(x: Tensor, interleaved: bool) -> tuple[Tensor, Tensor]:
    """The two halves that rope rotates into each other: (x[..., :h], x[..., h:]) or (even, odd)."""
    h = x._shape[-1] // 2
    if not interleaved:
        return narrow(x, -1, 0, h), narrow(x, -1, h, h)
    xr = reshape(x, x._shape[:-1] + (h, 2))
    return squeeze(narrow(xr, -1, 0, 1), -1), squeeze(narrow(xr, -1, 1, 1), -1)


def _join(a: Tensor, b: Tensor, interleaved: bool) -> Tensor:
    """The inverse of `_pairs`."""
    if not interleaved:
        return cat([a, b], -1)
    y = stack([a, b], -1)
    return reshape(y, y._shape[:-2] + (y._shape[-2] * 2,))


def rope_composed(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = False) -> Tensor:
    """The reference rope: `(x1, x2) -> (x1*cos - x2*sin, x2*cos + x1*sin)` for each pair."""
    x1, x2 = _pairs(x, interleaved)
    return _join(x1 * cos - x2 * sin, x2 * cos + x1 * sin, interleaved)


def _rope_fused(kernel: Any, x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, out: Any = None) -> Tensor:
    """Run the backend kernel on x as [B, H, S, D] and cos/sin as [Bc, S, D/2] (Bc in {1, B}).

    B folds x's leading dims up to the last one along which cos varies, H the rest. `out` is None or
    a native array of x's shape and dtype that the kernel writes (it may be x's own storage).
    """
    lead, (s, d) = x._shape[:-2], x._shape[-2:]
    h = d // 2
    if x.ndim == 4 and cos._shape == (s, h):  # the common case, on native arrays (the decode hot path)
        be = x._backend
        c3 = be.reshape(be.contiguous(cos._data, cos._shape), cos._shape, (1, s, h))
        s3 = be.reshape(be.contiguous(sin._data, sin._shape), sin._shape, (1, s, h))
        if out is None:
            return like(x, kernel(x._data, c3, s3, x._shape, (1, s, h), interleaved, x._dtype), x._shape)
        kernel(x._data, c3, s3, x._shape, (1, s, h), interleaved, x._dtype, out=out)
        return x
    cl = (1,) * (x.ndim - cos.ndim) + cos._shape
    k = max((i for i, n in enumerate(cl[:-2]) if n != 1), default=-1)
    b = numel(lead[:k + 1])
    target = lead[:k + 1] + (s, h)

    def table(t: Tensor) -> Tensor:
        t = reshape(t, cl[:k + 1] + cl[-2:])  # the dims after k are all 1
        t = expand(t, target) if t._shape != target else t
        return reshape(t, (b, s, h)).contiguous()

    c3, s3 = table(cos), table(sin)
    x4 = reshape(x, (b, numel(lead[k + 1:]), s, d))
    if out is None:
        data = kernel(x4._data, c3._data, s3._data, x4._shape, c3._shape, interleaved, x._dtype)
        return reshape(like(x4, data, x4._shape), x._shape)
    o4 = x._backend.reshape(out, x._shape, x4._shape)  # out is contiguous here (checked by `rope`)
    kernel(x4._data, c3._data, s3._data, x4._shape, c3._shape, interleaved, x._dtype, out=o4)
    return x


def _rope_run(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool) -> Tensor:
    kernel = fused(x._backend, "rope")
    with ag.no_grad():
        if kernel is None:
            return rope_composed(x.detach(), cos.detach(), sin.detach(), interleaved)
        return _rope_fused(kernel, x.detach(), cos.detach(), sin.detach(), interleaved)


def _rope_into(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool, out: Tensor) -> Tensor:
    """rope written into `out` (checked: x's shape, dtype and device; it may be x itself)."""
    kernel = fused(x._backend, "rope")
    be = x._backend
    if kernel is not None and (x.ndim == 4 and cos._shape == x._shape[-2:-1] + (x._shape[-1] // 2,)
                               or be.is_contiguous(out._data, out._shape)):
        _rope_fused(kernel, x, cos, sin, interleaved, out=out._data)
        return out
    with ag.no_grad():  # no kernel (or an exotic layout): compute, then copy
        y = rope_composed(x, cos, sin, interleaved) if kernel is None else _rope_fused(kernel, x, cos, sin, interleaved)
        be.copy_(out._data, y._data, out._shape)
    return out


def rope(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = False, *, out: Tensor | None = None) -> Tensor:
    """Rotary position embedding of `x` [..., seq, head_dim] (e.g. [batch, heads, seq, head_dim]).

    `cos` and `sin` hold the angles' cosines and sines, shape [seq, head_dim/2] or any shape that
    broadcasts to `x.shape[:-1] + (head_dim/2,)` (e.g. [batch, 1, seq, head_dim/2] for per-sequence
    positions); they are cast to x's dtype. Feature pair i, rotated by angle theta_i, is

    - `interleaved=False` (half-split, HF/Llama `rotate_half`): (x[i], x[i + head_dim/2]);
    - `interleaved=True` (GPT-J, llama.cpp/GGUF): (x[2i], x[2i + 1]),

    and becomes `(a*cos_i - b*sin_i, b*cos_i + a*sin_i)`. HF's tables `cat([cos, cos], -1)` are
    this op's `cos` repeated: pass the first half.

    `out` (a tensor of x's shape, dtype and device, which may be `x` itself or a view such as a slot of
    a KV cache) receives the result in place and is returned; like PyTorch's `out=` arguments it is not
    differentiable, so it is refused while grad mode is on and an input requires grad.
    """
    if (isinstance(x, Tensor) and isinstance(cos, Tensor) and isinstance(sin, Tensor) and len(x._shape) == 4
            and cos._dtype is x._dtype and sin._dtype is x._dtype and x._dtype.is_floating_point
            and cos._shape == sin._shape == (x._shape[2], x._shape[3] // 2) and not x._shape[3] % 2
            and cos._device is x._device and sin._device is x._device
            and not (ag.state.enabled and (x._requires_grad or cos._requires_grad or sin._requires_grad))):
        # the decode hot path: nothing to check further, cast or record
        if out is not None:
            _check_rope_out(x, out)
            return _rope_into(x, cos, sin, interleaved, out)
        kernel = fused(x._backend, "rope")
        if kernel is not None:
            return _rope_fused(kernel, x, cos, sin, interleaved)
        return _rope_run(x, cos, sin, interleaved)
    for name, t in (("x", x), ("cos", cos), ("sin", sin)):
        if not isinstance(t, Tensor):
            raise DTypeError(f"rope: {name} must be a Tensor, got {type(t).__name__}")
        if not t._dtype.is_floating_point:
            raise DTypeError(f"rope: expected floating-point tensors, got {name} of dtype {t._dtype.name}")
    if x.ndim < 2 or x._shape[-1] % 2:
        raise ShapeError(f"rope: expected x of shape [..., seq, head_dim] with an even head_dim, got "
                         f"{fmt_shape(x._shape)}")
    if cos._shape != sin._shape:
        raise ShapeError(f"shape mismatch in rope: cos {fmt_shape(cos._shape)}, sin {fmt_shape(sin._shape)}")
    want = x._shape[:-1] + (x._shape[-1] // 2,)
    if cos.ndim < 2 or not _fits(cos._shape, want):
        raise ShapeError(f"rope: cos/sin of shape {fmt_shape(cos._shape)} do not broadcast to {fmt_shape(want)} "
                         f"for x of shape {fmt_shape(x._shape)}")
    cos, sin = cast(cos, x._dtype), cast(sin, x._dtype)
    if out is not None:
        if needs_grad(x, cos, sin):
            raise GradError("rope: out= is not differentiable; call it under candle.no_grad() or without out=")
        _check_rope_out(x, out)
        return _rope_into(x.detach(), cos.detach(), sin.detach(), interleaved, out)
    out = _rope_run(x, cos, sin, interleaved)
    if needs_grad(x, cos, sin):
        def grad(g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
            gx = _rope_run(g, cos, neg(sin), interleaved) if x._requires_grad else None
            gc = gs = None
            if cos._requires_grad or sin._requires_grad:
                x1, x2 = _pairs(x.detach(), interleaved)
                g1, g2 = _pairs(g, interleaved)
                gc = unbroadcast(g1 * x1 + g2 * x2, cos._shape)
                gs = unbroadcast(g2 * x1 - g1 * x2, sin._shape)
            return gx, gc, gs

        record(out, "rope", (x, cos, sin), grad)
    return out


def _check_rope_out(x: Tensor, out: Any) -> None:
    if not isinstance(out, Tensor):
        raise DTypeError(f"rope: out must be a Tensor, got {type(out).__name__}")
    if out._shape != x._shape or out._dtype is not x._dtype or out._device is not x._device:
        raise ShapeError(f"rope: out must match x: x {fmt_shape(x._shape)} {x._dtype.name} on {x._device}, "
                         f"out {fmt_shape(out._shape)} {out._dtype.name} on {out._device}")
    if out._requires_grad and ag.state.enabled:
        raise GradError("rope: out requires grad; an in-place write needs candle.no_grad()")


# --- scaled dot-product attention -----------------------------------------------------------------
def causal_mask(q_len: int, kv_len: int, offset: int | None = None, window: int | None = None,
                device: Any = None) -> Tensor:
    """A uint8 [q_len, kv_len] mask (1 = attend): query i attends key j iff `j <= i + offset`.

    `offset=None` aligns the mask to the bottom right (`kv_len - q_len`: the queries are the last
    `q_len` positions, as when decoding with a KV cache); `offset=0` is PyTorch's `is_causal` (top
    left). With `window`, query i also ignores keys `j <= i + offset - window` (sliding window).
    """
    off = kv_len - q_len if offset is None else offset
    rows = reshape(arange(q_len, device=device), (q_len, 1))
    cols = reshape(arange(kv_len, device=device), (1, kv_len))
    diff = cols - rows  # key j minus query i
    keep = diff <= off
    if window is not None:
        keep = keep & (diff > off - window)
    return keep


def _to4(t: Tensor) -> Tensor:
    """[..., n, e] as [B, H, n, e]: leading 1s for fewer dims, extra leading dims folded into B."""
    s = t._shape
    if t.ndim == 4:
        return t
    if t.ndim < 4:
        return reshape(t, (1,) * (4 - t.ndim) + s)
    return reshape(t, (numel(s[:-3]),) + s[-3:])


def _mask4(mask: Tensor, lead: tuple[int, ...]) -> Tensor:
    """An attention mask broadcastable to lead + [L, S], as 4 dims broadcastable to [B, H, L, S]."""
    nd = len(lead) + 2
    m = reshape(mask, (1,) * (nd - mask.ndim) + mask._shape) if mask.ndim < nd else mask
    if nd <= 4:
        return reshape(m, (1,) * (4 - nd) + m._shape)
    full = lead + m._shape[-2:]
    return reshape(expand(m, full), (numel(lead[:-1]), lead[-1]) + m._shape[-2:])


def _group_mask(m: Tensor, hk: int, g: int) -> Tensor:
    """A [b, Hq|1, L', S'] mask as [b, Hk|1, G|1, L', S'] (matching scores viewed per kv group)."""
    if m._shape[1] == 1:
        return reshape(m, (m._shape[0], 1, 1) + m._shape[2:])
    return reshape(m, (m._shape[0], hk, g) + m._shape[2:])


def _probs(q4: Tensor, k4: Tensor, mask4: Tensor | None, scale: float, offset: int | None) -> Tensor:
    """Attention probabilities [B, Hk, G*L, S] (queries sharing a kv head stacked as rows)."""
    b, hq, lq, e = q4._shape
    hk, s = k4._shape[1], k4._shape[2]
    g = hq // hk
    qg = reshape(q4, (b, hk, g * lq, e))
    scores = matmul(qg, transpose(k4, -1, -2)) * scale
    masked = mask4 is not None or offset is not None
    if masked:
        s5 = reshape(scores, (b, hk, g, lq, s))
        if mask4 is not None:
            m5 = _group_mask(mask4, hk, g)
            if m5._dtype is uint8:
                s5 = masked_fill(s5, eq(m5, 0), _NEG_INF)
            else:
                s5 = s5 + m5
        if offset is not None:
            s5 = masked_fill(s5, eq(causal_mask(lq, s, offset, device=q4._device), 0), _NEG_INF)
        scores = reshape(s5, (b, hk, g * lq, s))
    if not masked:
        return softmax(scores, -1)
    # a softmax where rows with nothing to attend give zeros (no NaN on the way)
    mx = amax(scores.detach(), -1, keepdim=True)
    e = exp(scores - where(eq(mx, _NEG_INF), 0.0, mx))
    den = sum(e, -1, keepdim=True)
    return e / where(eq(den, 0.0), 1.0, den)


def sdpa_composed(q4: Tensor, k4: Tensor, v4: Tensor, mask4: Tensor | None, scale: float, offset: int | None,
                  dropout_p: float = 0.0) -> Tensor:
    """The reference attention on [B, H, L, E] tensors (kv heads dividing query heads)."""
    b, hq, lq, _ = q4._shape
    ev = v4._shape[-1]
    p = _probs(q4, k4, mask4, scale, offset)
    if dropout_p > 0.0:
        keep = rand(p._shape, dtype=p._dtype, device=p._device) >= dropout_p
        p = where(keep, p * (1.0 / (1.0 - dropout_p)), 0.0)
    out = matmul(p, v4)  # [B, Hk, G*L, Ev]
    return reshape(out, (b, hq, lq, ev))


def _check_qkv(q: Any, k: Any, v: Any, enable_gqa: bool) -> None:
    op = "scaled_dot_product_attention"
    for name, t in (("query", q), ("key", k), ("value", v)):
        if not isinstance(t, Tensor):
            raise DTypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
        if not t._dtype.is_floating_point:
            raise DTypeError(f"{op}: expected floating-point tensors, got {name} of dtype {t._dtype.name}")
    if not (q._dtype is k._dtype is v._dtype):
        raise DTypeError(f"dtype mismatch in {op}: query {q._dtype.name}, key {k._dtype.name}, value {v._dtype.name}")

    def shapes() -> str:
        return f"query {fmt_shape(q._shape)}, key {fmt_shape(k._shape)}, value {fmt_shape(v._shape)}"

    if q.ndim < 2 or not (q.ndim == k.ndim == v.ndim):
        raise ShapeError(f"shape mismatch in {op}: expected tensors of one rank >= 2, got {shapes()}")
    if q._shape[-1] != k._shape[-1] or k._shape[-2] != v._shape[-2] or k._shape[:-2] != v._shape[:-2]:
        raise ShapeError(f"shape mismatch in {op}: {shapes()}")
    if q.ndim >= 3:
        if q._shape[:-3] != k._shape[:-3]:
            raise ShapeError(f"shape mismatch in {op}: batch dims differ: {shapes()}")
        hq, hk = q._shape[-3], k._shape[-3]
        if hq != hk and not (enable_gqa and hk > 0 and hq % hk == 0):
            why = "pass enable_gqa=True for grouped-query attention" if not enable_gqa else \
                "the query heads must be a multiple of the key/value heads"
            raise ShapeError(f"shape mismatch in {op}: {hq} query heads and {hk} key/value heads ({why}): "
                             f"{shapes()}")


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
                                 enable_gqa: bool = False, *, causal_offset: int | None = None) -> Tensor:
    """`softmax(query @ key^T * scale + mask) @ value` with PyTorch's signature and semantics.

    Shapes: query [..., Hq, L, E], key [..., Hk, S, E], value [..., Hk, S, Ev] -> [..., Hq, L, Ev];
    `scale` defaults to 1/sqrt(E). With `enable_gqa`, Hk may divide Hq: query head h uses kv head
    h // (Hq / Hk) (PyTorch's repeat_interleave grouping, as in Llama's GQA).

    attn_mask broadcasts to [..., Hq, L, S]: uint8 (bool-like, non-zero = attend) or float (added to
    the scores; cast to the query's dtype). `is_causal=True` masks key j > query i: PyTorch's
    top-left alignment (`tril(ones(L, S))`). When the L queries are the *last* L of S positions
    (decoding with a KV cache) pass `causal_offset=S - L` (query i attends keys j <= i + offset);
    `causal_offset` implies `is_causal`. A causal flag and a mask combine (both must allow a key).
    Query rows that attend to nothing give zeros. Dropout (`dropout_p > 0`) runs the composition.
    """
    op = "scaled_dot_product_attention"
    if (attn_mask is None and dropout_p == 0.0 and isinstance(query, Tensor) and isinstance(key, Tensor)
            and isinstance(value, Tensor) and len(query._shape) == 4 and len(key._shape) == 4
            and len(value._shape) == 4 and query._dtype is key._dtype is value._dtype
            and query._device is key._device is value._device and query._dtype.is_floating_point
            and not (ag.state.enabled and (query._requires_grad or key._requires_grad or value._requires_grad))):
        out = _sdpa_plain(query, key, value, is_causal, scale, enable_gqa, causal_offset)
        if out is not None:
            return out
    _check_qkv(query, key, value, enable_gqa)
    lq, e = query._shape[-2:]
    s = key._shape[-2]
    lead = query._shape[:-2]
    scale = 1.0 / math.sqrt(e) if scale is None else float(scale)
    offset = None if not (is_causal or causal_offset is not None) else int(causal_offset or 0)
    maskf: Tensor | None = None
    mask4: Tensor | None = None
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor):
            raise DTypeError(f"{op}: attn_mask must be a Tensor, got {type(attn_mask).__name__}")
        want = lead + (lq, s)
        if not _fits(attn_mask._shape, want):
            raise ShapeError(f"{op}: attn_mask of shape {fmt_shape(attn_mask._shape)} does not broadcast to "
                             f"{fmt_shape(want)}")
        if attn_mask._dtype.is_floating_point:
            maskf = cast(attn_mask, query._dtype)
        elif attn_mask._dtype is not uint8:
            attn_mask = ne(attn_mask, 0)
        mask4 = _mask4((maskf if maskf is not None else attn_mask).detach(), lead)
    if s == 0:  # no keys: every row attends to nothing
        return full_of(query, lead + (lq, value._shape[-1]), 0)
    if dropout_p > 0.0:  # autograd through the composition
        out4 = sdpa_composed(_to4(query), _to4(key), _to4(value), mask4 if maskf is None else
                             _mask4(maskf, lead), scale, offset, dropout_p)
        return reshape(out4, lead + (lq, value._shape[-1]))
    q4, k4, v4 = _to4(query.detach()), _to4(key.detach()), _to4(value.detach())
    kernel = fused(query._backend, "sdpa")
    with ag.no_grad():
        if kernel is None:
            out4 = sdpa_composed(q4, k4, v4, mask4, scale, offset)
        else:
            kind = None if mask4 is None else ("bool" if mask4._dtype is uint8 else "add")
            data = kernel(q4._data, k4._data, v4._data, None if mask4 is None else mask4._data, q4._shape,
                          k4._shape, v4._shape, None if mask4 is None else mask4._shape, kind, scale, offset,
                          query._dtype)
            out4 = like(q4, data, q4._shape[:-1] + (v4._shape[-1],))
    out = reshape(out4, lead + (lq, value._shape[-1]))
    inputs = (query, key, value) + ((maskf,) if maskf is not None else ())
    if needs_grad(*inputs):
        def grad(gout: Tensor) -> tuple[Tensor | None, ...]:
            b, hq, _, ev = out4._shape
            hk = k4._shape[1]
            rows = hq // hk * lq
            p = _probs(q4, k4, mask4, scale, offset)  # [B, Hk, G*L, S]
            g = reshape(gout, (b, hk, rows, ev))
            o = reshape(out4, (b, hk, rows, ev))
            dp = matmul(g, transpose(v4, -1, -2))
            ds = p * (dp - sum(g * o, -1, keepdim=True))
            dq = dk = dv = dm = None
            if query._requires_grad:
                dq = reshape(matmul(ds, k4) * scale, query._shape)
            if key._requires_grad:
                dk = reshape(matmul(transpose(ds, -1, -2), reshape(q4, (b, hk, rows, e))) * scale, key._shape)
            if value._requires_grad:
                dv = reshape(matmul(transpose(p, -1, -2), g), value._shape)
            if maskf is not None and maskf._requires_grad:
                dm = unbroadcast(reshape(ds, lead + (lq, s)), maskf._shape)
            return (dq, dk, dv, dm)[:len(inputs)]

        record(out, "sdpa", inputs, grad)
    return out


def _sdpa_plain(query: Tensor, key: Tensor, value: Tensor, is_causal: bool, scale: float | None, enable_gqa: bool,
                causal_offset: int | None) -> Tensor | None:
    """The fused kernel on 4-d tensors without a mask, dropout or grad (the decode hot path), or None
    when the shapes need the checks (and error messages) of the general path or there is no kernel."""
    (b, hq, lq, e), (bk, hk, s, ek), (bv, hv, sv, ev) = query._shape, key._shape, value._shape
    if not (b == bk == bv and e == ek and hk == hv and s == sv and s > 0 and hk > 0
            and (hq == hk or (enable_gqa and hq % hk == 0))):
        return None
    be = query._backend
    kernel = fused(be, "sdpa")
    if kernel is None:
        return None
    scale = 1.0 / math.sqrt(e) if scale is None else float(scale)
    offset = None if not (is_causal or causal_offset is not None) else int(causal_offset or 0)
    shape = (b, hq, lq, ev)
    data = kernel(query._data, key._data, value._data, None, query._shape, key._shape, value._shape, None, None,
                  scale, offset, query._dtype)
    return make(data, shape, query._dtype, query._device, be)

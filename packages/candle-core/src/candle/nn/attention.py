"""Attention building blocks: rotary embeddings, scaled dot-product attention, a preallocated KV
cache and `MultiheadAttention` (PyTorch's module, with its parameter names).

Layout convention for the LLM pieces: queries, keys and values are [batch, heads, seq, head_dim].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import autograd as ag
from ..device import Device
from ..dtype import DType, as_dtype, float32, uint8
from ..errors import DTypeError, ShapeError, UnsupportedError, fmt_shape
from ..ops import attention as _att
from ..ops.activation import softmax
from ..ops.creation import normal, rand, tensor, uniform, zeros
from ..ops.elementwise import cast, masked_fill, where
from ..ops.indexing import cat, index_select
from ..ops.linalg import matmul
from ..ops.reduce import mean
from ..ops.shape import expand, narrow, reshape, split, squeeze, transpose, unsqueeze
from ..tensor import Tensor
from .module import Module
from .parameter import Parameter

__all__ = ["apply_rotary_emb", "scaled_dot_product_attention", "causal_mask", "RotaryEmbedding",
           "rope_frequencies", "KVCache", "MultiheadAttention"]

scaled_dot_product_attention = _att.scaled_dot_product_attention
causal_mask = _att.causal_mask
rope = _att.rope


def apply_rotary_emb(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool = False) -> Tensor:
    """Rotate feature pairs of `x` [..., seq, head_dim] by the angles whose cos/sin are given
    ([seq, head_dim/2] or broadcastable); see `candle.ops.attention.rope` for both layouts."""
    return _att.rope(x, cos, sin, interleaved)


# --- rotary embeddings ----------------------------------------------------------------------------
def rope_frequencies(head_dim: int, base: float = 10000.0, rope_scaling: Mapping[str, Any] | None = None) -> np.ndarray:
    """The inverse frequencies `1 / base^(2i/head_dim)` (float32, as Hugging Face computes them),
    adjusted by `rope_scaling` (HF config style): `{"rope_type": "linear", "factor": f}` divides
    them by f; `{"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor",
    "original_max_position_embeddings"}` applies Llama 3.1's frequency-dependent scaling."""
    if head_dim <= 0 or head_dim % 2:
        raise ShapeError(f"rope_frequencies: head_dim must be positive and even, got {head_dim}")
    exps = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    # the power in float64 rounded once reproduces torch's float32 pow (checked on common bases)
    inv = np.float32(1.0) / (float(base) ** exps.astype(np.float64)).astype(np.float32)
    if not rope_scaling:
        return inv
    kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if kind == "default":
        return inv
    factor = float(rope_scaling["factor"])
    if kind == "linear":
        return (inv / np.float32(factor)).astype(np.float32)
    if kind != "llama3":
        raise UnsupportedError(f"RotaryEmbedding: rope scaling {kind!r} is not supported (default, linear, llama3)")
    low = float(rope_scaling.get("low_freq_factor", 1.0))
    high = float(rope_scaling.get("high_freq_factor", 4.0))
    old = float(rope_scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = np.float32(2 * math.pi) / inv
    scaled = np.where(wavelen > low_wavelen, inv / np.float32(factor), inv).astype(np.float32)
    smooth = ((np.float32(old) / wavelen - np.float32(low)) / np.float32(high - low)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


class RotaryEmbedding(Module):
    """Precomputed rotary tables for positions 0..max_position_embeddings-1.

    `forward(q, k, position_offset)` rotates q and k ([batch, heads, seq, head_dim]) for positions
    `offset .. offset+seq-1`; `position_offset` may also be an int64 tensor of position ids,
    [seq] or [batch, seq] (e.g. left-padded batches). `interleaved` picks the GPT-J/llama.cpp pair
    layout instead of the half-split one (HF Llama). The angles are computed in float32 like HF
    (`pos * inv_freq`), stored as the non-persistent buffers `cos_cached`/`sin_cached`
    [max_positions, head_dim/2] and cast to the inputs' dtype when applied.
    """

    def __init__(self, head_dim: int, max_position_embeddings: int = 2048, base: float = 10000.0,
                 interleaved: bool = False, rope_scaling: Mapping[str, Any] | None = None,
                 device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.max_position_embeddings = max_position_embeddings
        self.base = base
        self.interleaved = interleaved
        self.rope_scaling = dict(rope_scaling) if rope_scaling else None
        inv = rope_frequencies(head_dim, base, rope_scaling)
        freqs = np.arange(max_position_embeddings, dtype=np.float32)[:, None] * inv[None, :]
        dt = as_dtype(dtype) if dtype is not None else float32
        self.register_buffer("inv_freq", tensor(inv, device=device), persistent=False)
        self.register_buffer("cos_cached", tensor(np.cos(freqs), device=device).to(dtype=dt), persistent=False)
        self.register_buffer("sin_cached", tensor(np.sin(freqs), device=device).to(dtype=dt), persistent=False)

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, max_position_embeddings={self.max_position_embeddings}, "
                f"base={self.base}, interleaved={self.interleaved}")

    def cos_sin(self, seq_len: int, position_offset: int | Tensor = 0) -> tuple[Tensor, Tensor]:
        """cos/sin tables for `seq_len` positions from `position_offset` ([seq, head_dim/2]), or for
        explicit position ids ([seq] -> [seq, head_dim/2], [batch, seq] -> [batch, 1, seq, head_dim/2])."""
        cos, sin = self.cos_cached, self.sin_cached
        n = self.max_position_embeddings
        if isinstance(position_offset, Tensor):
            pos = position_offset
            if pos._dtype.is_floating_point or pos.ndim not in (1, 2) or pos._shape[-1] != seq_len:
                raise ShapeError(f"RotaryEmbedding: position ids must be an integer tensor [seq] or [batch, seq] "
                                 f"with seq = {seq_len}, got {pos._dtype.name} {fmt_shape(pos._shape)}")
            flat = reshape(pos, (-1,))
            h = self.head_dim // 2
            c = reshape(index_select(cos, 0, flat), pos._shape + (h,))
            s = reshape(index_select(sin, 0, flat), pos._shape + (h,))
            return (unsqueeze(c, 1), unsqueeze(s, 1)) if pos.ndim == 2 else (c, s)
        off = int(position_offset)
        if off < 0 or off + seq_len > n:
            raise ShapeError(f"RotaryEmbedding: positions {off}..{off + seq_len - 1} exceed the "
                             f"{n} precomputed positions (max_position_embeddings)")
        return narrow(cos, 0, off, seq_len), narrow(sin, 0, off, seq_len)

    def forward(self, q: Tensor, k: Tensor, position_offset: int | Tensor = 0) -> tuple[Tensor, Tensor]:
        """(rope(q), rope(k)) for positions starting at `position_offset` (or the given position ids)."""
        if q._shape[-1] != self.head_dim or k._shape[-1] != self.head_dim:
            raise ShapeError(f"RotaryEmbedding: expected head_dim {self.head_dim}, got q {fmt_shape(q._shape)}, "
                             f"k {fmt_shape(k._shape)}")
        cq, sq = self.cos_sin(q._shape[-2], position_offset)
        if k._shape[-2] == q._shape[-2]:
            ck, sk = cq, sq
        else:
            ck, sk = self.cos_sin(k._shape[-2], position_offset)
        return _att.rope(q, cq, sq, self.interleaved), _att.rope(k, ck, sk, self.interleaved)


# --- KV cache -------------------------------------------------------------------------------------
class KVCache:
    """A preallocated key/value cache for autoregressive decoding.

    Buffers `k` and `v` are [batch, kv_heads, max_len, head_dim] (v may have its own head_dim).
    `append(k, v)` writes the new [batch, kv_heads, n, head_dim] entries in place and returns views
    of the keys and values the new queries attend to; the queries are always the *last* n of the
    returned positions, so attention needs a bottom-right causal mask: pass
    `causal_offset=kv_len - n` to `scaled_dot_product_attention`, or `attn_mask=cache.attn_mask(n,
    kv_len)` (None when nothing must be masked, e.g. a decode step).

    Sliding window (`sliding_window=W`, W <= max_len): a query attends only to the last W positions
    (itself included). The cache keeps them by shifting rather than by a ring buffer, so returned
    keys stay in position order and are plain views: when the buffer is full, the last W-1 entries
    are copied to its front. With max_len = 2*W that copy happens once per W+1 decode steps. The
    returned keys are the W-1 previous positions plus the n new ones; use `attn_mask` (which adds
    the window to the causal mask) when n > 1. An append that does not fit even after shifting
    returns concatenated copies instead of views and keeps the last entries.
    """

    def __init__(self, batch_size: int, num_kv_heads: int, max_len: int, head_dim: int, *,
                 v_head_dim: int | None = None, sliding_window: int | None = None,
                 dtype: DType | str | None = None, device: Device | str | None = None) -> None:
        if sliding_window is not None and not 0 < sliding_window <= max_len:
            raise ShapeError(f"KVCache: sliding_window {sliding_window} must be in 1..max_len ({max_len})")
        self.max_len = max_len
        self.sliding_window = sliding_window
        self.k = zeros(batch_size, num_kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = zeros(batch_size, num_kv_heads, max_len, v_head_dim or head_dim, dtype=dtype, device=device)
        self._len = 0
        self._pos = 0

    @property
    def current_length(self) -> int:
        """Entries currently held in the buffers."""
        return self._len

    def __len__(self) -> int:
        return self._len

    @property
    def position(self) -> int:
        """Tokens appended since the last reset: the position of the next token (rope offset)."""
        return self._pos

    def reset(self) -> None:
        """Forget every entry (the buffers are reused, not cleared)."""
        self._len = 0
        self._pos = 0

    def _check(self, k: Tensor, v: Tensor) -> int:
        b, h, _, d = self.k._shape
        dv = self.v._shape[-1]
        if k.ndim != 4 or v.ndim != 4 or k._shape[:2] != (b, h) or v._shape[:2] != (b, h) or k._shape[3] != d \
                or v._shape[3] != dv or k._shape[2] != v._shape[2]:
            raise ShapeError(f"KVCache.append: expected k [{b}, {h}, n, {d}] and v [{b}, {h}, n, {dv}], got "
                             f"k {fmt_shape(k._shape)}, v {fmt_shape(v._shape)}")
        return k._shape[2]

    def _write(self, at: int, k: Tensor, v: Tensor) -> None:
        n = k._shape[2]
        with ag.no_grad():
            self.k[:, :, at:at + n] = k
            self.v[:, :, at:at + n] = v

    def _views(self, start: int, stop: int) -> tuple[Tensor, Tensor]:
        return narrow(self.k, 2, start, stop - start), narrow(self.v, 2, start, stop - start)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new entries; return the keys and values the new queries attend to."""
        n = self._check(k, v)
        w = self.sliding_window
        if w is None:
            if self._len + n > self.max_len:
                raise ShapeError(f"KVCache.append: {self._len} + {n} entries exceed max_len {self.max_len}")
            self._write(self._len, k, v)
            self._len += n
            self._pos += n
            return self._views(0, self._len)
        keep = min(self._len, w - 1)
        self._pos += n
        if self._len + n <= self.max_len:
            self._write(self._len, k, v)
            self._len += n
            return self._views(self._len - n - keep, self._len)
        if keep + n <= self.max_len:  # shift the last keep entries to the front
            if keep and self._len != keep:
                with ag.no_grad():
                    src_k, src_v = self._views(self._len - keep, self._len)
                    self.k[:, :, :keep] = src_k.clone()
                    self.v[:, :, :keep] = src_v.clone()
            self._write(keep, k, v)
            self._len = keep + n
            return self._views(0, self._len)
        with ag.no_grad():  # longer than the buffer: return copies, keep the newest entries
            pk, pv = self._views(self._len - keep, self._len)
            fk = cat([pk.clone(), k], 2) if keep else k
            fv = cat([pv.clone(), v], 2) if keep else v
            store = min(self.max_len, keep + n)
            self._write(0, narrow(fk, 2, keep + n - store, store), narrow(fv, 2, keep + n - store, store))
        self._len = store
        return fk, fv

    def attn_mask(self, q_len: int, kv_len: int) -> Tensor | None:
        """The uint8 [q_len, kv_len] mask for the last `append` (causal, bottom-right aligned, with the
        sliding window), or None when every query may see every key (a decode step)."""
        w = self.sliding_window
        if q_len == 1 and (w is None or kv_len <= w):
            return None
        return _att.causal_mask(q_len, kv_len, None, w, device=self.k._device)


# --- MultiheadAttention ---------------------------------------------------------------------------
def _xavier_uniform(shape: tuple[int, ...], fan_in: int, fan_out: int, dtype: DType | str | None,
                    device: Device | str | None) -> Tensor:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, -bound, bound, dtype=dtype, device=device)


def _dropout(x: Tensor, p: float) -> Tensor:
    if p <= 0.0:
        return x
    keep = rand(x._shape, dtype=x._dtype, device=x._device) >= p
    return where(keep, x * (1.0 / (1.0 - p)), 0.0)


class _Linear(Module):
    """`out_proj` of MultiheadAttention: weight [out, in] and bias [out], like `torch.nn.Linear`."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: DType | str | None,
                 device: Device | str | None) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features) if in_features else 0.0
        self.weight = Parameter(uniform((out_features, in_features), -bound, bound, dtype=dtype, device=device))
        if bias:
            self.bias = Parameter(zeros(out_features, dtype=dtype, device=device))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        y = matmul(x, transpose(self.weight, 0, 1))
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}, bias={self.bias is not None}"


def _linear(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    y = matmul(x, transpose(w, 0, 1))
    return y + b if b is not None else y


def _additive(mask: Tensor, dtype: DType, name: str) -> Tensor:
    """A PyTorch MHA mask (bool-like: non-zero = masked out; or float: added) as a float mask."""
    if mask._dtype.is_floating_point:
        return cast(mask, dtype)
    if mask._dtype is not uint8:
        raise DTypeError(f"MultiheadAttention: {name} must be uint8 (bool-like) or float, got {mask._dtype.name}")
    z = zeros(mask._shape, dtype=dtype, device=mask._device)
    return masked_fill(z, mask, float("-inf"))


class MultiheadAttention(Module):
    """`torch.nn.MultiheadAttention`: same arguments, parameter names and semantics.

    Parameters: `in_proj_weight` [3E, E] (or `q_proj_weight`, `k_proj_weight`, `v_proj_weight` when
    kdim/vdim differ from embed_dim), `in_proj_bias` [3E], `out_proj.weight`/`out_proj.bias`, and
    with `add_bias_kv` `bias_k`/`bias_v` [1, 1, E]: a torch state dict loads as is. Inputs are
    [L, N, E] ([N, L, E] with `batch_first`) or unbatched [L, E]. Masks follow torch too (note they
    are the opposite of `scaled_dot_product_attention`'s): `key_padding_mask` [N, S] and `attn_mask`
    [L, S] or [N*heads, L, S] are uint8 (non-zero = *not* attended) or float (added to the scores).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device: Device | str | None = None,
                 dtype: DType | str | None = None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0 or embed_dim % num_heads:
            raise ShapeError(f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        self.add_zero_attn = add_zero_attn
        e = embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(_xavier_uniform((3 * e, e), e, 3 * e, dtype, device))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = Parameter(_xavier_uniform((e, e), e, e, dtype, device))
            self.k_proj_weight = Parameter(_xavier_uniform((e, self.kdim), self.kdim, e, dtype, device))
            self.v_proj_weight = Parameter(_xavier_uniform((e, self.vdim), self.vdim, e, dtype, device))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(zeros(3 * e, dtype=dtype, device=device))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = _Linear(e, e, bias, dtype, device)
        if add_bias_kv:
            std = math.sqrt(1.0 / e)  # xavier_normal_ of a [1, 1, E] tensor
            self.bias_k = Parameter(normal((1, 1, e), 0.0, std, dtype=dtype, device=device))
            self.bias_v = Parameter(normal((1, 1, e), 0.0, std, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_k", None)
            self.register_parameter("bias_v", None)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"

    def _projections(self) -> tuple[Tensor, Tensor, Tensor, list[Tensor | None]]:
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            wq, wk, wv = split(self.in_proj_weight, e, 0)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bs: list[Tensor | None] = list(split(self.in_proj_bias, e, 0)) if self.in_proj_bias is not None \
            else [None, None, None]
        return wq, wk, wv, bs

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """(attention output, attention weights or None), like torch."""
        batched = query.ndim == 3
        if query.ndim not in (2, 3) or key.ndim != query.ndim or value.ndim != query.ndim:
            raise ShapeError(f"MultiheadAttention: expected 2-d (unbatched) or 3-d query, key and value, got "
                             f"{fmt_shape(query._shape)}, {fmt_shape(key._shape)}, {fmt_shape(value._shape)}")
        if is_causal and attn_mask is None:
            raise ShapeError("MultiheadAttention: is_causal is a hint that attn_mask is the causal mask; pass "
                             "attn_mask too")
        if not batched:
            query, key, value = unsqueeze(query, 1), unsqueeze(key, 1), unsqueeze(value, 1)
            if key_padding_mask is not None:
                key_padding_mask = unsqueeze(key_padding_mask, 0)
        elif self.batch_first:
            query, key, value = transpose(query, 0, 1), transpose(key, 0, 1), transpose(value, 0, 1)
        lq, n, e = query._shape
        if e != self.embed_dim or key._shape[-1] != self.kdim or value._shape[-1] != self.vdim \
                or key._shape[:2] != value._shape[:2] or key._shape[1] != n:
            raise ShapeError(f"MultiheadAttention: shapes do not fit embed_dim {self.embed_dim}, kdim {self.kdim}, "
                             f"vdim {self.vdim}: query {fmt_shape(query._shape)}, key {fmt_shape(key._shape)}, "
                             f"value {fmt_shape(value._shape)} (sequence-first after batch_first)")
        wq, wk, wv, (bq, bk, bv) = self._projections()
        q, k, v = _linear(query, wq, bq), _linear(key, wk, bk), _linear(value, wv, bv)
        h, hd = self.num_heads, self.head_dim
        if self.bias_k is not None:
            k = cat([k, expand(self.bias_k, (1, n, e))], 0)
            v = cat([v, expand(self.bias_v, (1, n, e))], 0)
        # masks -> one additive float mask broadcastable to [N, H, L, S]
        extra = (1 if self.bias_k is not None else 0) + (1 if self.add_zero_attn else 0)
        merged = None
        if attn_mask is not None:
            am = _additive(attn_mask, q._dtype, "attn_mask")
            s_in = key._shape[0]
            if am.ndim == 2 and am._shape == (lq, s_in):
                am = reshape(am, (1, 1, lq, s_in))
            elif am.ndim == 3 and am._shape == (n * h, lq, s_in):
                am = reshape(am, (n, h, lq, s_in))
            else:
                raise ShapeError(f"MultiheadAttention: attn_mask must be [{lq}, {s_in}] or [{n * h}, {lq}, {s_in}], "
                                 f"got {fmt_shape(attn_mask._shape)}")
            merged = am
        if key_padding_mask is not None:
            if key_padding_mask._shape != (n, key._shape[0]):
                raise ShapeError(f"MultiheadAttention: key_padding_mask must be [{n}, {key._shape[0]}], got "
                                 f"{fmt_shape(key_padding_mask._shape)}")
            kp = reshape(_additive(key_padding_mask, q._dtype, "key_padding_mask"), (n, 1, 1, key._shape[0]))
            merged = kp if merged is None else merged + kp
        if merged is not None and extra:  # the added bias / zero keys are never masked
            merged = cat([merged, zeros(merged._shape[:-1] + (extra,), dtype=merged._dtype,
                                        device=merged._device)], -1)
        # [S, N, E] -> [N, H, S, hd]
        q = transpose(reshape(q, (lq, n, h, hd)), 0, 1).permute(0, 2, 1, 3)
        k = transpose(reshape(k, (k._shape[0], n, h, hd)), 0, 1).permute(0, 2, 1, 3)
        v = transpose(reshape(v, (v._shape[0], n, h, hd)), 0, 1).permute(0, 2, 1, 3)
        if self.add_zero_attn:
            k = cat([k, zeros((n, h, 1, hd), dtype=k._dtype, device=k._device)], 2)
            v = cat([v, zeros((n, h, 1, hd), dtype=v._dtype, device=v._device)], 2)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = matmul(q * (1.0 / math.sqrt(hd)), transpose(k, -1, -2))
            if merged is not None:
                scores = scores + merged
            attn = softmax(scores, -1)
            weights = mean(attn, 1) if average_attn_weights else attn
            out = matmul(_dropout(attn, p), v)
        else:
            out = _att.scaled_dot_product_attention(q, k, v, merged, dropout_p=p)
        out = reshape(out.permute(2, 0, 1, 3), (lq, n, e))
        out = self.out_proj(out)
        if not batched:
            out = squeeze(out, 1)
            weights = squeeze(weights, 0) if weights is not None else None
        elif self.batch_first:
            out = transpose(out, 0, 1)
        return out, weights

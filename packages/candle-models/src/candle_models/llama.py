"""The Llama family: Llama 2/3, TinyLlama, SmolLM2, Mistral-style models.

Grouped-query attention, rotary embeddings (HF's half-split layout, theta, linear / Llama-3 scaling or
GGUF's `rope_freqs` factors), RMSNorm, a SwiGLU MLP, a tied or separate output head, optional
attention/MLP biases and a sliding window. Device- and dtype-agnostic: only candle ops run here.

    model = LlamaForCausalLM.from_weights(config, weights, device="cpu", dtype="float32")
    cache = model.new_cache()                          # preallocated KV cache, grows when needed
    logits = model(ids, cache)                         # ids [B, T] int64 -> logits [B, T, vocab]
    logits = model(next_id, cache, last_only=True)     # decode: [B, 1, vocab]

Weight layout (chosen for the decode hot path, set once at load): the projections are stored
transposed, `[in, out]` and C-contiguous, so `x @ W` runs BLAS on the stored buffer without a copy
(measured with numpy, best of 10, for the 1-row matvecs of one decode step over SmolLM2's 538 MB of
float32 matrices on a 2-core CPU: 20 ms against 23 ms for `x @ W.T` on the `[out, in]` buffers and
22 ms for `W @ x`; with one BLAS thread 25 ms against 39 ms and 39 ms), except the down projection,
whose output is narrow: OpenBLAS streams it faster as `x @ W.T` on the `[out, in]` buffer (SmolLM2's 30
down projections, 106 MB: 3.6 ms against 5.0 ms with 2 threads, 6.5 against 7.2 with one; the other
projections measured the other way round), so it stays as stored and is applied through a transposed view.
Q, K and V are fused into one `[hidden, q+2kv]` matrix and gate/up into one `[hidden, 2*intermediate]`
matrix, so a layer is 4 matmuls. With a tied head the model keeps only the transposed embedding
`[hidden, vocab]` and looks tokens up by column (one gather of `hidden` floats per token). The
transposition costs about 0.2 s of SmolLM2's load, spread over worker threads.

A decode step per layer is 12 kernels: rms_norm, matmul, one rope rotating Q and K in place in the
projection's output, one copy of the new keys and values (adjacent there) into the cache, sdpa (GQA without
repeating K/V), matmul + residual, rms_norm, matmul, silu_mul (on the gate/up halves), matmul + residual.
The per-token Python around them is kept small (the Python cost of an op is comparable to its numpy
work at these sizes): the cache's key/value views are made once per buffer, parameters are read from the
modules' dicts, and the few views a step needs (the QKV split, the cache slot) are the only other ops.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

import candle
from candle import Device, DType, ShapeError, Tensor
from candle.device import as_device
from candle.nn import Module, ModuleList, Parameter
from candle.nn.attention import rope_frequencies
from candle.ops.attention import causal_mask, rope, scaled_dot_product_attention
from candle.ops.norm import rms_norm, silu_mul
from candle.quantized import qembedding

from .config import LlamaConfig
from .quantized_weights import QMat, fuse_rows
from .registry import register

__all__ = ["LlamaCache", "LlamaForCausalLM", "Weights"]

_INITIAL_CACHE = 256  # positions a cache holds before it first grows
_INITIAL_ROPE = 4096  # positions of the rotary tables before they first grow


class Weights(Protocol):
    """Named host tensors in Hugging Face naming (`candle.nn.WeightStore` is one; so is
    `candle_models.gguf_weights.GGUFWeights`). `get` checks the stored shape before reading."""

    def __contains__(self, name: object) -> bool: ...

    def get(self, name: str, shape: Any = None, dtype: Any = None) -> Tensor: ...


def _param(t: Tensor) -> Parameter:
    return Parameter(t, requires_grad=False)


def _weight(module: Module, name: str, w: Tensor | QMat) -> None:
    """A projection: a Parameter `name` (float, applied as `x @ w`), or a quantized `QMat` kept as `_q_<name>`
    (applied as `w(x)`); `_q_<name>` is None on the float path."""
    if isinstance(w, QMat):
        object.__setattr__(module, "_q_" + name, w)
    else:
        object.__setattr__(module, "_q_" + name, None)
        setattr(module, name, _param(w))


# --- KV cache ----------------------------------------------------------------------------------------
class LlamaCache:
    """Preallocated per-layer key/value buffers `kv[layer]` of shape `[batch, 2 * kv_heads, max_len, head_dim]`:
    the keys in heads `0 .. kv_heads-1`, the values after them, so that one step's new keys and values (adjacent
    in the fused QKV projection's output) are written with a single copy.

    `position` is the number of positions held (the next token's position). New entries are written
    in place; when a forward needs more room the buffers grow (doubling, up to the model's
    `max_position_embeddings`) and the held entries are copied once.
    """

    def __init__(self, config: LlamaConfig, batch_size: int, max_len: int, dtype: DType, device: Device) -> None:
        self.config, self.batch_size, self.dtype, self.device = config, batch_size, dtype, device
        self.limit = config.max_position_embeddings
        self.max_len = 0
        self.position = 0
        self.kv: list[Tensor] = []
        self._kv_views: list[tuple[Tensor, Tensor]] = []
        self._alloc(min(max(1, max_len), self.limit))

    def _alloc(self, n: int) -> None:
        c = self.config
        shape = (self.batch_size, 2 * c.num_key_value_heads, n, c.head_dim)
        old, keep = self.kv, self.position
        self.kv = [candle.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(c.num_hidden_layers)]
        hk = c.num_key_value_heads
        self._kv_views = [(kv.narrow(1, 0, hk), kv.narrow(1, hk, hk)) for kv in self.kv]  # made once, not per step
        if keep:
            for new, prev in zip(self.kv, old):
                new.narrow(2, 0, keep).copy_(prev.narrow(2, 0, keep))
        self.max_len = n

    def reserve(self, start: int, n: int) -> None:
        """Make room for positions `start .. start+n-1` (growing the buffers if needed)."""
        end = start + n
        if end > self.limit:
            raise ShapeError(f"LlamaCache: positions up to {end} exceed the model's max_position_embeddings "
                             f"({self.limit})")
        if end > self.max_len:
            self._alloc(min(self.limit, max(end, 2 * self.max_len)))

    def update(self, layer: int, start: int, kv: Tensor) -> tuple[Tensor, Tensor]:
        """Write the keys and values `kv` `[B, 2 * kv_heads, n, head_dim]` at `start`; return (keys, values),
        views `[B, kv_heads, start+n, head_dim]` of positions `0 .. start+n-1`."""
        n = kv._shape[2]
        self.kv[layer].narrow(2, start, n).copy_(kv)
        k, v = self._kv_views[layer]
        return k.narrow(2, 0, start + n), v.narrow(2, 0, start + n)

    def reset(self) -> None:
        """Forget every entry (the buffers are kept)."""
        self.position = 0

    def __len__(self) -> int:
        return self.position


# --- layers ------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Step:
    """What every layer of one forward shares: batch and new-token counts, the rotary tables of their
    positions, the cache and the first position, and the sliding-window mask (if one is needed)."""

    batch: int
    t: int
    cos: Tensor
    sin: Tensor
    cache: LlamaCache | None
    start: int
    mask: Tensor | None


class LlamaAttention(Module):
    """Fused QKV projection `qkv_t [hidden, q+2kv]`, output projection `o_t [q, hidden]`."""

    def __init__(self, config: LlamaConfig, qkv_t: Tensor, o_t: Tensor, qkv_bias: Tensor | None = None,
                 o_bias: Tensor | None = None) -> None:
        super().__init__()
        self.n_q, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.window = config.sliding_window
        _weight(self, "qkv_t", qkv_t)
        _weight(self, "o_t", o_t)
        self.qkv_bias = _param(qkv_bias) if qkv_bias is not None else None
        self.o_bias = _param(o_bias) if o_bias is not None else None

    def forward(self, x: Tensor, step: _Step, layer: int) -> Tensor:
        """x `[B*T, hidden]` (normalised) -> attention output `[B*T, hidden]` (before the residual).

        Q and K are rotated in place in the projection's output (one rope kernel for both), then the new
        keys and values, adjacent there, go to the cache in one copy."""
        n_q, n_kv, hd = self.n_q, self.n_kv, self.head_dim
        batch, t = step.batch, step.t
        p = self._parameters
        qw = self._q_qkv_t
        qkv = qw(x) if qw is not None else x @ p["qkv_t"]
        bias = p.get("qkv_bias")
        if bias is not None:
            qkv = qkv + bias
        if t == 1:  # decode: [B, heads*D] is already [B, heads, 1, D] in memory
            qkv = qkv.reshape(batch, n_q + 2 * n_kv, 1, hd)
        else:
            qkv = qkv.reshape(batch, t, n_q + 2 * n_kv, hd).transpose(1, 2)  # [B, heads, T, D], a view
        qk = qkv.narrow(1, 0, n_q + n_kv)
        rope(qk, step.cos, step.sin, out=qk)
        q, kv = qkv.split([n_q, 2 * n_kv], 1)
        if step.cache is not None:
            k, v = step.cache.update(layer, step.start, kv)
        else:
            k, v = kv.split(n_kv, 1)
        s = k._shape[2]
        mask = step.mask
        if t == 1 and self.window is not None and s > self.window:  # decode: the last `window` keys, a view
            k, v = k.narrow(2, s - self.window, self.window), v.narrow(2, s - self.window, self.window)
            s = self.window
        o = scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True,
                                         causal_offset=None if mask is not None else s - t)
        o = o.reshape(batch, n_q * hd) if t == 1 else o.transpose(1, 2).reshape(batch * t, n_q * hd)
        qw = self._q_o_t
        o = qw(o) if qw is not None else o @ p["o_t"]
        bias = p.get("o_bias")
        return o + bias if bias is not None else o


class LlamaMLP(Module):
    """SwiGLU: `down(silu(gate(x)) * up(x))` with gate/up fused as `gate_up_t [hidden, 2*inter]` and the down
    projection kept as `down [hidden, inter]` (`[out, in]`, applied as `x @ down.t()`: see the module docs)."""

    def __init__(self, gate_up_t: Tensor, down: Tensor, gate_up_bias: Tensor | None = None,
                 down_bias: Tensor | None = None) -> None:
        super().__init__()
        self.inter = down.shape[1]
        _weight(self, "gate_up_t", gate_up_t)
        _weight(self, "down", down)
        self.gate_up_bias = _param(gate_up_bias) if gate_up_bias is not None else None
        self.down_bias = _param(down_bias) if down_bias is not None else None

    def forward(self, x: Tensor) -> Tensor:
        p = self._parameters
        qw = self._q_gate_up_t
        gu = qw(x) if qw is not None else x @ p["gate_up_t"]
        bias = p.get("gate_up_bias")
        if bias is not None:
            gu = gu + bias
        a = silu_mul(gu)  # silu(gate) * up of the two halves, without making views
        qw = self._q_down
        y = qw(a) if qw is not None else a @ p["down"].t()
        bias = p.get("down_bias")
        return y + bias if bias is not None else y


class LlamaBlock(Module):
    """Pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`."""

    def __init__(self, config: LlamaConfig, attn: LlamaAttention, mlp: LlamaMLP, attn_norm: Tensor,
                 mlp_norm: Tensor) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.attn_norm = _param(attn_norm)
        self.attn = attn
        self.mlp_norm = _param(mlp_norm)
        self.mlp = mlp

    def forward(self, x: Tensor, step: _Step, layer: int) -> Tensor:
        p, m = self._parameters, self._modules  # direct lookups: Module.__getattr__ is a slow fallback
        x = x + m["attn"].forward(rms_norm(x, p["attn_norm"], self.eps), step, layer)
        return x + m["mlp"].forward(rms_norm(x, p["mlp_norm"], self.eps))


# --- reading weights ---------------------------------------------------------------------------------
def _fuse_t(*ws: Tensor) -> Tensor:
    """[out_i, in] matrices -> one C-contiguous [in, sum(out_i)] matrix (on the host)."""
    w = candle.cat(list(ws), 0) if len(ws) > 1 else ws[0]
    return w.t().contiguous()


class _HostReader:
    """Reads a model's tensors as host tensors in the layout the model runs on (fused, transposed)."""

    def __init__(self, config: LlamaConfig, weights: Weights, dtype: DType,
                 progress: Callable[[int], None] | None) -> None:
        self.c, self.w, self.dt = config, weights, dtype
        self.tick = progress or (lambda n: None)
        self._lock = threading.Lock()

    def get(self, name: str, shape: tuple[int, ...]) -> Tensor:
        t = self.w.get(name, shape=shape, dtype=self.dt)
        with self._lock:
            self.tick(1)
        return t

    def _bias(self, names: list[tuple[str, int]], required: bool) -> Tensor | None:
        """Biases concatenated (zeros where absent), or None when none exists; the config's
        attention_bias/mlp_bias make them required."""
        found = [self.get(n, (s,)) if required or n in self.w else None for n, s in names]
        if all(b is None for b in found):
            return None
        parts = [b if b is not None else candle.zeros(s, dtype=self.dt) for b, (_, s) in zip(found, names)]
        return candle.cat(parts, 0) if len(parts) > 1 else parts[0]

    def layer(self, i: int) -> dict[str, Tensor | None]:
        c, hid, inter = self.c, self.c.hidden_size, self.c.intermediate_size
        a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        q, kv = c.q_size, c.kv_size
        return {
            "qkv_t": _fuse_t(self.get(a + "q_proj.weight", (q, hid)), self.get(a + "k_proj.weight", (kv, hid)),
                             self.get(a + "v_proj.weight", (kv, hid))),
            "qkv_b": self._bias([(a + "q_proj.bias", q), (a + "k_proj.bias", kv), (a + "v_proj.bias", kv)],
                                c.attention_bias),
            "o_t": _fuse_t(self.get(a + "o_proj.weight", (hid, q))),
            "o_b": self._bias([(a + "o_proj.bias", hid)], c.attention_bias),
            "gate_up_t": _fuse_t(self.get(m + "gate_proj.weight", (inter, hid)),
                                 self.get(m + "up_proj.weight", (inter, hid))),
            "gate_up_b": self._bias([(m + "gate_proj.bias", inter), (m + "up_proj.bias", inter)], c.mlp_bias),
            "down": self.get(m + "down_proj.weight", (hid, inter)).contiguous(),
            "down_b": self._bias([(m + "down_proj.bias", hid)], c.mlp_bias),
            "attn_norm": self.get(f"model.layers.{i}.input_layernorm.weight", (hid,)),
            "mlp_norm": self.get(f"model.layers.{i}.post_attention_layernorm.weight", (hid,)),
        }

    def getq(self, name: str, shape: tuple[int, ...]) -> Any:
        t = self.w.get_quantized(name, shape)  # type: ignore[attr-defined]
        with self._lock:
            self.tick(1)
        return t

    def layer_quantized(self, i: int) -> dict[str, Any]:
        """`layer` with the projections kept quantized (`QMat`s of the stored blocks, `[out, in]`)."""
        d = self.layer_small(i)
        c, hid, inter = self.c, self.c.hidden_size, self.c.intermediate_size
        a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        q, kv = c.q_size, c.kv_size
        d["qkv_t"] = QMat(fuse_rows([self.getq(a + "q_proj.weight", (q, hid)),
                                     self.getq(a + "k_proj.weight", (kv, hid)),
                                     self.getq(a + "v_proj.weight", (kv, hid))]))
        d["o_t"] = QMat([self.getq(a + "o_proj.weight", (hid, q))])
        d["gate_up_t"] = QMat(fuse_rows([self.getq(m + "gate_proj.weight", (inter, hid)),
                                         self.getq(m + "up_proj.weight", (inter, hid))]))
        d["down"] = QMat([self.getq(m + "down_proj.weight", (hid, inter))])
        return d

    def layer_small(self, i: int) -> dict[str, Any]:
        """Biases and norms of layer i (float)."""
        c, hid, inter = self.c, self.c.hidden_size, self.c.intermediate_size
        a, m = f"model.layers.{i}.self_attn.", f"model.layers.{i}.mlp."
        q, kv = c.q_size, c.kv_size
        return {
            "qkv_b": self._bias([(a + "q_proj.bias", q), (a + "k_proj.bias", kv), (a + "v_proj.bias", kv)],
                                c.attention_bias),
            "o_b": self._bias([(a + "o_proj.bias", hid)], c.attention_bias),
            "gate_up_b": self._bias([(m + "gate_proj.bias", inter), (m + "up_proj.bias", inter)], c.mlp_bias),
            "down_b": self._bias([(m + "down_proj.bias", hid)], c.mlp_bias),
            "attn_norm": self.get(f"model.layers.{i}.input_layernorm.weight", (hid,)),
            "mlp_norm": self.get(f"model.layers.{i}.post_attention_layernorm.weight", (hid,)),
        }

    def head_quantized(self, tied: bool) -> tuple[Any, Any]:
        """(head QMat [vocab, hidden], embedding QTensor [vocab, hidden]) kept quantized."""
        shape = (self.c.vocab_size, self.c.hidden_size)
        emb = self.getq("model.embed_tokens.weight", shape)
        head = emb if tied else self.getq("lm_head.weight", shape)
        return QMat([head]), emb

    def head(self, tied: bool) -> tuple[Tensor, Tensor | None]:
        """(head_t [hidden, vocab], embedding [vocab, hidden] or None when tied)."""
        shape = (self.c.vocab_size, self.c.hidden_size)
        emb = self.get("model.embed_tokens.weight", shape)
        if tied:
            return _fuse_t(emb), None
        return _fuse_t(self.get("lm_head.weight", shape)), emb.contiguous()


# --- the model ---------------------------------------------------------------------------------------
@register("llama", "mistral")
class LlamaForCausalLM(Module):
    """A Llama-family causal LM. Build it with `from_weights`; call it as `model(input_ids, cache)`."""

    config_class = LlamaConfig

    def __init__(self, config: LlamaConfig, layers: list[LlamaBlock], norm: Tensor, head_t: Tensor | QMat,
                 embed: Tensor | Any | None = None) -> None:
        """`head_t` is the output head `[hidden, vocab]`; `embed` the token embedding `[vocab, hidden]`, or
        None when the head is tied (tokens are then looked up as columns of `head_t`). Quantized: `head_t` a
        `QMat` of the head `[vocab, hidden]` and `embed` the embedding's `QTensor` (the same blocks when tied);
        the activation dtype is then the norm's."""
        super().__init__()
        self.config = config
        self.layers = ModuleList(layers)
        self.norm = _param(norm)
        self._qembed = None
        if isinstance(head_t, QMat):
            self._q_head = head_t
            self._qembed = embed
            self.head_t = None
            self.embed = None
        else:
            self._q_head = None
            self.head_t = _param(head_t)
            self.embed = _param(embed) if embed is not None else None
        self._rope_len = 0
        self._cos: Tensor | None = None
        self._sin: Tensor | None = None

    @property
    def device(self) -> Device:
        return self.norm.device

    @property
    def dtype(self) -> DType:
        return self.norm.dtype

    @property
    def quantized(self) -> bool:
        """Whether the projections are kept quantized (`QMat`s) rather than float."""
        return self._q_head is not None

    # --- building --------------------------------------------------------------------------------
    @classmethod
    def from_weights(cls, config: LlamaConfig, weights: Weights, device: Device | str | None = "cpu",
                     dtype: DType | str | None = "float32", progress: Callable[[int], None] | None = None,
                     threads: int | None = None, quantized: bool = False) -> LlamaForCausalLM:
        """Build the model from Hugging Face named weights (`model.layers.N.self_attn.q_proj.weight`...),
        checking every shape before reading; `progress(n)` is called as tensors are read.

        Tensors are read, dequantized, fused and transposed on the host by `threads` worker threads
        (default: up to 4, numpy releases the GIL for that work), then moved to `device` in order.
        `quantized=True` (GGUF weights only: `weights.get_quantized`) keeps the projections, the embedding and
        the head in their stored GGML blocks (`QMat`, `QTensor`); `dtype` is then the activation dtype."""
        dt = candle.dtype.as_dtype(dtype or "float32")
        dev = as_device(device if device is not None else "cpu")
        c = config
        reader = _HostReader(c, weights, dt, progress)
        tied = c.tie_word_embeddings or "lm_head.weight" not in weights
        n = threads if threads is not None else min(4, os.cpu_count() or 1)
        if quantized and not hasattr(weights, "get_quantized"):
            raise candle.CandleError(f"{cls.__name__}: quantized=True needs GGUF weights "
                                     f"(got {type(weights).__name__})")
        with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
            head = pool.submit(reader.head_quantized if quantized else reader.head, tied)  # the largest: first
            parts = list(pool.map(reader.layer_quantized if quantized else reader.layer, range(c.num_hidden_layers)))
            norm = reader.get("model.norm.weight", (c.hidden_size,))
            head_t, embed = head.result()

        def on(t: Any) -> Any:
            if isinstance(t, QMat):
                return t.to(dev)
            if t is not None and not isinstance(t, Tensor):  # a QTensor
                return t.to(dev)
            return t.to(device=dev) if t is not None else None

        layers = [LlamaBlock(c, LlamaAttention(c, *(on(p[k]) for k in ("qkv_t", "o_t", "qkv_b", "o_b"))),
                             LlamaMLP(*(on(p[k]) for k in ("gate_up_t", "down", "gate_up_b", "down_b"))),
                             on(p["attn_norm"]), on(p["mlp_norm"]))
                  for p in parts]
        return cls(c, layers, on(norm), on(head_t), on(embed))

    @classmethod
    def config_from_hf(cls, d: dict[str, Any]) -> LlamaConfig:
        """The config of a Hugging Face `config.json` (parsed)."""
        return LlamaConfig.from_hf(d)

    @classmethod
    def config_from_gguf(cls, reader: Any) -> LlamaConfig:
        """The config of an open GGUF file: its metadata, whether it has a separate head, and Llama 3's
        `rope_freqs.weight` scaling factors when present."""
        cfg = LlamaConfig.from_gguf(reader.metadata, has_output="output.weight" in reader)
        if "rope_freqs.weight" in reader:
            cfg.rope_freq_factors = tuple(float(x) for x in reader.numpy("rope_freqs.weight").reshape(-1))
        return cfg

    @staticmethod
    def weight_count(config: LlamaConfig) -> int:
        """How many tensors `from_weights` reads (for a progress bar; optional biases not in the config
        are not counted)."""
        per_layer = 9 + 4 * config.attention_bias + 3 * config.mlp_bias
        return per_layer * config.num_hidden_layers + 2 + (not config.tie_word_embeddings)

    @staticmethod
    def gguf_weights(reader: Any, config: LlamaConfig) -> Weights:
        """The GGUF file's tensors under Hugging Face names (Q/K rows un-permuted)."""
        from .gguf_weights import GGUFWeights

        return GGUFWeights(reader, config)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> LlamaCache:
        """An empty KV cache for `batch_size` sequences with room for `max_len` positions (it grows)."""
        return LlamaCache(self.config, batch_size, max_len or _INITIAL_CACHE, self.dtype, self.device)

    # --- running ---------------------------------------------------------------------------------
    def _rope_tables(self, start: int, n: int) -> tuple[Tensor, Tensor]:
        """cos/sin `[n, head_dim/2]` for positions `start .. start+n-1` (views of tables grown on demand)."""
        end = start + n
        if end > self._rope_len:
            c = self.config
            if end > c.max_position_embeddings:
                raise ShapeError(f"{type(self).__name__}: position {end - 1} is beyond max_position_embeddings "
                                 f"({c.max_position_embeddings})")
            size = min(c.max_position_embeddings, max(end, _INITIAL_ROPE, 2 * self._rope_len))
            inv = rope_frequencies(c.head_dim, c.rope_theta, c.rope_scaling)
            if c.rope_freq_factors is not None:
                inv = (inv / np.asarray(c.rope_freq_factors, dtype=np.float32)).astype(np.float32)
            ang = np.arange(size, dtype=np.float32)[:, None] * inv[None, :]
            self._cos = candle.tensor(np.cos(ang), device=self.device).to(dtype=self.dtype)
            self._sin = candle.tensor(np.sin(ang), device=self.device).to(dtype=self.dtype)
            self._rope_len = size
        assert self._cos is not None and self._sin is not None
        return self._cos.narrow(0, start, n), self._sin.narrow(0, start, n)

    def _window_mask(self, t: int, s: int) -> Tensor | None:
        """The sliding-window causal mask `[t, s]` of a multi-token forward whose keys outgrow the window
        (shared by every layer), else None (plain causal attention, or a decode step's view)."""
        w = self.config.sliding_window
        if w is None or s <= w or t == 1:
            return None
        return causal_mask(t, s, None, w, device=self.device)

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """Token embeddings `[N, hidden]` of the flattened ids."""
        ids = input_ids.reshape(-1)
        if self._qembed is not None:
            return qembedding(self._qembed, ids, self.dtype)
        if self.embed is not None:
            return candle.index_select(self.embed, 0, ids)
        return candle.index_select(self.head_t, 1, ids).t().contiguous()

    def forward(self, input_ids: Tensor, cache: LlamaCache | None = None, start_pos: int | None = None,
                last_only: bool = False) -> Tensor:
        """Logits `[B, T, vocab]` (`[B, 1, vocab]` with `last_only`) for int64 `input_ids` `[B, T]`.

        With a cache, the tokens take positions `start_pos ..` (default: `cache.position`, i.e. right
        after what the cache holds; a smaller value rewinds it) and their keys and values are stored.
        """
        if input_ids.ndim != 2:
            raise ShapeError(f"{type(self).__name__}: expected input_ids [batch, seq], got {list(input_ids.shape)}")
        b, t = input_ids.shape
        if cache is not None:
            start = cache.position if start_pos is None else int(start_pos)
            if not 0 <= start <= cache.position:
                raise ShapeError(f"{type(self).__name__}: start_pos {start} must be within 0..{cache.position} "
                                 f"(the positions the cache holds)")
            if cache.batch_size != b:
                raise ShapeError(f"{type(self).__name__}: the cache is for batch size {cache.batch_size}, "
                                 f"input_ids have {b}")
            cache.reserve(start, t)
        else:
            start = int(start_pos or 0)
        if input_ids.device != self.device:
            input_ids = input_ids.to(device=self.device)
        cos, sin = self._rope_tables(start, t)
        with candle.no_grad():
            step = _Step(b, t, cos, sin, cache, start, self._window_mask(t, start + t if cache is not None else t))
            h = self.embed_tokens(input_ids)
            for i, layer in enumerate(self._modules["layers"]):
                h = layer.forward(h, step, i)
            if last_only and t > 1:
                h = h.reshape(b, t, -1).narrow(1, t - 1, 1).reshape(b, -1)
                t = 1
            hn = candle.rms_norm(h, self.norm, self.config.rms_norm_eps)
            logits = self._q_head(hn) if self._q_head is not None else hn @ self.head_t
        if cache is not None:
            cache.position = start + input_ids.shape[1]
        return logits.reshape(b, t, -1)

"""Gemma 3 (text): sliding-window and global attention layers, two RoPE bases, q/k norms, gelu-tanh.

    lm = load_model(model_files.gemma3_gguf_path())             # or an HF folder (model_type gemma3_text)
    cache = lm.model.new_cache(1, 64)                            # works for any max_len (it grows)
    logits = lm.model(ids, cache, last_only=True)                # ids [B, T] int64 -> [B, 1, vocab]

What sets Gemma 3 apart from the Llama family (`candle_models.llama`):

- Layers alternate `sliding_window_pattern - 1` sliding-window layers (local attention over the last
  `sliding_window` positions, RoPE base `rope_local_base_freq`, 10k) with one global layer (RoPE base
  `rope_theta`, 1M, plus the config's linear rope scaling). `layer_types` in config.json lists them;
  GGUF files give `gemma3.attention.sliding_window` and llama.cpp's pattern of 6.
- Gemma's RMSNorm multiplies by `1 + w`. Hugging Face checkpoints store `w`; llama.cpp's converter stores
  `1 + w` (every `*norm.weight`, q/k norms included: the GGUF's `blk.0.attn_norm.weight` starts 16.0,
  16.875, ... where transformers' GGUF loader, which subtracts 1, gives 15.0, 15.875, ...). The GGUF
  weights are handed out in HF's convention (minus one, like transformers), and the model stores
  `1 + w` once at load, so every norm is a plain `rms_norm` kernel.
- Four norms per layer (before and after attention, before and after the MLP), and an RMSNorm of each
  query and key head (`q_norm`, `k_norm`, weights of size head_dim) before RoPE.
- A gated MLP with gelu (tanh approximation): `down(gelu_tanh(gate(x)) * up(x))`.
- Token embeddings scaled by `sqrt(hidden_size)` rounded to the activation dtype; a tied head; attention
  scale `query_pre_attn_scalar ** -0.5`; optional final logit soft-capping `c * tanh(logits / c)`.
- The tokenizer adds BOS (`<bos>`, id 2): the GGUF says `tokenizer.ggml.add_bos_token = true`.
- Q/K rows of Gemma GGUF files are not permuted (llama.cpp runs Gemma with NEOX, half-split, RoPE).

Weight layout as in `candle_models.llama`: every projection stored transposed `[in, out]` and
C-contiguous, Q/K/V fused into one matrix, gate/up into another; the tied head keeps only the
transposed embedding `[hidden, vocab]` and looks tokens up by column.

The KV cache (`Gemma3Cache`) gives global layers buffers for every position (grown by doubling) and
sliding layers buffers that keep only what the window still needs (see its docs), so a sliding layer
holds at most about `2 * sliding_window` positions however long the text.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import candle
from candle import Device, DType, ShapeError, Tensor
from candle.device import as_device
from candle.nn import Module, ModuleList, Parameter
from candle.nn.attention import rope_frequencies
from candle.ops.attention import causal_mask, rope, scaled_dot_product_attention
from candle.quantized import qembedding

from .config import ConfigError, gguf_getter, gguf_vocab_size
from .layout import fuse_transposed
from .llama import Weights, _weight
from .quantized_weights import QMat, fuse_rows
from .registry import register

__all__ = ["Gemma3Cache", "Gemma3Config", "Gemma3ForCausalLM", "gemma3_gguf_to_hf_name", "gemma3_hf_to_gguf_name"]

SLIDING, FULL = "sliding_attention", "full_attention"
_INITIAL_CACHE = 256  # positions a cache holds before it first grows
_INITIAL_ROPE = 4096  # positions of the rotary tables before they first grow
_GELU = {"gelu_pytorch_tanh": "tanh", "gelu_tanh": "tanh", "gelu_new": "tanh", "gelu_fast": "tanh",
         "gelu": "none"}


# --- config --------------------------------------------------------------------------------------------
def _int_tuple(v: Any) -> tuple[int, ...]:
    if v is None:
        return ()
    return tuple(int(x) for x in v) if isinstance(v, (list, tuple)) else (int(v),)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _layer_types(n: int, pattern: Any) -> tuple[str, ...]:
    """Per-layer attention kinds from a sliding-window pattern: an int p (every p-th layer is global, as
    `(i + 1) % p == 0` in transformers and llama.cpp) or a per-layer list of booleans (True = sliding)."""
    if isinstance(pattern, (list, tuple, np.ndarray)):
        flags = [bool(x) for x in pattern]
        if len(flags) != n:
            raise ConfigError(f"Gemma3: the sliding-window pattern lists {len(flags)} layers, the model has {n}")
        return tuple(SLIDING if f else FULL for f in flags)
    p = int(pattern)
    if p <= 0:
        raise ConfigError(f"Gemma3: sliding_window_pattern must be positive, got {p}")
    return tuple(SLIDING if (i + 1) % p else FULL for i in range(n))


@dataclass
class Gemma3Config:
    """Hyper-parameters of a Gemma 3 text model (`Gemma3TextConfig` in transformers)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int = 256
    rms_norm_eps: float = 1e-6
    #: RoPE base of the global layers, and their rope scaling (HF style, e.g. {"rope_type": "linear", ...})
    rope_theta: float = 1_000_000.0
    rope_scaling: dict[str, Any] | None = None
    #: RoPE base of the sliding-window layers
    rope_local_base_freq: float = 10_000.0
    sliding_window: int = 4096
    #: "sliding_attention" or "full_attention" per layer; empty = transformers' default pattern of 6
    layer_types: tuple[str, ...] = ()
    query_pre_attn_scalar: float = 256.0
    final_logit_softcapping: float | None = None
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 131_072
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 2
    eos_token_id: tuple[int, ...] = (1,)
    pad_token_id: int | None = 0
    model_type: str = "gemma3_text"
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.eos_token_id = _int_tuple(self.eos_token_id)
        if not self.layer_types:
            self.layer_types = _layer_types(self.num_hidden_layers, 6)
        self.layer_types = tuple(str(t) for t in self.layer_types)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "max_position_embeddings", "sliding_window"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"Gemma3Config: {name} must be a positive integer, got {v!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"Gemma3Config: num_attention_heads {self.num_attention_heads} must be a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"Gemma3Config: head_dim must be even for rotary embeddings, got {self.head_dim}")
        if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) - {SLIDING, FULL}:
            raise ConfigError(f"Gemma3Config: layer_types must give {self.num_hidden_layers} entries of "
                              f"{SLIDING!r} / {FULL!r}, got {list(self.layer_types)}")
        if self.hidden_activation not in _GELU:
            raise ConfigError(f"Gemma3Config: hidden_activation {self.hidden_activation!r} is not supported "
                              f"({', '.join(_GELU)})")

    @property
    def sliding_layers(self) -> tuple[bool, ...]:
        """Whether each layer is a sliding-window layer."""
        return tuple(t == SLIDING for t in self.layer_types)

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    # --- Hugging Face config.json -------------------------------------------------------------------
    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> Gemma3Config:
        """From a parsed `config.json`: a `gemma3_text` config, or a multimodal `gemma3` one (its
        `text_config` is read). Both transformers' `rope_parameters` and the older keys are read."""
        if isinstance(d.get("text_config"), Mapping):
            d = {"model_type": "gemma3_text", **d["text_config"]}
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if d.get(k) is None]
        if missing:
            raise ConfigError(f"config.json lacks required keys: {', '.join(missing)}")
        for key in ("attn_logit_softcapping", "use_bidirectional_attention", "attention_bias"):
            if d.get(key):
                raise ConfigError(f"config.json: {key}={d[key]!r} is not supported by candle's Gemma 3")
        rp = d.get("rope_parameters") or {}
        full = dict(rp.get(FULL) or {}) if isinstance(rp, Mapping) else {}
        local = dict(rp.get(SLIDING) or {}) if isinstance(rp, Mapping) else {}
        theta = full.pop("rope_theta", d.get("rope_theta", 1_000_000.0))
        local_theta = local.get("rope_theta", d.get("rope_local_base_freq", 10_000.0))
        scaling = full if full.get("rope_type", "default") != "default" else d.get("rope_scaling") or None
        n = int(d["num_hidden_layers"])
        types = d.get("layer_types") or _layer_types(n, d.get("sliding_window_pattern", 6))
        heads = int(d["num_attention_heads"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            vocab_size=int(d["vocab_size"]), hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]), num_hidden_layers=n, num_attention_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_heads") or heads), head_dim=int(d.get("head_dim") or 256),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)), rope_theta=float(theta),
            rope_scaling=dict(scaling) if scaling else None, rope_local_base_freq=float(local_theta),
            sliding_window=int(d.get("sliding_window") or 4096), layer_types=tuple(types),
            query_pre_attn_scalar=float(d.get("query_pre_attn_scalar", 256)),
            final_logit_softcapping=_opt_float(d.get("final_logit_softcapping")),
            hidden_activation=str(d.get("hidden_activation") or d.get("hidden_act") or "gelu_pytorch_tanh"),
            max_position_embeddings=int(d.get("max_position_embeddings", 131_072)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", True)),
            bos_token_id=None if d.get("bos_token_id") is None else int(d["bos_token_id"]),
            eos_token_id=_int_tuple(d.get("eos_token_id", 1)),
            pad_token_id=None if d.get("pad_token_id") is None else int(d["pad_token_id"]),
            model_type=str(d.get("model_type", "gemma3_text")),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` dict that transformers' `Gemma3TextConfig` reads back."""
        return {
            "architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim, "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling, "rope_local_base_freq": self.rope_local_base_freq,
            "sliding_window": self.sliding_window, "layer_types": list(self.layer_types),
            "query_pre_attn_scalar": self.query_pre_attn_scalar,
            "final_logit_softcapping": self.final_logit_softcapping, "attn_logit_softcapping": None,
            "hidden_activation": self.hidden_activation, "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "bos_token_id": self.bos_token_id,
            "eos_token_id": list(self.eos_token_id) if len(self.eos_token_id) != 1 else self.eos_token_id[0],
            "pad_token_id": self.pad_token_id,
        }

    # --- GGUF metadata ----------------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, md: Mapping[str, Any], has_output: bool = False) -> Gemma3Config:
        """From GGUF metadata (`gemma3.*` keys). What llama.cpp does not store takes llama.cpp's values: the
        local RoPE base 10k (unless `rope.freq_base_swa` is given), a pattern of 5 sliding layers then one
        global layer (unless `attention.sliding_window_pattern` is given), and an attention scale of
        `head_dim ** -0.5` (`hidden / heads` for the 62-layer 27B model)."""
        arch = str(md.get("general.architecture", "gemma3"))

        get = gguf_getter(md, arch)

        heads = int(get("attention.head_count", required=True))
        hidden = int(get("embedding_length", required=True))
        n_layers = int(get("block_count", required=True))
        vocab = gguf_vocab_size(md, arch)
        head_dim = int(get("attention.key_length") or hidden // heads)
        scaling = None
        kind = get("rope.scaling.type")
        if kind == "linear" and get("rope.scaling.factor"):
            scaling = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
        elif kind not in (None, "none", "linear"):
            raise ConfigError(f"GGUF: rope scaling {kind!r} is not supported for {arch} (linear)")
        scalar = hidden // heads if n_layers == 62 else head_dim  # llama.cpp's rule (Gemma 3 27B)
        eos = md.get("tokenizer.ggml.eos_token_id")
        bos = md.get("tokenizer.ggml.bos_token_id")
        pad = md.get("tokenizer.ggml.padding_token_id")
        return cls(
            vocab_size=int(vocab), hidden_size=hidden, intermediate_size=int(get("feed_forward_length", required=True)),
            num_hidden_layers=n_layers, num_attention_heads=heads,
            num_key_value_heads=int(get("attention.head_count_kv", heads)), head_dim=head_dim,
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_theta=float(get("rope.freq_base", 1_000_000.0)), rope_scaling=scaling,
            rope_local_base_freq=float(get("rope.freq_base_swa", 10_000.0)),
            sliding_window=int(get("attention.sliding_window", 4096)),
            layer_types=_layer_types(n_layers, get("attention.sliding_window_pattern", 6)),
            query_pre_attn_scalar=float(scalar),
            final_logit_softcapping=_opt_float(get("final_logit_softcapping")),
            max_position_embeddings=int(get("context_length", 131_072)), tie_word_embeddings=not has_output,
            bos_token_id=None if bos is None else int(bos), eos_token_id=_int_tuple(eos),
            pad_token_id=None if pad is None else int(pad), model_type=arch,
        )


# --- GGUF tensor names -----------------------------------------------------------------------------------
_LAYER = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm", "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm", "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_HF_LAYER = {v: k for k, v in _LAYER.items()}
_HF_GLOBAL = {v: k for k, v in _GLOBAL.items()}


def gemma3_gguf_to_hf_name(name: str) -> str | None:
    """The Hugging Face name of a Gemma 3 GGUF tensor (`blk.0.ffn_norm.weight` ->
    `model.layers.0.pre_feedforward_layernorm.weight`), or None for tensors the model does not use."""
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[3] in ("weight", "bias"):
        hf = _LAYER.get(parts[2])
        return f"model.layers.{parts[1]}.{hf}.{parts[3]}" if hf else None
    base, _, kind = name.rpartition(".")
    hf = _GLOBAL.get(base)
    return f"{hf}.{kind}" if hf and kind in ("weight", "bias") else None


def gemma3_hf_to_gguf_name(name: str) -> str | None:
    """The GGUF name of a Gemma 3 Hugging Face tensor name (inverse of `gemma3_gguf_to_hf_name`)."""
    if name.startswith("model.layers."):
        idx, _, rest = name[len("model.layers."):].partition(".")
        base, _, kind = rest.rpartition(".")
        g = _HF_LAYER.get(base)
        return f"blk.{idx}.{g}.{kind}" if g and idx.isdigit() else None
    base, _, kind = name.rpartition(".")
    g = _HF_GLOBAL.get(base)
    return f"{g}.{kind}" if g else None


def _norm_minus_one(name: str, t: Tensor) -> Tensor:
    """llama.cpp stores Gemma's norm weights as `1 + w`; hand them out as HF's `w`."""
    return t - 1.0 if name.endswith("norm.weight") else t


# --- KV cache ------------------------------------------------------------------------------------------
class Gemma3Cache:
    """Per-layer key/value buffers `[batch, kv_heads, n, head_dim]` for Gemma 3's two kinds of layers.

    `position` is the number of positions seen (the next token's position).

    - Global layers hold positions `0 .. position-1`; their buffers start at `max_len` positions and grow
      (doubling, up to `max_position_embeddings`) when a forward needs more.
    - Sliding layers hold positions `base .. position-1` (`base` is the same for all of them): slot `i` is
      position `base + i`. A forward over positions `start .. start+n-1` needs the keys of
      `start-window+1 .. start+n-1`; when they do not fit, the last `window-1` held positions move to the
      front (`base` moves up); buffers smaller than two windows (or than what one forward needs) grow
      instead. Buffers start at `min(max_len, 2 * window)` positions, so a long generation moves
      `window-1` positions once every `window+1` steps and holds no more than `2 * window` of them;
      `max_len` may be smaller than the window (the buffers then grow by doubling).

    Rewinding (`start_pos` below `position`) works back to `base + window - 1` for the sliding layers.
    """

    def __init__(self, config: Gemma3Config, batch_size: int, max_len: int, dtype: DType, device: Device) -> None:
        self.config, self.batch_size, self.dtype, self.device = config, batch_size, dtype, device
        self.limit = config.max_position_embeddings
        self.window = config.sliding_window
        self.sliding = config.sliding_layers
        self.position = 0
        self.base = 0
        self.k: list[Tensor] = []
        self.v: list[Tensor] = []
        self.global_len = 0
        self.local_len = 0
        n = min(max(1, int(max_len)), self.limit)
        self._alloc(n, min(n, 2 * self.window), keep_global=0, keep_local=(0, 0))

    def _zeros(self, n: int) -> Tensor:
        c = self.config
        return candle.zeros((self.batch_size, c.num_key_value_heads, n, c.head_dim), dtype=self.dtype,
                            device=self.device)

    def _alloc(self, global_len: int, local_len: int, keep_global: int, keep_local: tuple[int, int]) -> None:
        """New buffers where a size changes, copying the first `keep_global` positions of global layers and
        the slots `keep_local = (first, count)` of sliding layers to the front."""
        first, count = keep_local
        new_k: list[Tensor] = []
        new_v: list[Tensor] = []
        for i, sliding in enumerate(self.sliding):
            size, old = (local_len, self.local_len) if sliding else (global_len, self.global_len)
            if size == old:
                new_k.append(self.k[i])
                new_v.append(self.v[i])
                continue
            k, v = self._zeros(size), self._zeros(size)
            src, n = (first, count) if sliding else (0, keep_global)
            if n:
                k.narrow(2, 0, n).copy_(self.k[i].narrow(2, src, n))
                v.narrow(2, 0, n).copy_(self.v[i].narrow(2, src, n))
            new_k.append(k)
            new_v.append(v)
        self.k, self.v = new_k, new_v
        self.global_len, self.local_len = global_len, local_len

    def keys_from(self, start: int) -> int:
        """The first position a sliding layer attends to in a forward starting at `start`."""
        return max(0, start - self.window + 1)

    def reserve(self, start: int, n: int) -> None:
        """Make room for positions `start .. start+n-1` (moving or growing the buffers if needed)."""
        end = start + n
        if end > self.limit:
            raise ShapeError(f"Gemma3Cache: positions up to {end} exceed the model's max_position_embeddings "
                             f"({self.limit})")
        lo = self.keys_from(start)
        if lo < self.base:
            raise ShapeError(f"Gemma3Cache: cannot rewind to position {start}: the sliding-window layers no longer "
                             f"hold position {lo} (they keep positions from {self.base} on)")
        global_len = self.global_len if end <= self.global_len else min(self.limit, max(end, 2 * self.global_len))
        local_len = self.local_len
        keep = (0, 0)
        if end - self.base > self.local_len:  # move the held keys to the front; grow below two windows
            if end - lo > self.local_len or self.local_len < 2 * self.window:
                local_len = max(end - lo, min(2 * self.local_len, 2 * self.window))
            keep = (lo - self.base, start - lo)
            if local_len == self.local_len:
                self._shift_local(*keep)
                keep = (0, 0)
            self.base = lo
        if global_len != self.global_len or local_len != self.local_len:
            self._alloc(global_len, local_len, keep_global=min(start, self.position), keep_local=keep)

    def _shift_local(self, first: int, count: int) -> None:
        """Move slots `first .. first+count-1` of every sliding layer to the front, in place."""
        if not count or not first:
            return
        for i, sliding in enumerate(self.sliding):
            if not sliding:
                continue
            for buf in (self.k[i], self.v[i]):
                src = buf.narrow(2, first, count)
                if first < count:  # overlapping ranges: copy through a temporary
                    src = src.clone()
                buf.narrow(2, 0, count).copy_(src)

    def update(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write k, v `[B, kv_heads, n, head_dim]` for positions `start ..`; return views of the keys and values
        the layer attends to: positions `0 .. start+n-1` (global) or `keys_from(start) .. start+n-1` (sliding)."""
        n = k.shape[2]
        kb, vb = self.k[layer], self.v[layer]
        if self.sliding[layer]:
            slot, lo = start - self.base, self.keys_from(start) - self.base
        else:
            slot, lo = start, 0
        kb.narrow(2, slot, n).copy_(k)
        vb.narrow(2, slot, n).copy_(v)
        return kb.narrow(2, lo, slot + n - lo), vb.narrow(2, lo, slot + n - lo)

    def reset(self) -> None:
        """Forget every entry (the buffers are kept)."""
        self.position = 0
        self.base = 0

    def __len__(self) -> int:
        return self.position


# --- layers ----------------------------------------------------------------------------------------------
def _param(t: Tensor) -> Parameter:
    return Parameter(t, requires_grad=False)


@dataclass(slots=True)
class _Kind:
    """What the layers of one kind (sliding or global) share in a forward: rotary tables of the new
    positions and either a mask `[t, s]` or the bottom-right causal offset."""

    cos: Tensor
    sin: Tensor
    mask: Tensor | None


@dataclass(slots=True)
class _Step:
    batch: int
    t: int
    start: int
    cache: Gemma3Cache | None
    local: _Kind
    full: _Kind


class Gemma3Attention(Module):
    """Fused QKV `qkv_t [hidden, q+2kv]`, per-head RMSNorm of queries and keys (`qk_norm [Hq+Hk, 1, D]`:
    q_norm's `1 + w` repeated per query head, then k_norm's per kv head), RoPE, GQA, `o_t [q, hidden]`."""

    def __init__(self, config: Gemma3Config, sliding: bool, qkv_t: Tensor, qk_norm: Tensor, o_t: Tensor) -> None:
        super().__init__()
        self.n_q, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        self.sliding = sliding
        self.eps = config.rms_norm_eps
        self.scale = config.query_pre_attn_scalar ** -0.5
        _weight(self, "qkv_t", qkv_t)
        self.qk_norm = _param(qk_norm)
        _weight(self, "o_t", o_t)

    def forward(self, x: Tensor, step: _Step, layer: int) -> Tensor:
        """x `[B*T, hidden]` (normalised) -> attention output `[B*T, hidden]` (before the post-norm)."""
        n_q, n_kv, hd = self.n_q, self.n_kv, self.head_dim
        batch, t = step.batch, step.t
        kind = step.local if self.sliding else step.full
        qkv = self._q_qkv_t(x) if self._q_qkv_t is not None else x @ self.qkv_t
        if t == 1:  # decode: [B, heads*D] is already [B, heads, 1, D] in memory
            qkv = qkv.reshape(batch, n_q + 2 * n_kv, 1, hd)
            qk = candle.rms_norm(qkv.narrow(1, 0, n_q + n_kv), None, self.eps) * self.qk_norm
            v = qkv.narrow(1, n_q + n_kv, n_kv)
        else:
            qkv = qkv.reshape(batch, t, n_q + 2 * n_kv, hd)
            qk = candle.rms_norm(qkv.narrow(2, 0, n_q + n_kv), None, self.eps) * self.qk_norm.reshape(n_q + n_kv, hd)
            qk = qk.transpose(1, 2)
            v = qkv.narrow(2, n_q + n_kv, n_kv).transpose(1, 2)
        qk = rope(qk, kind.cos, kind.sin)  # [B, Hq+Hk, T, D], one kernel for both
        q, k = qk.narrow(1, 0, n_q), qk.narrow(1, n_q, n_kv)
        if step.cache is not None:
            k, v = step.cache.update(layer, step.start, k, v)
        s = k.shape[2]
        o = scaled_dot_product_attention(q, k, v, attn_mask=kind.mask, scale=self.scale, enable_gqa=True,
                                         causal_offset=None if kind.mask is not None else s - t)
        o = o.reshape(batch, n_q * hd) if t == 1 else o.transpose(1, 2).reshape(batch * t, n_q * hd)
        return self._q_o_t(o) if self._q_o_t is not None else o @ self.o_t


class Gemma3MLP(Module):
    """`down(gelu_tanh(gate(x)) * up(x))` with gate/up fused as `gate_up_t [hidden, 2*inter]`."""

    def __init__(self, gate_up_t: Tensor, down_t: Tensor, approximate: str = "tanh") -> None:
        super().__init__()
        self.inter = down_t.shape[1] if isinstance(down_t, QMat) else down_t.shape[0]
        self.approximate = approximate
        _weight(self, "gate_up_t", gate_up_t)
        _weight(self, "down_t", down_t)

    def forward(self, x: Tensor) -> Tensor:
        gu = self._q_gate_up_t(x) if self._q_gate_up_t is not None else x @ self.gate_up_t
        n = self.inter
        a = candle.gelu(gu.narrow(1, 0, n), self.approximate) * gu.narrow(1, n, n)
        return self._q_down_t(a) if self._q_down_t is not None else a @ self.down_t


class Gemma3Block(Module):
    """`x + post_attn_norm(attn(input_norm(x)))`, then `x + post_ffn_norm(mlp(pre_ffn_norm(x)))`; each norm
    weight is stored as `1 + w`."""

    def __init__(self, config: Gemma3Config, attn: Gemma3Attention, mlp: Gemma3MLP, norms: list[Tensor]) -> None:
        super().__init__()
        self.eps = config.rms_norm_eps
        self.input_norm, self.post_attn_norm, self.pre_ffn_norm, self.post_ffn_norm = (_param(n) for n in norms)
        self.attn = attn
        self.mlp = mlp

    def forward(self, x: Tensor, step: _Step, layer: int) -> Tensor:
        eps = self.eps
        a = self.attn(candle.rms_norm(x, self.input_norm, eps), step, layer)
        x = x + candle.rms_norm(a, self.post_attn_norm, eps)
        m = self.mlp(candle.rms_norm(x, self.pre_ffn_norm, eps))
        return x + candle.rms_norm(m, self.post_ffn_norm, eps)


# --- reading weights -------------------------------------------------------------------------------------

class _HostReader:
    """Reads the tensors on the host in the layout the model runs on (fused, transposed, norms as 1 + w)."""

    def __init__(self, config: Gemma3Config, weights: Weights, dtype: DType, prefix: str,
                 progress: Callable[[int], None] | None) -> None:
        self.c, self.w, self.dt, self.prefix = config, weights, dtype, prefix
        self.tick = progress or (lambda n: None)
        self._lock = threading.Lock()

    def get(self, name: str, shape: tuple[int, ...], dtype: DType | None = None) -> Tensor:
        t = self.w.get(self.prefix + name, shape=shape, dtype=dtype or self.dt)
        with self._lock:
            self.tick(1)
        return t

    def norm(self, name: str, size: int) -> Tensor:
        """`1 + w`, computed in float32, in the model's dtype."""
        return (self.get(name, (size,), candle.float32) + 1.0).to(dtype=self.dt)

    def layer(self, i: int, projections: bool = True) -> dict[str, Any]:
        c, hid, inter, hd = self.c, self.c.hidden_size, self.c.intermediate_size, self.c.head_dim
        p = f"layers.{i}."
        a, m = p + "self_attn.", p + "mlp."
        q, kv = c.q_size, c.kv_size
        qn, kn = self.norm(a + "q_norm.weight", hd), self.norm(a + "k_norm.weight", hd)
        heads = [qn] * c.num_attention_heads + [kn] * c.num_key_value_heads
        if not projections:
            return {"qk_norm": candle.stack(heads, 0).reshape(len(heads), 1, hd),
                    "norms": [self.norm(p + n + ".weight", hid) for n in ("input_layernorm", "post_attention_layernorm",
                                                                          "pre_feedforward_layernorm",
                                                                          "post_feedforward_layernorm")]}
        return {
            "qkv_t": fuse_transposed(self.get(a + "q_proj.weight", (q, hid)), self.get(a + "k_proj.weight", (kv, hid)),
                             self.get(a + "v_proj.weight", (kv, hid))),
            "qk_norm": candle.stack(heads, 0).reshape(len(heads), 1, hd),
            "o_t": fuse_transposed(self.get(a + "o_proj.weight", (hid, q))),
            "gate_up_t": fuse_transposed(self.get(m + "gate_proj.weight", (inter, hid)),
                                 self.get(m + "up_proj.weight", (inter, hid))),
            "down_t": fuse_transposed(self.get(m + "down_proj.weight", (hid, inter))),
            "norms": [self.norm(p + n + ".weight", hid) for n in ("input_layernorm", "post_attention_layernorm",
                                                                  "pre_feedforward_layernorm",
                                                                  "post_feedforward_layernorm")],
        }

    def getq(self, name: str, shape: tuple[int, ...]) -> Any:
        t = self.w.get_quantized(self.prefix + name, shape)  # type: ignore[attr-defined]
        with self._lock:
            self.tick(1)
        return t

    def layer_quantized(self, i: int) -> dict[str, Any]:
        """`layer` with the projections kept quantized (`QMat`s of the stored blocks, `[out, in]`)."""
        c, hid, inter = self.c, self.c.hidden_size, self.c.intermediate_size
        a, m = f"layers.{i}.self_attn.", f"layers.{i}.mlp."
        q, kv = c.q_size, c.kv_size
        d = self.layer(i, projections=False)
        d["qkv_t"] = QMat(fuse_rows([self.getq(a + "q_proj.weight", (q, hid)),
                                     self.getq(a + "k_proj.weight", (kv, hid)),
                                     self.getq(a + "v_proj.weight", (kv, hid))]))
        d["o_t"] = QMat([self.getq(a + "o_proj.weight", (hid, q))])
        d["gate_up_t"] = QMat(fuse_rows([self.getq(m + "gate_proj.weight", (inter, hid)),
                                         self.getq(m + "up_proj.weight", (inter, hid))]))
        d["down_t"] = QMat([self.getq(m + "down_proj.weight", (hid, inter))])
        return d

    def head_quantized(self, tied: bool, head_name: str) -> tuple[Any, Any]:
        """(head QMat [vocab, hidden], embedding QTensor [vocab, hidden]) kept quantized."""
        shape = (self.c.vocab_size, self.c.hidden_size)
        emb = self.getq("embed_tokens.weight", shape)
        if tied:
            return QMat([emb]), emb
        head = self.w.get_quantized(head_name, shape)  # type: ignore[attr-defined]
        self.tick(1)
        return QMat([head]), emb

    def head(self, tied: bool, head_name: str) -> tuple[Tensor, Tensor | None]:
        """(head_t [hidden, vocab], embedding [vocab, hidden] or None when tied)."""
        shape = (self.c.vocab_size, self.c.hidden_size)
        emb = self.get("embed_tokens.weight", shape)
        if tied:
            return fuse_transposed(emb), None
        w = self.w.get(head_name, shape=shape, dtype=self.dt)
        self.tick(1)
        return fuse_transposed(w), emb.contiguous()


def _weights_prefix(weights: Weights) -> str:
    """Where the text model's tensors live: `model.` (Gemma3ForCausalLM) or a multimodal checkpoint's
    language-model prefix."""
    for prefix in ("model.", "model.language_model.", "language_model.model."):
        if prefix + "embed_tokens.weight" in weights:
            return prefix
    return "model."


# --- the model -------------------------------------------------------------------------------------------
@register("gemma3", "gemma3_text")
class Gemma3ForCausalLM(Module):
    """A Gemma 3 causal LM. Build it with `from_weights`; call it as `model(input_ids, cache)`."""

    config_class = Gemma3Config

    def __init__(self, config: Gemma3Config, layers: list[Gemma3Block], norm: Tensor, head_t: Tensor,
                 embed: Tensor | None = None) -> None:
        """`norm` is the final norm's `1 + w`; `head_t` the output head `[hidden, vocab]`; `embed` the token
        embedding `[vocab, hidden]`, or None when the head is tied (tokens are looked up in `head_t`)."""
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
        # sqrt(hidden) rounded to the activation dtype, as transformers multiplies by it
        self.embed_scale = float(candle.tensor(math.sqrt(config.hidden_size), dtype=norm.dtype).item())
        self._rope: dict[bool, tuple[Tensor, Tensor]] = {}
        self._rope_len = 0

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

    # --- building ------------------------------------------------------------------------------------
    @classmethod
    def from_weights(cls, config: Gemma3Config, weights: Weights, device: Device | str | None = "cpu",
                     dtype: DType | str | None = "float32", progress: Callable[[int], None] | None = None,
                     threads: int | None = None, quantized: bool = False) -> Gemma3ForCausalLM:
        """Build the model from Hugging Face named weights (`model.layers.N.self_attn.q_proj.weight`, ...;
        norms in HF's convention `w`), checking every shape before reading; `progress(n)` is called as
        tensors are read. Host-side work (dequantize, fuse, transpose) runs in `threads` worker threads.
        `quantized=True` (GGUF weights only) keeps the projections, embedding and head in their GGML blocks."""
        dt = candle.dtype.as_dtype(dtype or "float32")
        dev = as_device(device if device is not None else "cpu")
        c = config
        prefix = _weights_prefix(weights)
        head_name = "lm_head.weight"
        tied = c.tie_word_embeddings or head_name not in weights
        reader = _HostReader(c, weights, dt, prefix, progress)
        n = threads if threads is not None else min(4, os.cpu_count() or 1)
        if quantized and not hasattr(weights, "get_quantized"):
            raise candle.CandleError(f"{cls.__name__}: quantized=True needs GGUF weights "
                                     f"(got {type(weights).__name__})")
        with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
            head = pool.submit(reader.head_quantized if quantized else reader.head, tied, head_name)  # largest first
            parts = list(pool.map(reader.layer_quantized if quantized else reader.layer, range(c.num_hidden_layers)))
            norm = reader.norm("norm.weight", c.hidden_size)
            head_t, embed = head.result()

        def on(t: Any) -> Any:
            if t is not None and not isinstance(t, Tensor):  # QMat / QTensor
                return t.to(dev)
            return t.to(device=dev) if t is not None else None

        approximate = _GELU[c.hidden_activation]
        layers = [Gemma3Block(c, Gemma3Attention(c, sliding, on(p["qkv_t"]), on(p["qk_norm"]), on(p["o_t"])),
                              Gemma3MLP(on(p["gate_up_t"]), on(p["down_t"]), approximate),
                              [on(x) for x in p["norms"]])
                  for p, sliding in zip(parts, c.sliding_layers)]
        return cls(c, layers, on(norm), on(head_t), on(embed))

    @classmethod
    def config_from_hf(cls, d: dict[str, Any]) -> Gemma3Config:
        """The config of a Hugging Face `config.json` (parsed)."""
        return Gemma3Config.from_hf(d)

    @classmethod
    def config_from_gguf(cls, reader: Any) -> Gemma3Config:
        """The config of an open GGUF file (metadata; a separate head when it holds `output.weight`)."""
        return Gemma3Config.from_gguf(reader.metadata, has_output="output.weight" in reader)

    @staticmethod
    def weight_count(config: Gemma3Config) -> int:
        """How many tensors `from_weights` reads (for a progress bar)."""
        return 13 * config.num_hidden_layers + 2 + (not config.tie_word_embeddings)

    @staticmethod
    def gguf_weights(reader: Any, config: Gemma3Config) -> Weights:
        """The GGUF file's tensors under Hugging Face names and conventions (norm weights minus one, Q/K rows
        as stored)."""
        from .gguf_weights import GGUFWeights

        return GGUFWeights(reader, config, to_hf=gemma3_gguf_to_hf_name, to_gguf=gemma3_hf_to_gguf_name,
                           unpermute_qk=False, transform=_norm_minus_one)

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> Gemma3Cache:
        """An empty KV cache for `batch_size` sequences with room for `max_len` positions (it grows)."""
        return Gemma3Cache(self.config, batch_size, max_len or _INITIAL_CACHE, self.dtype, self.device)

    # --- running ---------------------------------------------------------------------------------------
    def _rope_tables(self, start: int, n: int) -> tuple[_Kind, _Kind]:
        """cos/sin `[n, head_dim/2]` of positions `start ..` for sliding and global layers (masks unset)."""
        end = start + n
        c = self.config
        if end > self._rope_len:
            if end > c.max_position_embeddings:
                raise ShapeError(f"{type(self).__name__}: position {end - 1} is beyond max_position_embeddings "
                                 f"({c.max_position_embeddings})")
            size = min(c.max_position_embeddings, max(end, _INITIAL_ROPE, 2 * self._rope_len))
            pos = np.arange(size, dtype=np.float32)[:, None]
            for sliding, inv in ((True, rope_frequencies(c.head_dim, c.rope_local_base_freq)),
                                 (False, rope_frequencies(c.head_dim, c.rope_theta, c.rope_scaling))):
                ang = pos * inv[None, :]
                self._rope[sliding] = (candle.tensor(np.cos(ang), device=self.device).to(dtype=self.dtype),
                                       candle.tensor(np.sin(ang), device=self.device).to(dtype=self.dtype))
            self._rope_len = size
        out = [_Kind(cos.narrow(0, start, n), sin.narrow(0, start, n), None)
               for cos, sin in (self._rope[True], self._rope[False])]
        return out[0], out[1]

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """Scaled token embeddings `[N, hidden]` of the flattened ids."""
        ids = input_ids.reshape(-1)
        if self._qembed is not None:
            return qembedding(self._qembed, ids, self.dtype) * self.embed_scale
        if self.embed is not None:
            return candle.index_select(self.embed, 0, ids) * self.embed_scale
        return (candle.index_select(self.head_t, 1, ids) * self.embed_scale).t().contiguous()

    def forward(self, input_ids: Tensor, cache: Gemma3Cache | None = None, start_pos: int | None = None,
                last_only: bool = False) -> Tensor:
        """Logits `[B, T, vocab]` (`[B, 1, vocab]` with `last_only`) for int64 `input_ids` `[B, T]`.

        With a cache, the tokens take positions `start_pos ..` (default: `cache.position`; a smaller value
        rewinds it) and their keys and values are stored."""
        if input_ids.ndim != 2:
            raise ShapeError(f"{type(self).__name__}: expected input_ids [batch, seq], got {list(input_ids.shape)}")
        b, t = input_ids.shape
        w = self.config.sliding_window
        if cache is not None:
            start = cache.position if start_pos is None else int(start_pos)
            if not 0 <= start <= cache.position:
                raise ShapeError(f"{type(self).__name__}: start_pos {start} must be within 0..{cache.position} "
                                 f"(the positions the cache holds)")
            if cache.batch_size != b:
                raise ShapeError(f"{type(self).__name__}: the cache is for batch size {cache.batch_size}, "
                                 f"input_ids have {b}")
            cache.reserve(start, t)
            local_keys = start + t - cache.keys_from(start)
        else:
            start = int(start_pos or 0)
            local_keys = t
        if input_ids.device != self.device:
            input_ids = input_ids.to(device=self.device)
        local, full = self._rope_tables(start, t)
        if t > 1 and local_keys > w:  # some query would see past the window: one mask for every sliding layer
            local.mask = causal_mask(t, local_keys, None, w, device=self.device)
        with candle.no_grad():
            step = _Step(b, t, start, cache, local, full)
            h = self.embed_tokens(input_ids)
            for i, layer in enumerate(self.layers):
                h = layer(h, step, i)
            if last_only and t > 1:
                h = h.reshape(b, t, -1).narrow(1, t - 1, 1).reshape(b, -1)
                t = 1
            hn = candle.rms_norm(h, self.norm, self.config.rms_norm_eps)
            logits = self._q_head(hn) if self._q_head is not None else hn @ self.head_t
            cap = self.config.final_logit_softcapping
            if cap:
                logits = candle.tanh(logits * (1.0 / cap)) * cap
        if cache is not None:
            cache.position = start + input_ids.shape[1]
        return logits.reshape(b, t, -1)

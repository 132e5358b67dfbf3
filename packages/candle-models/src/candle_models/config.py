"""`LlamaConfig`: the hyper-parameters of a Llama-family model, from a Hugging Face `config.json` or
from GGUF metadata (`llama.*` keys).

    cfg = LlamaConfig.from_hf(json.load(open("config.json")))
    cfg = LlamaConfig.from_gguf(reader.metadata)          # `general.architecture` picks the key prefix

Both transformers' older keys (`rope_theta`, `rope_scaling`) and its newer `rope_parameters` are read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from candle import CandleError

__all__ = ["ConfigError", "LlamaConfig"]


class ConfigError(CandleError, ValueError):
    """A config that lacks a required key or holds an impossible value."""


def _int_list(v: Any) -> tuple[int, ...]:
    if v is None:
        return ()
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v)
    return (int(v),)


def gguf_getter(md: Mapping[str, Any], arch: str) -> Any:
    """`get(key, default=None, required=False)` reading `{arch}.{key}` from GGUF metadata."""

    def get(key: str, default: Any = None, required: bool = False) -> Any:
        full = f"{arch}.{key}"
        if full not in md:
            if required:
                raise ConfigError(f"GGUF metadata lacks {full!r} (needed for the {arch} architecture)")
            return default
        return md[full]

    return get


def gguf_vocab_size(md: Mapping[str, Any], arch: str) -> int:
    """`{arch}.vocab_size`, else the length of the GGUF tokenizer's token list."""
    vocab = md.get(f"{arch}.vocab_size")
    if vocab is None:
        tokens = md.get("tokenizer.ggml.tokens")
        if tokens is None:
            raise ConfigError(f"GGUF metadata lacks {arch}.vocab_size and tokenizer.ggml.tokens")
        vocab = len(tokens)
    return int(vocab)


@dataclass
class LlamaConfig:
    """Llama 2/3, TinyLlama, SmolLM2, Mistral-style models: GQA, RoPE, RMSNorm, SwiGLU."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    #: per-frequency divisors of the rotary inverse frequencies (GGUF's `rope_freqs.weight`, which is how
    #: llama.cpp stores Llama 3.1's rope scaling); None when unused
    rope_freq_factors: tuple[float, ...] | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_id: tuple[int, ...] = ()
    model_type: str = "llama"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.num_attention_heads <= 0 or self.hidden_size % self.num_attention_heads:
                raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                                  f"{self.num_attention_heads} (set head_dim)")
            self.head_dim = self.hidden_size // self.num_attention_heads
        self.eos_token_id = _int_list(self.eos_token_id)
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim", "max_position_embeddings"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"LlamaConfig: {name} must be a positive integer, got {v!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"LlamaConfig: num_attention_heads {self.num_attention_heads} must be a multiple of "
                              f"num_key_value_heads {self.num_key_value_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"LlamaConfig: head_dim must be even for rotary embeddings, got {self.head_dim}")

    # --- derived sizes --------------------------------------------------------------------------
    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim  # type: ignore[operator]

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim  # type: ignore[operator]

    # --- Hugging Face config.json -----------------------------------------------------------------
    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> LlamaConfig:
        """From a parsed `config.json` (transformers 4.x or 5.x keys)."""
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if d.get(k) is None]
        if missing:
            raise ConfigError(f"config.json lacks required keys: {', '.join(missing)}")
        rope = dict(d.get("rope_parameters") or {})
        scaling = d.get("rope_scaling") or None
        theta = d.get("rope_theta", rope.get("rope_theta", 10000.0))
        if scaling is None and rope.get("rope_type", "default") != "default":
            scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        act = d.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ConfigError(f"config.json: hidden_act {act!r} is not supported by the Llama architecture (silu)")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            intermediate_size=int(d["intermediate_size"]),
            num_hidden_layers=int(d["num_hidden_layers"]),
            num_attention_heads=int(d["num_attention_heads"]),
            num_key_value_heads=_opt_int(d.get("num_key_value_heads")),
            head_dim=_opt_int(d.get("head_dim")),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta),
            rope_scaling=dict(scaling) if scaling else None,
            max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            attention_bias=bool(d.get("attention_bias", False)),
            mlp_bias=bool(d.get("mlp_bias", False)),
            sliding_window=_opt_int(d.get("sliding_window")),
            bos_token_id=_opt_int(d.get("bos_token_id")),
            eos_token_id=_int_list(d.get("eos_token_id")),
            model_type=str(d.get("model_type", "llama")),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` dict that transformers' LlamaConfig reads back."""
        d: dict[str, Any] = {
            "architectures": ["LlamaForCausalLM"], "model_type": self.model_type, "hidden_act": "silu",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim, "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling, "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings, "attention_bias": self.attention_bias,
            "mlp_bias": self.mlp_bias, "bos_token_id": self.bos_token_id,
            "eos_token_id": (list(self.eos_token_id) if len(self.eos_token_id) != 1 else self.eos_token_id[0])
            if self.eos_token_id else None,
        }
        if self.sliding_window is not None:
            d["sliding_window"] = self.sliding_window
        return d

    # --- GGUF metadata ------------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, md: Mapping[str, Any], has_output: bool = True) -> LlamaConfig:
        """From GGUF metadata; `has_output` is whether the file holds `output.weight` (else the head is
        tied to the token embedding)."""
        arch = str(md.get("general.architecture", "llama"))

        get = gguf_getter(md, arch)

        heads = int(get("attention.head_count", required=True))
        hidden = int(get("embedding_length", required=True))
        vocab = gguf_vocab_size(md, arch)
        head_dim = get("attention.key_length") or get("rope.dimension_count") or hidden // heads
        scaling = None
        kind = get("rope.scaling.type")
        if kind in ("linear",) and get("rope.scaling.factor"):
            scaling = {"rope_type": kind, "factor": float(get("rope.scaling.factor"))}
        elif kind not in (None, "none", "linear"):
            raise ConfigError(f"GGUF: rope scaling {kind!r} is not supported (linear, or Llama 3's rope_freqs)")
        eos = md.get("tokenizer.ggml.eos_token_id")
        return cls(
            vocab_size=int(vocab),
            hidden_size=hidden,
            intermediate_size=int(get("feed_forward_length", required=True)),
            num_hidden_layers=int(get("block_count", required=True)),
            num_attention_heads=heads,
            num_key_value_heads=int(get("attention.head_count_kv", heads)),
            head_dim=int(head_dim),
            rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
            rope_theta=float(get("rope.freq_base", 10000.0)),
            rope_scaling=scaling,
            max_position_embeddings=int(get("context_length", 2048)),
            tie_word_embeddings=not has_output,
            bos_token_id=_opt_int(md.get("tokenizer.ggml.bos_token_id")),
            eos_token_id=_int_list(eos),
            model_type=arch,
        )


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)

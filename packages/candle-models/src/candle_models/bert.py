"""BERT encoders (all-MiniLM-L6-v2 and other `model_type: bert` checkpoints) and their sentence embeddings.

    lm = load_model(model_files.minilm_path())                  # a Hugging Face folder
    vecs = lm.model.encode(["A man is eating.", "Hi"])          # [2, 384]: mean pooling + L2 normalisation
    states = lm.model(ids, attention_mask=mask)                 # ids [B, T] int64, mask [B, T] -> [B, T, hidden]

The model: embeddings (word + absolute position + token type, LayerNorm), then post-norm encoder layers
(self-attention over the unmasked keys, `LayerNorm(x + attn)`, a GELU (erf) MLP, `LayerNorm(x + mlp)`).
Q/K/V are fused into one transposed `[hidden, 3*hidden]` matrix with one bias, every projection is stored
transposed (`x @ W` on the buffer as it is). The pooler (a tanh layer on [CLS]) is not used by sentence
embeddings and is not loaded.

`encode` is `candle_models.embeddings.SentenceEmbedder.encode`: when the model is loaded by `load_model`
with its tokenizer, the pooling settings come from the folder's sentence-transformers files
(`modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json`).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import candle
from candle import CandleError, Device, DType, ShapeError, Tensor
from candle.device import as_device
from candle.nn import Module, ModuleList, Parameter
from candle.ops.attention import scaled_dot_product_attention

from .config import ConfigError
from .embeddings import PoolingConfig, SentenceEmbedder
from .layout import fuse_transposed
from .llama import Weights
from .registry import register

__all__ = ["BertConfig", "BertModel"]

_ACT = {"gelu": "none", "gelu_python": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "relu": "relu"}


@dataclass
class BertConfig:
    """Hyper-parameters of a BERT encoder (`BertConfig` in transformers)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "max_position_embeddings", "type_vocab_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"BertConfig: {name} must be a positive integer, got {v!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"BertConfig: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                              f"{self.num_attention_heads}")
        if self.hidden_act not in _ACT:
            raise ConfigError(f"BertConfig: hidden_act {self.hidden_act!r} is not supported ({', '.join(_ACT)})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, d: Mapping[str, Any]) -> BertConfig:
        """From a parsed `config.json`."""
        missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                               "intermediate_size") if d.get(k) is None]
        if missing:
            raise ConfigError(f"config.json lacks required keys: {', '.join(missing)}")
        kind = d.get("position_embedding_type", "absolute")
        if kind != "absolute":
            raise ConfigError(f"config.json: position_embedding_type {kind!r} is not supported (absolute)")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(
            vocab_size=int(d["vocab_size"]), hidden_size=int(d["hidden_size"]),
            num_hidden_layers=int(d["num_hidden_layers"]), num_attention_heads=int(d["num_attention_heads"]),
            intermediate_size=int(d["intermediate_size"]), hidden_act=str(d.get("hidden_act", "gelu")),
            max_position_embeddings=int(d.get("max_position_embeddings", 512)),
            type_vocab_size=int(d.get("type_vocab_size", 2)), layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(d.get("pad_token_id") or 0), model_type=str(d.get("model_type", "bert")),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_hf(self) -> dict[str, Any]:
        """A `config.json` dict that transformers' `BertConfig` reads back."""
        return {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size, "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads, "intermediate_size": self.intermediate_size,
                "hidden_act": self.hidden_act, "max_position_embeddings": self.max_position_embeddings,
                "type_vocab_size": self.type_vocab_size, "layer_norm_eps": self.layer_norm_eps,
                "pad_token_id": self.pad_token_id, "position_embedding_type": "absolute"}


def _param(t: Tensor) -> Parameter:
    return Parameter(t, requires_grad=False)


def _act(x: Tensor, kind: str) -> Tensor:
    return candle.relu(x) if kind == "relu" else candle.gelu(x, kind)


class BertLayer(Module):
    """Post-norm encoder layer: `ln1(x + attn(x))`, then `ln2(x + down(act(up(x))))`."""

    def __init__(self, config: BertConfig, p: Mapping[str, Tensor]) -> None:
        super().__init__()
        self.heads, self.head_dim, self.eps = config.num_attention_heads, config.head_dim, config.layer_norm_eps
        self.act = _ACT[config.hidden_act]
        for name in ("qkv_t", "qkv_b", "o_t", "o_b", "ln1_w", "ln1_b", "up_t", "up_b", "down_t", "down_b",
                     "ln2_w", "ln2_b"):
            setattr(self, name, _param(p[name]))

    def forward(self, x: Tensor, batch: int, t: int, mask: Tensor | None) -> Tensor:
        """x `[B*T, hidden]` -> `[B*T, hidden]`; `mask` is None or uint8 `[B, 1, 1, T]` (1 = attend)."""
        h, hd, hid = self.heads, self.head_dim, x.shape[1]
        qkv = (x @ self.qkv_t + self.qkv_b).reshape(batch, t, 3 * h, hd).transpose(1, 2)  # [B, 3H, T, D]
        q, k, v = qkv.narrow(1, 0, h), qkv.narrow(1, h, h), qkv.narrow(1, 2 * h, h)
        o = scaled_dot_product_attention(q, k, v, attn_mask=mask)
        a = o.transpose(1, 2).reshape(batch * t, hid) @ self.o_t + self.o_b
        x = candle.layer_norm(x + a, hid, self.ln1_w, self.ln1_b, self.eps)
        y = _act(x @ self.up_t + self.up_b, self.act) @ self.down_t + self.down_b
        return candle.layer_norm(x + y, hid, self.ln2_w, self.ln2_b, self.eps)


def _weights_prefix(weights: Weights) -> str:
    """`` for a bare BertModel checkpoint, `bert.` for one saved from a task model (BertForMaskedLM...)."""
    for prefix in ("", "bert.", "model."):
        if prefix + "embeddings.word_embeddings.weight" in weights:
            return prefix
    return ""


@register("bert")
class BertModel(Module):
    """A BERT encoder: `model(input_ids, attention_mask=None, token_type_ids=None)` -> token states
    `[B, T, hidden]`; `model.encode(texts)` -> sentence embeddings (needs the tokenizer, see `attach`)."""

    config_class = BertConfig

    def __init__(self, config: BertConfig, emb: Mapping[str, Tensor], layers: list[BertLayer]) -> None:
        super().__init__()
        self.config = config
        self.word = _param(emb["word"])
        self.position = _param(emb["position"])
        self.token_type = _param(emb["token_type"])
        self.ln_w = _param(emb["ln_w"])
        self.ln_b = _param(emb["ln_b"])
        self.layers = ModuleList(layers)
        self.embedder: SentenceEmbedder | None = None

    @property
    def device(self) -> Device:
        return self.word.device

    @property
    def dtype(self) -> DType:
        return self.word.dtype

    # --- building ------------------------------------------------------------------------------------
    @classmethod
    def from_weights(cls, config: BertConfig, weights: Weights, device: Device | str | None = "cpu",
                     dtype: DType | str | None = "float32", progress: Callable[[int], None] | None = None,
                     threads: int | None = None) -> BertModel:
        """Build the encoder from Hugging Face named weights (`embeddings.word_embeddings.weight`,
        `encoder.layer.N.attention.self.query.weight`, ..., optionally under `bert.`), checking every shape
        before reading; `progress(n)` is called as tensors are read."""
        dt = candle.dtype.as_dtype(dtype or "float32")
        dev = as_device(device if device is not None else "cpu")
        c = config
        hid, inter = c.hidden_size, c.intermediate_size
        prefix = _weights_prefix(weights)
        tick = progress or (lambda n: None)
        lock = threading.Lock()

        def get(name: str, shape: tuple[int, ...]) -> Tensor:
            t = weights.get(prefix + name, shape=shape, dtype=dt)
            with lock:
                tick(1)
            return t

        def layer(i: int) -> dict[str, Tensor]:
            a = f"encoder.layer.{i}.attention."
            q, k, v = (get(f"{a}self.{n}.weight", (hid, hid)) for n in ("query", "key", "value"))
            qb, kb, vb = (get(f"{a}self.{n}.bias", (hid,)) for n in ("query", "key", "value"))
            f = f"encoder.layer.{i}."
            return {
                "qkv_t": fuse_transposed(q, k, v), "qkv_b": candle.cat([qb, kb, vb], 0),
                "o_t": fuse_transposed(get(a + "output.dense.weight", (hid, hid))),
                "o_b": get(a + "output.dense.bias", (hid,)),
                "ln1_w": get(a + "output.LayerNorm.weight", (hid,)), "ln1_b": get(a + "output.LayerNorm.bias", (hid,)),
                "up_t": fuse_transposed(get(f + "intermediate.dense.weight", (inter, hid))),
                "up_b": get(f + "intermediate.dense.bias", (inter,)),
                "down_t": fuse_transposed(get(f + "output.dense.weight", (hid, inter))),
                "down_b": get(f + "output.dense.bias", (hid,)),
                "ln2_w": get(f + "output.LayerNorm.weight", (hid,)), "ln2_b": get(f + "output.LayerNorm.bias", (hid,)),
            }

        n = threads if threads is not None else min(4, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
            parts = list(pool.map(layer, range(c.num_hidden_layers)))
        e = "embeddings."
        emb = {"word": get(e + "word_embeddings.weight", (c.vocab_size, hid)),
               "position": get(e + "position_embeddings.weight", (c.max_position_embeddings, hid)),
               "token_type": get(e + "token_type_embeddings.weight", (c.type_vocab_size, hid)),
               "ln_w": get(e + "LayerNorm.weight", (hid,)), "ln_b": get(e + "LayerNorm.bias", (hid,))}
        emb = {k: v.to(device=dev) for k, v in emb.items()}
        layers = [BertLayer(c, {k: v.to(device=dev) for k, v in p.items()}) for p in parts]
        return cls(c, emb, layers)

    @classmethod
    def config_from_hf(cls, d: dict[str, Any]) -> BertConfig:
        """The config of a Hugging Face `config.json` (parsed)."""
        return BertConfig.from_hf(d)

    @staticmethod
    def weight_count(config: BertConfig) -> int:
        """How many tensors `from_weights` reads (for a progress bar)."""
        return 16 * config.num_hidden_layers + 5

    def attach(self, tokenizer: Any, source: Any = None) -> None:
        """Give the model its tokenizer (and the pooling of its folder's sentence-transformers files), so that
        `encode` works; `load_model` calls this."""
        folder = getattr(source, "path", None) if getattr(source, "kind", None) == "folder" else None
        pooling = PoolingConfig.from_folder(folder) if folder else None
        self.embedder = SentenceEmbedder(self, tokenizer, pooling) if tokenizer is not None else None

    # --- running -------------------------------------------------------------------------------------
    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """Token states `[B, T, hidden]` for int64 `input_ids [B, T]`; `attention_mask [B, T]` (1 = token,
        0 = padding; None = no padding) keeps padding out of every key set."""
        if input_ids.ndim != 2:
            raise ShapeError(f"BertModel: expected input_ids [batch, seq], got {list(input_ids.shape)}")
        b, t = input_ids.shape
        c = self.config
        if t > c.max_position_embeddings:
            raise ShapeError(f"BertModel: {t} tokens exceed max_position_embeddings ({c.max_position_embeddings}); "
                             f"truncate the input")
        dev = self.device
        if input_ids.device != dev:
            input_ids = input_ids.to(device=dev)
        mask = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (b, t):
                raise ShapeError(f"BertModel: attention_mask {list(attention_mask.shape)} must be [{b}, {t}] like "
                                 f"input_ids")
            mask = attention_mask.to(device=dev)
            if mask.dtype != candle.uint8:
                mask = mask != 0
            mask = mask.reshape(b, 1, 1, t)
        with candle.no_grad():
            x = candle.index_select(self.word, 0, input_ids.reshape(-1)).reshape(b, t, c.hidden_size)
            x = x + self.position.narrow(0, 0, t)
            if token_type_ids is None:
                x = x + self.token_type.narrow(0, 0, 1)
            else:
                x = x + candle.index_select(self.token_type, 0, token_type_ids.to(device=dev).reshape(-1)).reshape(
                    b, t, c.hidden_size)
            h = candle.layer_norm(x, c.hidden_size, self.ln_w, self.ln_b, c.layer_norm_eps).reshape(b * t, -1)
            for layer in self.layers:
                h = layer(h, b, t, mask)
        return h.reshape(b, t, c.hidden_size)

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, normalize: bool | None = True) -> Tensor:
        """Sentence embeddings `[n, hidden]` (see `SentenceEmbedder.encode`); needs the tokenizer, which
        `load_model(..., tokenizer=True)` (the default) attaches."""
        if self.embedder is None:
            raise CandleError("BertModel.encode needs the tokenizer: load the model with load_model(path) "
                              "(tokenizer=True) or call model.attach(tokenizer)")
        return self.embedder.encode(texts, batch_size=batch_size, normalize=normalize)

"""A Llama GGUF file's tensors under Hugging Face names, dequantized on request.

    token_embd.weight            -> model.embed_tokens.weight
    blk.N.attn_q/k/v/output      -> model.layers.N.self_attn.q/k/v/o_proj
    blk.N.ffn_gate/up/down       -> model.layers.N.mlp.gate/up/down_proj
    blk.N.attn_norm / ffn_norm   -> model.layers.N.input_layernorm / post_attention_layernorm
    output_norm / output         -> model.norm / lm_head   (no `output`: the head is tied)

llama.cpp's converter permutes the rows of Q and K (and their biases) within each head so that its
interleaved RoPE (pairs (2i, 2i+1)) computes what HF's half-split RoPE (pairs (i, i+hd/2)) computes on
the original weights. We undo that permutation here, once, at load, so the model runs one RoPE layout
(HF's, half-split) whatever the source: a safetensors checkpoint and its GGUF conversion then load into
identical weights and can be compared tensor by tensor against transformers, and the numpy rope kernel
works on two contiguous halves instead of stride-2 views. The cost is a reshape/swap of the Q and K
matrices, which the model's load copies anyway when it fuses and transposes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

import candle
from candle import ShapeError, Tensor
from candle.dtype import as_dtype
from candle.errors import fmt_shape
from candle.nn import MissingTensorError

__all__ = ["GGUFWeights", "gguf_to_hf_name", "hf_to_gguf_name", "unpermute_rows"]

_LAYER = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_HF_LAYER = {v: k for k, v in _LAYER.items()}
_HF_GLOBAL = {v: k for k, v in _GLOBAL.items()}
_GGUF_RE = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_HF_RE = re.compile(r"^model\.layers\.(\d+)\.([\w.]+)\.(weight|bias)$")


def gguf_to_hf_name(name: str) -> str | None:
    """The Hugging Face name of a llama GGUF tensor, or None for tensors the model does not use."""
    m = _GGUF_RE.match(name)
    if m:
        hf = _LAYER.get(m.group(2))
        return f"model.layers.{m.group(1)}.{hf}.{m.group(3)}" if hf else None
    base, _, kind = name.rpartition(".")
    hf = _GLOBAL.get(base)
    return f"{hf}.{kind}" if hf and kind in ("weight", "bias") else None


def hf_to_gguf_name(name: str) -> str | None:
    """The GGUF name of a Hugging Face llama tensor name (inverse of `gguf_to_hf_name`)."""
    m = _HF_RE.match(name)
    if m:
        g = _HF_LAYER.get(m.group(2))
        return f"blk.{m.group(1)}.{g}.{m.group(3)}" if g else None
    base, _, kind = name.rpartition(".")
    g = _HF_GLOBAL.get(base)
    return f"{g}.{kind}" if g else None


def unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's per-head row permutation of a Q or K weight `[n_head*hd, in]` (or bias `[n_head*hd]`):
    row `2i + j` of a head goes back to row `i + j*hd/2`."""
    hd = w.shape[0] // n_head
    rest = w.shape[1:]
    return np.ascontiguousarray(w.reshape((n_head, hd // 2, 2) + rest).swapaxes(1, 2)).reshape(w.shape)


class GGUFWeights:
    """`Weights` over an open `candle.io.GGUFReader`: HF names, shapes from the header, tensors dequantized
    (straight to the requested dtype) on `get`, Q/K un-permuted.

    Other architectures reuse it with their own naming: `to_hf` / `to_gguf` map tensor names both ways
    (default: the llama names above), `unpermute_qk=False` keeps Q/K rows as stored (files whose RoPE is
    already half-split, e.g. Gemma's), and `transform(hf_name, tensor)` rewrites a tensor after reading
    (e.g. Gemma's norm weights, which llama.cpp stores plus one)."""

    def __init__(self, reader: Any, config: Any, *, to_hf: Callable[[str], str | None] = gguf_to_hf_name,
                 to_gguf: Callable[[str], str | None] = hf_to_gguf_name, unpermute_qk: bool = True,
                 transform: Callable[[str, Tensor], Tensor] | None = None) -> None:
        self.reader = reader
        self.config = config
        self.where = f"'{reader.path}'"
        self._to_gguf = to_gguf
        self._unpermute = unpermute_qk
        self._transform = transform
        self._names: dict[str, str] = {}
        for g in reader.tensor_names:
            hf = to_hf(g)
            if hf is not None:
                self._names[hf] = g

    def keys(self) -> list[str]:
        return sorted(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    contains = __contains__

    def gguf_name(self, name: str) -> str:
        g = self._names.get(name)
        if g is None:
            want = self._to_gguf(name)
            raise MissingTensorError(f"GGUF file {self.where} has no tensor {want or name!r} (wanted as {name!r})")
        return g

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self.reader.tensor_info(self.gguf_name(name)).shape)

    def get(self, name: str, shape: Any = None, dtype: Any = None) -> Tensor:
        """Tensor `name` as a CPU tensor of `dtype` (default float32), checked against `shape` first."""
        g = self.gguf_name(name)
        stored = self.shape(name)
        if shape is not None and tuple(shape) != stored:
            raise ShapeError(f"GGUF file {self.where}: tensor {g!r} ({name}) has shape {fmt_shape(stored)}, "
                             f"expected {fmt_shape(tuple(shape))} for this config")
        dt = as_dtype(dtype) if dtype is not None else candle.float32
        arr = self.reader.numpy(g, dt)
        if self._unpermute and ".self_attn.q_proj." in name:
            arr = unpermute_rows(arr, self.config.num_attention_heads)
        elif self._unpermute and ".self_attn.k_proj." in name:
            arr = unpermute_rows(arr, self.config.num_key_value_heads)
        t = candle.from_numpy(arr)
        return self._transform(name, t) if self._transform is not None else t

    def get_quantized(self, name: str, shape: Any = None) -> Any:
        """Tensor `name` kept in its stored GGML type: a host `candle.quantized.QTensor` (Q/K rows
        un-permuted like `get`; no `transform`, so only for tensors that have none, e.g. projections)."""
        from candle.quantized import QTensor

        g = self.gguf_name(name)
        stored = self.shape(name)
        if shape is not None and tuple(shape) != stored:
            raise ShapeError(f"GGUF file {self.where}: tensor {g!r} ({name}) has shape {fmt_shape(stored)}, "
                             f"expected {fmt_shape(tuple(shape))} for this config")
        info = self.reader.tensor_info(g)
        raw = self.reader.raw(g).reshape(stored[0] if len(stored) > 1 else 1, -1)
        if self._unpermute and ".self_attn.q_proj." in name:
            raw = unpermute_rows(raw, self.config.num_attention_heads)
        elif self._unpermute and ".self_attn.k_proj." in name:
            raw = unpermute_rows(raw, self.config.num_key_value_heads)
        return QTensor.from_raw(np.ascontiguousarray(raw), info.qtype, stored)

    def __repr__(self) -> str:
        return f"GGUFWeights({self.where}, {len(self._names)} tensors)"

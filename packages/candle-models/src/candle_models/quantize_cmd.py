"""`candle quantize IN OUT --type q4_k`: write a GGUF file whose matrices are quantized to one GGML type.

IN is a GGUF file (its metadata and tensor names are kept; `general.file_type` is dropped, it would describe
the old file) or a Hugging Face Llama-family checkpoint (a folder with config.json and safetensors, or its
model.safetensors): its config becomes `llama.*` metadata, tensors get GGUF names, and Q/K rows are permuted the
way llama.cpp's converter does, so candle and llama.cpp read the file alike. A safetensors source has no GGUF
tokenizer: the file carries the model only (load it with `tokenizer=False`, or take the tokenizer from the
folder). Tensors of two or more dims become `--type` (from their float32 values) when their last dim is a whole
number of blocks; a k-quant falls back like llama.cpp's quantize (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
Q2_K/Q3_K -> Q4_0) for rows that are not a multiple of 256 (SmolLM2's 576); 1-d tensors (norms, biases) and
matrices that fit neither are written as F32.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from candle.io import GGUFReader, GGUFWriter
from candle.io._gguf_parse import GGUFValueType as V
from candle.io.ggml_quants import GGML_BLOCK_SIZES, GGMLType, ggml_type
from candle.quantized import QUANTIZE_TYPES, QTensor

from .config import LlamaConfig
from .gguf_weights import hf_to_gguf_name

__all__ = ["cmd_quantize", "permute_rows", "quantize_file"]


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's per-head row permutation of a Q or K weight (the inverse of `gguf_weights.unpermute_rows`):
    row `i + j*hd/2` of a head goes to row `2i + j`."""
    hd = w.shape[0] // n_head
    rest = w.shape[1:]
    return np.ascontiguousarray(w.reshape((n_head, 2, hd // 2) + rest).swapaxes(1, 2)).reshape(w.shape)


#: llama.cpp's fallbacks for k-quant matrices whose rows are not a whole number of 256-element blocks.
FALLBACK = {GGMLType.Q2_K: GGMLType.Q4_0, GGMLType.Q3_K: GGMLType.Q4_0, GGMLType.Q4_K: GGMLType.Q5_0,
            GGMLType.Q5_K: GGMLType.Q5_1, GGMLType.Q6_K: GGMLType.Q8_0, GGMLType.Q8_K: GGMLType.Q8_0}


def _convert(t: GGMLType, name: str, values: np.ndarray) -> Any:
    """The tensor to write: quantized when it is a matrix (a k-quant falling back to a 32-element type when its
    rows do not fit 256-element blocks), else float32."""
    if values.ndim >= 2:
        for qt in (t, FALLBACK.get(t)):
            if qt is not None and values.shape[-1] % GGML_BLOCK_SIZES[qt][0] == 0:
                return QTensor.quantize(values, qt)
    return np.ascontiguousarray(values, dtype=np.float32)


def _gguf_source(src: str) -> tuple[dict[str, Any], dict[str, Any], Iterator[tuple[str, np.ndarray]], int]:
    r = GGUFReader(src)
    meta = {k: v for k, v in r.metadata.items() if k != "general.file_type"}

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for name in r.tensor_names:
            yield name, r.numpy(name, "float32")

    return meta, dict(r.field_types), tensors(), r.alignment


def _llama_metadata(c: LlamaConfig, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    a = "llama"
    hd = c.head_dim or c.hidden_size // c.num_attention_heads
    meta: dict[str, Any] = {
        "general.architecture": a, "general.name": name, f"{a}.vocab_size": c.vocab_size,
        f"{a}.context_length": c.max_position_embeddings, f"{a}.embedding_length": c.hidden_size,
        f"{a}.feed_forward_length": c.intermediate_size, f"{a}.block_count": c.num_hidden_layers,
        f"{a}.attention.head_count": c.num_attention_heads,
        f"{a}.attention.head_count_kv": c.num_key_value_heads or c.num_attention_heads,
        f"{a}.rope.freq_base": float(c.rope_theta), f"{a}.attention.layer_norm_rms_epsilon": float(c.rms_norm_eps),
        f"{a}.rope.dimension_count": hd, f"{a}.attention.key_length": hd, f"{a}.attention.value_length": hd,
    }
    types = {k: (V.UINT32,) for k, v in meta.items() if isinstance(v, int)}
    if c.rope_scaling and c.rope_scaling.get("rope_type", c.rope_scaling.get("type")) == "linear":
        meta[f"{a}.rope.scaling.type"] = "linear"
        meta[f"{a}.rope.scaling.factor"] = float(c.rope_scaling["factor"])
    elif c.rope_scaling:
        raise ValueError(f"candle quantize: rope scaling {c.rope_scaling} has no GGUF form here (linear only)")
    if c.bos_token_id is not None:
        meta["tokenizer.ggml.bos_token_id"] = c.bos_token_id
        types["tokenizer.ggml.bos_token_id"] = (V.UINT32,)
    if c.eos_token_id:
        meta["tokenizer.ggml.eos_token_id"] = c.eos_token_id[0]
        types["tokenizer.ggml.eos_token_id"] = (V.UINT32,)
    return meta, types


def _safetensors_source(src: str) -> tuple[dict[str, Any], dict[str, Any], Iterator[tuple[str, np.ndarray]], int]:
    from candle.nn import WeightStore

    folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    cfg_path = os.path.join(folder, "config.json")
    if not os.path.exists(cfg_path):
        raise ValueError(f"candle quantize: no config.json beside '{src}'")
    with open(cfg_path, encoding="utf-8") as f:
        d = json.load(f)
    if d.get("model_type") not in ("llama", "mistral"):
        raise ValueError(f"candle quantize: safetensors input supports Llama-family checkpoints (model_type llama, "
                         f"mistral), not {d.get('model_type')!r}; convert a GGUF file instead")
    c = LlamaConfig.from_hf(d)
    meta, types = _llama_metadata(c, os.path.basename(os.path.normpath(folder)))
    store = WeightStore(src)

    def tensors() -> Iterator[tuple[str, np.ndarray]]:
        for hf in store.keys():
            g = hf_to_gguf_name(hf)
            if g is None:
                continue
            if c.tie_word_embeddings and g == "output.weight":
                continue
            w = np.asarray(store.get(hf, dtype="float32").numpy())
            if ".self_attn.q_proj." in hf:
                w = permute_rows(w, c.num_attention_heads)
            elif ".self_attn.k_proj." in hf:
                w = permute_rows(w, c.num_key_value_heads or c.num_attention_heads)
            yield g, w

    return meta, types, tensors(), 32


def quantize_file(src: str, dst: str, qtype: str) -> tuple[int, int]:
    """Write `dst` from `src` (see the module docs): (tensors quantized, tensors kept F32)."""
    t = ggml_type(qtype)
    if t not in QUANTIZE_TYPES:
        raise ValueError(f"candle quantize: cannot quantize to {t.name} "
                         f"(supported: {', '.join(sorted(x.name.lower() for x in QUANTIZE_TYPES))})")
    if src.endswith(".gguf"):
        meta, types, tensors, alignment = _gguf_source(src)
    elif os.path.isdir(src) or src.endswith(".safetensors"):
        meta, types, tensors, alignment = _safetensors_source(src)
    else:
        raise ValueError(f"candle quantize: '{src}' is neither a .gguf file nor a safetensors checkpoint")
    w = GGUFWriter(dst, alignment)
    w.add_metadata(meta, types)
    nq = nf = 0
    for name, values in tensors:
        out = _convert(t, name, values)
        nq += isinstance(out, QTensor)
        nf += not isinstance(out, QTensor)
        w.add_tensor(name, out)
    w.write()
    return nq, nf


def cmd_quantize(args: argparse.Namespace) -> int:
    try:
        nq, nf = quantize_file(os.fspath(args.input), os.fspath(args.output), args.type)
    except (ValueError, FileNotFoundError) as e:
        print(str(e), file=sys.stderr)
        return 2
    print(f"wrote {args.output}: {nq} tensors {args.type.upper()}, {nf} F32", file=sys.stderr)
    return 0


def add_parser(sub: Any) -> None:
    p = sub.add_parser("quantize", help="write a GGUF file with the matrices of a GGUF or safetensors (Llama) "
                       "model quantized to one GGML type (metadata kept)")
    p.add_argument("input", help="a .gguf file, or a Hugging Face folder / model.safetensors (Llama family)")
    p.add_argument("output", help="the .gguf file to write")
    p.add_argument("--type", default="q4_k", help="q4_0, q4_1, q5_0, q5_1, q8_0, q2_k ... q8_k, f16, bf16, f32 "
                   "(default q4_k)")
    p.set_defaults(func=cmd_quantize)

"""`quantize(x, qtype)`: float arrays to raw GGML bytes, and `dequantize` back (the reference decoder).

    raw = quantize(w, "q4_k")        # w float [..., K] -> uint8 [..., row_nbytes(Q4_K, K)]
    w2 = dequantize(raw, "q4_k")     # float32 [..., K]

Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and BF16 give the bytes of gguf-py's `gguf.quants.quantize` (and of ggml);
the k-quants follow ggml's reference quantizers (see `_kquants`); F32 and F16 are plain casts. Work is
chunked so the temporaries of the scale searches stay small.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..io.ggml_quants import GGML_BLOCK_SIZES, GGMLType, dequantize, ggml_type
from . import _kquants, _legacy

__all__ = ["QUANTIZE_TYPES", "dequantize", "quantize"]

_BLOCK_QUANTIZERS: dict[GGMLType, Callable[[np.ndarray], np.ndarray]] = {
    GGMLType.Q4_0: _legacy.quantize_q4_0, GGMLType.Q4_1: _legacy.quantize_q4_1,
    GGMLType.Q5_0: _legacy.quantize_q5_0, GGMLType.Q5_1: _legacy.quantize_q5_1,
    GGMLType.Q8_0: _legacy.quantize_q8_0,
    GGMLType.Q2_K: _kquants.quantize_q2_k, GGMLType.Q3_K: _kquants.quantize_q3_k,
    GGMLType.Q4_K: _kquants.quantize_q4_k, GGMLType.Q5_K: _kquants.quantize_q5_k,
    GGMLType.Q6_K: _kquants.quantize_q6_k, GGMLType.Q8_K: _kquants.quantize_q8_k,
}

#: Every type `quantize` produces.
QUANTIZE_TYPES: frozenset[GGMLType] = frozenset(_BLOCK_QUANTIZERS) | {GGMLType.F32, GGMLType.F16, GGMLType.BF16}

_CHUNK_ELEMENTS = 1 << 18  # elements quantized per chunk (the k-quant searches make ~40 temporaries of this)


def quantize(x: np.ndarray, qtype: GGMLType | int | str) -> np.ndarray:
    """Quantize a float array `[..., K]` to GGML type `qtype`: uint8 `[..., row_nbytes(qtype, K)]`.

    `K` must be a whole number of blocks (ValueError otherwise); the input is converted to float32 first
    (what gguf-py and llama.cpp do). Types outside `QUANTIZE_TYPES` raise NotImplementedError."""
    t = ggml_type(qtype)
    if t not in QUANTIZE_TYPES:
        raise NotImplementedError(f"quantization to GGML type {t.name} is not implemented "
                                  f"(supported: {', '.join(sorted(k.name for k in QUANTIZE_TYPES))})")
    a = np.asarray(x)
    if a.dtype.kind != "f" and a.dtype.name != "bfloat16":
        raise TypeError(f"quantize: expected a float array, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.ndim == 0:
        a = a.reshape(1)
    bs, ts = GGML_BLOCK_SIZES[t]
    k = a.shape[-1]
    if k % bs:
        raise ValueError(f"quantize: the last dim ({k}) of shape {list(a.shape)} is not a multiple of the "
                         f"{t.name} block size {bs}")
    lead = a.shape[:-1]
    if t is GGMLType.F32:
        return a.view(np.uint8).reshape(*lead, k * 4)
    if t is GGMLType.F16:
        return a.astype("<f2").view(np.uint8).reshape(*lead, k * 2)
    if t is GGMLType.BF16:
        return _legacy.quantize_bf16(a).astype("<u2").view(np.uint8).reshape(*lead, k * 2)
    fn = _BLOCK_QUANTIZERS[t]
    blocks = a.reshape(-1, bs)
    out = np.empty((blocks.shape[0], ts), np.uint8)
    step = max(1, _CHUNK_ELEMENTS // bs)
    with np.errstate(all="ignore"):
        for s in range(0, blocks.shape[0], step):
            out[s:s + step] = fn(blocks[s:s + step])
    return out.reshape(*lead, k // bs * ts)

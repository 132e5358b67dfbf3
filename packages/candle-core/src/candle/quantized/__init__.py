"""Quantized tensors: GGML block types (Q4_0 ... Q8_0, the k-quants Q2_K ... Q8_K, F16/BF16/F32) kept
quantized on a device, with a quantized matmul and embedding lookup as fused kernels of every backend.

    from candle.quantized import QTensor, QLinear, qmatmul
    q = QTensor.quantize(w, "q4_k")          # or QTensor.from_gguf(reader, name)
    y = qmatmul(x, q)                        # x @ q.dequantize().T

See docs/quantized.md.
"""

from __future__ import annotations

from typing import Any

from ..io.ggml_quants import GGMLType
from .ops import qdequantize, qembedding, qmatmul
from .qtensor import QTensor
from .quantize import QUANTIZE_TYPES, dequantize, quantize

__all__ = ["QUANTIZE_TYPES", "GGMLType", "QEmbedding", "QLinear", "QTensor", "dequantize", "qdequantize",
           "qembedding", "qmatmul", "quantize"]


def __getattr__(name: str) -> Any:
    """`QLinear` and `QEmbedding` are imported on first use (they pull in candle.nn)."""
    if name in ("QLinear", "QEmbedding"):
        from . import nn

        return getattr(nn, name)
    raise AttributeError(f"module 'candle.quantized' has no attribute {name!r}")

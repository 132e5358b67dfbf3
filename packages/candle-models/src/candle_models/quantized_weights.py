"""Quantized projection weights for the models: `QMat` (x @ W^T with W kept as GGML blocks).

A model built with `quantized=True` from a GGUF file keeps each projection as a `QMat`: the stored blocks of
its source tensors (Q/K rows un-permuted, rows of tensors with one GGML type concatenated into one fused
matrix, e.g. Q/K/V or gate/up), applied with `candle.quantized.qmatmul`. Tensors of different types stay
separate `QTensor`s whose outputs are concatenated.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import candle
from candle import Tensor
from candle.quantized import QTensor, qmatmul

__all__ = ["QMat", "fuse_rows"]


def fuse_rows(parts: list[QTensor]) -> list[QTensor]:
    """Row-concatenate consecutive host QTensors of one type (blocks run along rows, so rows concatenate)."""
    out: list[QTensor] = []
    for p in parts:
        if out and out[-1].qtype == p.qtype and out[-1].shape[1] == p.shape[1]:
            prev = out[-1]
            raw = np.concatenate([prev.raw(), p.raw()], axis=0)
            out[-1] = QTensor.from_raw(raw, p.qtype, (prev.shape[0] + p.shape[0], p.shape[1]), prev.device)
        else:
            out.append(p)
    return out


class QMat:
    """`x @ W.T` for a quantized W `(out, in)` made of row blocks `parts` (each a 2-d QTensor)."""

    __slots__ = ("parts", "shape")

    def __init__(self, parts: list[QTensor]) -> None:
        self.parts = parts
        self.shape = (sum(p.shape[0] for p in parts), parts[0].shape[1])

    def __call__(self, x: Tensor) -> Tensor:
        if len(self.parts) == 1:
            return qmatmul(x, self.parts[0])
        return candle.cat([qmatmul(x, p) for p in self.parts], -1)

    def to(self, device: Any) -> QMat:
        return QMat([p.to(device) for p in self.parts])

    @property
    def resident_nbytes(self) -> int:
        return sum(p.resident_nbytes for p in self.parts)

    def __repr__(self) -> str:
        return f"QMat({', '.join(p.qtype.name for p in self.parts)}, out={self.shape[0]}, in={self.shape[1]})"

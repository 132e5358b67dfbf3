"""Modules over quantized weights: `QLinear` (y = x W^T + b) and `QEmbedding` (row lookup).

    lin = QLinear(QTensor.quantize(w, "q4_k"), bias)        # or QLinear.from_linear(nn_linear, "q8_0")
    y = lin(x)                                               # x [..., in] float -> [..., out], x's dtype
    emb = QEmbedding(QTensor.from_gguf(reader, "token_embd.weight"), dtype=candle.float32)
    h = emb(ids)                                             # [*ids.shape, dim]

The quantized weight is not a Parameter (it has no gradient); `to(device=...)` moves it with the rest.
"""

from __future__ import annotations

from typing import Any

from ..dtype import DType, as_dtype, float32
from ..errors import ShapeError, fmt_shape
from ..nn.module import Module
from ..nn.parameter import Parameter
from ..tensor import Tensor
from .ops import qembedding, qmatmul
from .qtensor import QTensor

__all__ = ["QEmbedding", "QLinear"]


class QLinear(Module):
    """`x @ weight.dequantize().T + bias` with `weight` a quantized `(out, in)` QTensor."""

    def __init__(self, weight: QTensor, bias: Tensor | None = None) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ShapeError(f"QLinear: the weight must be 2-d (out, in), got {fmt_shape(weight.shape)}")
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise ShapeError(f"QLinear: bias {fmt_shape(bias.shape)} must have shape [{weight.shape[0]}]")
        self.__dict__["weight"] = weight
        self.bias = Parameter(bias, requires_grad=False) if bias is not None else None
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    @classmethod
    def from_linear(cls, linear: Any, qtype: str) -> QLinear:
        """Quantize a `candle.nn.Linear` (its weight and bias)."""
        return cls(QTensor.quantize(linear.weight.detach(), qtype), linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = qmatmul(x, self.__dict__["weight"])
        b = self._parameters.get("bias")
        return y + b.to(dtype=y.dtype) if b is not None else y

    def to(self, *args: Any, device: Any = None, dtype: Any = None) -> QLinear:
        super().to(*args, device=device, dtype=dtype)
        if device is not None:
            self.__dict__["weight"] = self.__dict__["weight"].to(device)
        return self

    def extra_repr(self) -> str:
        w: QTensor = self.__dict__["weight"]
        return f"in={self.in_features}, out={self.out_features}, {w.qtype.name}, bias={self.bias is not None}"


class QEmbedding(Module):
    """Rows of a quantized `(num, dim)` table, dequantized to `dtype` on lookup."""

    def __init__(self, weight: QTensor, dtype: DType | str = float32) -> None:
        super().__init__()
        if weight.ndim != 2:
            raise ShapeError(f"QEmbedding: the weight must be 2-d (num, dim), got {fmt_shape(weight.shape)}")
        self.__dict__["weight"] = weight
        self.dtype = as_dtype(dtype)
        self.num_embeddings, self.embedding_dim = weight.shape

    def forward(self, ids: Tensor) -> Tensor:
        return qembedding(self.__dict__["weight"], ids, self.dtype)

    def to(self, *args: Any, device: Any = None, dtype: Any = None) -> QEmbedding:
        super().to(*args, device=device, dtype=dtype)
        if device is not None:
            self.__dict__["weight"] = self.__dict__["weight"].to(device)
        if dtype is not None:
            self.dtype = as_dtype(dtype)
        return self

    def extra_repr(self) -> str:
        w: QTensor = self.__dict__["weight"]
        return f"{self.num_embeddings}, {self.embedding_dim}, {w.qtype.name}"

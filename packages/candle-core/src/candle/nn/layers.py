"""Basic layers: Linear, Bilinear, Identity, Flatten, Unflatten, Embedding, Dropout and the
activation modules, each initialised like its `torch.nn` counterpart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import autograd as ag
from .. import ops
from ..device import Device
from ..dtype import DType
from ..errors import ShapeError
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter

__all__ = ["ELU", "GELU", "GLU", "Bilinear", "Dropout", "Embedding", "Flatten", "Hardsigmoid", "Hardswish",
           "Hardtanh", "Identity", "LeakyReLU", "Linear", "LogSigmoid", "LogSoftmax", "Mish", "ReLU", "ReLU6",
           "SiLU", "Sigmoid", "Softmax", "Softplus", "Softsign", "Tanh", "Unflatten", "new_parameter"]


def new_parameter(shape: Sequence[int], device: Device | str | None = None,
                  dtype: DType | str | None = None) -> Parameter:
    """An uninitialised float parameter (the layer's `reset_parameters` fills it)."""
    return Parameter(ops.empty(tuple(shape), dtype=dtype, device=device))


def _uniform_bound(t: Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    init.uniform_(t, -bound, bound)


class Identity(Module):
    """Returns its input (constructor arguments are ignored, like PyTorch's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return input


class Linear(Module):
    """`y = x @ weight.T + bias`; weight [out, in] from kaiming_uniform_(a=sqrt(5)) (U(+-1/sqrt(in))),
    bias U(+-1/sqrt(in))."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Device | str | None = None,
                 dtype: DType | str | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = new_parameter((out_features, in_features), device, dtype)
        if bias:
            self.bias = new_parameter((out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            _uniform_bound(self.bias, self.in_features)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Bilinear(Module):
    """`y_k = x1 @ weight[k] @ x2 + bias[k]`; weight [out, in1, in2] and bias U(+-1/sqrt(in1))."""

    def __init__(self, in1_features: int, in2_features: int, out_features: int, bias: bool = True,
                 device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        super().__init__()
        self.in1_features, self.in2_features, self.out_features = in1_features, in2_features, out_features
        self.weight = new_parameter((out_features, in1_features, in2_features), device, dtype)
        if bias:
            self.bias = new_parameter((out_features,), device, dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _uniform_bound(self.weight, self.in1_features)
        if self.bias is not None:
            _uniform_bound(self.bias, self.in1_features)

    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        return F.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}")


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    def __init__(self, dim: int, unflattened_size: Sequence[int]) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return input.unflatten(self.dim, self.unflattened_size)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class Embedding(Module):
    """A lookup table [num_embeddings, embedding_dim] initialised N(0, 1), the `padding_idx` row zero
    (and excluded from the gradient)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: Tensor | None = None, _freeze: bool = False,
                 device: Device | str | None = None, dtype: DType | str | None = None) -> None:
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ShapeError(f"Embedding: padding_idx {padding_idx} must be within num_embeddings "
                                 f"({num_embeddings})")
            padding_idx = padding_idx + num_embeddings if padding_idx < 0 else padding_idx
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = new_parameter((num_embeddings, embedding_dim), device, dtype)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ShapeError(f"Embedding: _weight has shape {list(_weight.shape)}, expected "
                                 f"[{num_embeddings}, {embedding_dim}]")
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            with ag.no_grad():
                self.weight[self.padding_idx] = 0.0

    @classmethod
    def from_pretrained(cls, embeddings: Tensor, freeze: bool = True, padding_idx: int | None = None,
                        **kwargs: Any) -> Embedding:
        """An Embedding whose weight shares the storage of `embeddings` [n, dim] (frozen by default)."""
        if embeddings.ndim != 2:
            raise ShapeError(f"Embedding.from_pretrained: expected a 2-d tensor, got shape {list(embeddings.shape)}")
        n, d = embeddings.shape
        return cls(n, d, padding_idx=padding_idx, _weight=embeddings, _freeze=freeze, **kwargs)

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.embedding(input, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + (f", padding_idx={self.padding_idx}" if self.padding_idx is not None else "")


class Dropout(Module):
    """Zeroes elements with probability `p` in training mode; the identity in eval mode."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


# --- activations ----------------------------------------------------------------------------------
class _Activation(Module):
    """An activation without parameters: `forward` applies `_fn` with the stored keyword arguments."""

    _fn: Any = None
    _args: tuple[str, ...] = ()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        for k in self._args:
            setattr(self, k, kwargs[k])

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002
        return type(self)._fn(input, **{k: getattr(self, k) for k in self._args})

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in self._args)


class ReLU(_Activation):
    _fn = staticmethod(F.relu)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()


class ReLU6(_Activation):
    _fn = staticmethod(F.relu6)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()


class Hardtanh(_Activation):
    _fn = staticmethod(F.hardtanh)
    _args = ("min_val", "max_val")

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__(min_val=min_val, max_val=max_val)


class GELU(_Activation):
    _fn = staticmethod(F.gelu)
    _args = ("approximate",)

    def __init__(self, approximate: str = "none") -> None:
        super().__init__(approximate=approximate)


class SiLU(_Activation):
    _fn = staticmethod(F.silu)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()


class Sigmoid(_Activation):
    _fn = staticmethod(F.sigmoid)


class Tanh(_Activation):
    _fn = staticmethod(F.tanh)


class Softsign(_Activation):
    _fn = staticmethod(F.softsign)


class LogSigmoid(_Activation):
    _fn = staticmethod(F.logsigmoid)


class Hardsigmoid(_Activation):
    _fn = staticmethod(F.hardsigmoid)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()


class Softplus(_Activation):
    _fn = staticmethod(F.softplus)
    _args = ("beta", "threshold")

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__(beta=beta, threshold=threshold)


class Mish(_Activation):
    _fn = staticmethod(F.mish)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()


class LeakyReLU(_Activation):
    _fn = staticmethod(F.leaky_relu)
    _args = ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__(negative_slope=negative_slope)


class ELU(_Activation):
    _fn = staticmethod(F.elu)
    _args = ("alpha",)

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__(alpha=alpha)


class Hardswish(_Activation):
    _fn = staticmethod(F.hardswish)

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()


class GLU(_Activation):
    _fn = staticmethod(F.glu)
    _args = ("dim",)

    def __init__(self, dim: int = -1) -> None:
        super().__init__(dim=dim)


class Softmax(_Activation):
    _fn = staticmethod(F.softmax)
    _args = ("dim",)

    def __init__(self, dim: int | None = None) -> None:
        super().__init__(dim=dim)


class LogSoftmax(_Activation):
    _fn = staticmethod(F.log_softmax)
    _args = ("dim",)

    def __init__(self, dim: int | None = None) -> None:
        super().__init__(dim=dim)

"""`candle.nn.functional`: PyTorch's functional namespace over candle's core ops.

Activations, softmax, one_hot, pad, dropout, linear, embedding, normalisations (rms_norm,
layer_norm and silu_mul use the backend's fused kernels when it has them), normalize,
cosine_similarity, the losses (see `_losses`), and re-exports of convolutions, pooling,
interpolation and attention. `inplace=` arguments are accepted for compatibility; candle always
returns a new tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from importlib.util import find_spec
from typing import Any

from .. import autograd as ag
from .. import ops
from ..dtype import DType, float32, int64
from ..errors import DTypeError, ShapeError, UnsupportedError, fmt_shape
from ..ops._base import broadcast_shapes, needs_grad, norm_dim, record
from ..ops.activation import log_softmax as _log_softmax
from ..ops.activation import softmax as _softmax
from ..ops.conv import (
    avg_pool1d,
    avg_pool2d,
    conv1d,
    conv2d,
    conv_transpose1d,
    conv_transpose2d,
    max_pool1d,
    max_pool2d,
    upsample_nearest1d,
    upsample_nearest2d,
)
from ..ops.conv import pad as _pad_constant
from ..ops.norm import batch_norm, group_norm, layer_norm, silu_mul
from ..ops.norm import rms_norm as _rms_norm_last
from ..ops.norm import rms_norm_nd as _rms_norm_nd
from ..tensor import Tensor
from ._losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)


# --- activations ----------------------------------------------------------------------------------
def relu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return ops.relu(input)


def _clip(x: Tensor, low: float, high: float) -> Tensor:
    """clamp(x, low, high) whose gradient is 1 strictly inside (low, high) and 0 elsewhere, the boundaries
    included (PyTorch's hardtanh rule; `clamp` passes the gradient at the boundaries)."""
    inside = ops.logical_and(ops.gt(x, low), ops.lt(x, high))
    return ops.where(inside, x, ops.clamp(x.detach(), low, high))


def relu6(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return _clip(input, 0.0, 6.0)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    return _clip(input, min_val, max_val)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:  # noqa: A002
    """GELU, exact (erf) or `approximate="tanh"`."""
    return ops.gelu(input, approximate)


def silu(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    return ops.silu(input)


def sigmoid(input: Tensor) -> Tensor:  # noqa: A002
    return ops.sigmoid(input)


def tanh(input: Tensor) -> Tensor:  # noqa: A002
    return ops.tanh(input)


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:  # noqa: A002
    """`log(1 + exp(beta x)) / beta`, and x itself where `beta x > threshold`."""
    bx = input * beta if beta != 1.0 else input
    soft = ops.log1p(ops.exp(ops.clamp(bx, max=threshold)))
    if beta != 1.0:
        soft = soft * (1.0 / beta)
    return ops.where(ops.gt(bx, threshold), input, soft)


def mish(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """`x * tanh(softplus(x))`."""
    return input * ops.tanh(softplus(input))


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:  # noqa: A002
    return ops.where(ops.gt(input, 0), input, input * negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:  # noqa: A002
    return ops.elu(input, alpha)


def hardswish(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """`x * relu6(x + 3) / 6`."""
    return input * _clip(input + 3.0, 0.0, 6.0) * (1.0 / 6.0)


def hardsigmoid(input: Tensor, inplace: bool = False) -> Tensor:  # noqa: A002
    """`relu6(x + 3) / 6`."""
    return _clip(input + 3.0, 0.0, 6.0) * (1.0 / 6.0)


def logsigmoid(input: Tensor) -> Tensor:  # noqa: A002
    """`log(sigmoid(x))`, computed stably."""
    return ops.minimum(input, 0.0) - ops.log1p(ops.exp(-ops.abs(input)))


def softsign(input: Tensor) -> Tensor:  # noqa: A002
    return input / (ops.abs(input) + 1.0)


def glu(input: Tensor, dim: int = -1) -> Tensor:  # noqa: A002
    """`a * sigmoid(b)` for the two halves a, b of `input` along `dim`."""
    d = norm_dim(dim, input.ndim, "glu")
    if input._shape[d] % 2:
        raise ShapeError(f"glu: dim {dim} of input {fmt_shape(input._shape)} must have an even size")
    a, b = ops.chunk(input, 2, d)
    return a * ops.sigmoid(b)


def _implicit_dim(ndim: int) -> int:
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: DType | None = None) -> Tensor:  # noqa: A002
    """Softmax along `dim` (PyTorch's legacy implicit dim when None)."""
    return _softmax(input, _implicit_dim(input.ndim) if dim is None else dim, dtype)


def log_softmax(input: Tensor, dim: int | None = None, _stacklevel: int = 3,  # noqa: A002
                dtype: DType | None = None) -> Tensor:
    return _log_softmax(input, _implicit_dim(input.ndim) if dim is None else dim, dtype)


# --- encoding, padding, dropout ---------------------------------------------------------------------
def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding along a new last dim (num_classes=-1: the largest class + 1)."""
    if not isinstance(tensor, Tensor) or tensor._dtype.is_floating_point:
        raise DTypeError("one_hot: expected an integer tensor of class indices")
    if tensor.numel():
        lo, hi = int(tensor.min().item()), int(tensor.max().item())
        if lo < 0:
            raise ValueError(f"one_hot: class values must be non-negative, got {lo}")
        if num_classes == -1:
            num_classes = hi + 1
        elif hi >= num_classes:
            raise ValueError(f"one_hot: class value {hi} must be smaller than num_classes ({num_classes})")
    elif num_classes == -1:
        raise ValueError("one_hot: cannot infer the number of classes of an empty tensor")
    classes = ops.arange(num_classes, device=tensor._device)
    return ops.cast(ops.eq(ops.unsqueeze(ops.cast(tensor, int64), -1), classes), int64)


def _source_index(mode: str, n: int, lo: int, hi: int) -> list[int]:
    """Input positions read by the outputs of one padded dim (reflect, replicate or circular)."""
    limit = n - 1 if mode == "reflect" else n
    if mode != "replicate" and (lo > limit or hi > limit):
        raise ShapeError(f"pad: {mode} padding ({lo}, {hi}) must be {'<' if mode == 'reflect' else '<='} the "
                         f"size {n} of the padded dim")
    if n == 0:
        raise ShapeError(f"pad: {mode} padding of an empty dim")
    out = []
    for p in range(-lo, n + hi):
        if mode == "reflect":
            p = -p if p < 0 else (2 * (n - 1) - p if p >= n else p)
        elif mode == "replicate":
            p = min(max(p, 0), n - 1)
        else:
            p %= n
        out.append(p)
    return out


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None) -> Tensor:  # noqa: A002
    """PyTorch's `F.pad`: `pad = (left, right, top, bottom, ...)` from the last dim backwards, in
    `constant` (value), `reflect`, `replicate` or `circular` mode."""
    if mode == "constant":
        return _pad_constant(input, pad, "constant", value)
    if mode not in ("reflect", "replicate", "circular"):
        raise UnsupportedError(f"pad: mode {mode!r} is not supported (constant, reflect, replicate, circular)")
    pads = [int(p) for p in pad]
    if len(pads) % 2 or len(pads) // 2 > input.ndim:
        raise ShapeError(f"pad: padding {pads} must have an even length of at most 2 * {input.ndim}")
    x = input
    for k in range(len(pads) // 2):
        d = input.ndim - 1 - k
        lo, hi = pads[2 * k], pads[2 * k + 1]
        if lo or hi:
            idx = ops.tensor(_source_index(mode, x._shape[d], lo, hi), dtype=int64, device=x._device)
            x = ops.index_select(x, d, idx)
    return x


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False,  # noqa: A002
            generator: Any = None) -> Tensor:
    """Zero each element with probability `p` and scale the rest by 1 / (1 - p) when training."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    draw_dtype = input._dtype if input._dtype.itemsize >= 4 else float32  # half dtypes: an exact probability
    keep = ops.ge(ops.rand(input._shape, dtype=draw_dtype, device=input._device, generator=generator), p)
    return input * (ops.cast(keep, input._dtype) * (1.0 / (1.0 - p)))


# --- linear and embedding -------------------------------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:  # noqa: A002
    """`input @ weight.T + bias` with weight [out, in]; leading dims are folded into one matmul."""
    if weight.ndim not in (1, 2):
        raise ShapeError(f"linear: expected a weight [out, in] (or [in]), got {fmt_shape(weight._shape)}")
    wt = ops.t(weight) if weight.ndim == 2 else weight
    if input.ndim > 2:
        lead = input._shape[:-1]
        out = ops.matmul(ops.reshape(input, (-1, input._shape[-1])), wt)
        out = ops.reshape(out, lead + out._shape[1:])
    else:
        out = ops.matmul(input, wt)
    return out + bias if bias is not None else out


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """`y_k = x1 @ weight[k] @ x2 + bias[k]` with weight [out, in1, in2]."""
    if weight.ndim != 3 or input1._shape[-1] != weight._shape[1] or input2._shape[-1] != weight._shape[2]:
        raise ShapeError(f"shape mismatch in bilinear: input1 {fmt_shape(input1._shape)}, input2 "
                         f"{fmt_shape(input2._shape)}, weight {fmt_shape(weight._shape)} [out, in1, in2]")
    o, i1, i2 = weight._shape
    lead = input1._shape[:-1]
    w = ops.reshape(ops.permute(weight, (1, 0, 2)), (i1, o * i2))
    t = ops.reshape(ops.matmul(ops.reshape(input1, (-1, i1)), w), (-1, o, i2))
    out = ops.sum(t * ops.unsqueeze(ops.reshape(input2, (-1, i2)), 1), -1)
    out = ops.reshape(out, lead + (o,))
    return out + bias if bias is not None else out


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None, max_norm: float | None = None,  # noqa: A002
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of `weight` [num_embeddings, dim] at the integer `input`; the row at `padding_idx` gets no
    gradient."""
    if max_norm is not None or scale_grad_by_freq or sparse:
        raise UnsupportedError("embedding: max_norm, scale_grad_by_freq and sparse are not supported")
    if not isinstance(input, Tensor) or input._dtype.is_floating_point:
        raise DTypeError("embedding: expected an integer tensor of indices")
    if weight.ndim != 2:
        raise ShapeError(f"embedding: expected a weight [num_embeddings, dim], got {fmt_shape(weight._shape)}")
    out = ops.index_select(weight, 0, ops.reshape(input, (-1,)))
    out = ops.reshape(out, input._shape + (weight._shape[1],))
    if padding_idx is not None and needs_grad(weight):
        n = weight._shape[0]
        idx = padding_idx + n if padding_idx < 0 else padding_idx
        if not 0 <= idx < n:
            raise ShapeError(f"embedding: padding_idx {padding_idx} out of range for {n} embeddings")
        keep = ops.unsqueeze(ops.ne(input, idx), -1)
        out = ops.where(keep, out, out.detach())
    return out


# --- normalisation ------------------------------------------------------------------------------
def rms_norm(input: Tensor, normalized_shape: Any, weight: Any = None, eps: float | None = None) -> Tensor:  # noqa: A002
    """`torch.nn.functional.rms_norm(input, normalized_shape, weight=None, eps=None)`; Candle's
    `rms_norm(x, weight, eps)` (a weight tensor second, over the last dim) is accepted too."""
    if isinstance(normalized_shape, Tensor):
        if weight is not None and isinstance(weight, Tensor):
            raise DTypeError("rms_norm: got two weight tensors; the signature is "
                             "(input, normalized_shape, weight, eps)")
        return _rms_norm_last(input, normalized_shape, eps if weight is None else float(weight))
    return _rms_norm_nd(input, normalized_shape, weight, eps)


def _vector_norm(x: Tensor, p: float, dim: int) -> Tensor:
    """The p-norm along `dim` (keepdim), whose gradient is 0 (not NaN) at a zero vector, like PyTorch's."""
    if p == math.inf:
        return ops.amax(ops.abs(x), dim, keepdim=True)
    if p == 1:
        return ops.sum(ops.abs(x), dim, keepdim=True)
    if p <= 0:
        raise UnsupportedError(f"normalize: p must be positive, got {p}")
    with ag.no_grad():
        a = ops.abs(x)
        out = ops.sum(a * a if p == 2 else a ** p, dim, keepdim=True) ** (1.0 / p)
    if needs_grad(x):
        norm = out.detach()

        def grad(g: Tensor) -> tuple[Tensor]:
            safe = ops.where(ops.eq(norm, 0), 1.0, norm)
            scale = g / safe if p == 2 else g / safe ** (p - 1.0)
            core = x if p == 2 else ops.sign(x) * a ** (p - 1.0)
            return (ops.where(ops.eq(norm, 0), 0.0, scale) * core,)

        record(out, "vector_norm", (x,), grad)
    return out


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:  # noqa: A002
    """`x / max(||x||_p, eps)` along `dim`."""
    d = norm_dim(dim, input.ndim, "normalize")
    return input / ops.clamp(_vector_norm(input, p, d), min=eps)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Cosine of the angle between x1 and x2 along `dim` (they broadcast); each norm is clamped to
    at least `eps` without changing its gradient (PyTorch's)."""
    shape = broadcast_shapes(x1._shape, x2._shape, "cosine_similarity")
    a, b = ops.broadcast_to(x1, shape), ops.broadcast_to(x2, shape)
    d = norm_dim(dim, len(shape), "cosine_similarity")

    def clamped(n: Tensor) -> Tensor:
        nd = n.detach()
        return n + (ops.clamp(nd, min=eps) - nd)

    return ops.sum((a / clamped(_vector_norm(a, 2.0, d))) * (b / clamped(_vector_norm(b, 2.0, d))), d)


# --- interpolation ------------------------------------------------------------------------------
def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None, mode: str = "nearest",  # noqa: A002
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                antialias: bool = False) -> Tensor:
    """Resize [N, C, L] or [N, C, H, W]; only `mode="nearest"` is supported."""
    if mode != "nearest":
        raise UnsupportedError(f"interpolate: mode {mode!r} is not supported (only 'nearest')")
    if align_corners is not None:
        raise ValueError("interpolate: align_corners is only valid for the linear modes")
    if input.ndim == 3:
        return upsample_nearest1d(input, size, scale_factor)
    if input.ndim == 4:
        return upsample_nearest2d(input, size, scale_factor)
    raise UnsupportedError(f"interpolate: expected a 3-d or 4-d input, got {fmt_shape(input._shape)}")


_FROM_ATTENTION = ("apply_rotary_emb", "scaled_dot_product_attention")


def __getattr__(name: str) -> Any:
    """Attention names come from `candle.nn.attention`, imported on first use (no import cycle)."""
    if name in _FROM_ATTENTION:
        from . import attention

        return getattr(attention, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "avg_pool1d", "avg_pool2d", "batch_norm", "bilinear", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d",
    "cosine_similarity", "cross_entropy", "dropout", "elu", "embedding", "gelu", "glu", "group_norm", "hardsigmoid",
    "hardswish", "hardtanh", "huber_loss", "interpolate", "kl_div", "l1_loss", "layer_norm", "leaky_relu", "linear",
    "log_softmax", "logsigmoid", "max_pool1d", "max_pool2d", "mish", "mse_loss", "nll_loss", "normalize", "one_hot",
    "pad", "relu", "relu6", "rms_norm", "sigmoid", "silu", "silu_mul",
    "smooth_l1_loss", "softmax", "softplus", "softsign", "tanh", "upsample_nearest1d", "upsample_nearest2d",
]
if find_spec(f"{__package__}.attention") is not None:  # once candle.nn.attention exists
    __all__ += _FROM_ATTENTION

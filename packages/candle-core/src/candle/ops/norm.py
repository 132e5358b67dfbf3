"""Normalisation ops and the SwiGLU gate: `rms_norm`, `layer_norm`, `group_norm`, `batch_norm`,
`silu_mul`.

`rms_norm` and `layer_norm` (over the last dim) and `silu_mul` run the backend's fused kernels of
the same names when it has them (see `backend.FUSED_KERNELS`), else the compositions below, which
are the reference those kernels are tested against. Their forward runs without recording and an
explicit backward rule, written with core ops, is attached, so gradients never depend on a fused
kernel. float16/bfloat16 inputs are normalised in float32 (what PyTorch does) and rounded once.

`layer_norm` over several trailing dims flattens them and runs the last-dim op; `group_norm`
runs it on [N, groups, -1] and applies the per-channel affine after; `batch_norm` standardises
over every dim but the channel dim and updates the running statistics in place when training.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import autograd as ag
from ..dtype import DType, bfloat16, float16, float32, float64
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor
from ._base import broadcast_shapes, fused, like, make, needs_grad, numel, record, same_device
from .elementwise import cast, rsqrt, sigmoid, silu
from .reduce import mean, sum
from .shape import contiguous, expand, reshape

__all__ = ["batch_norm", "finfo_eps", "group_norm", "layer_norm", "rms_norm", "silu_mul"]

_HALF = (float16, bfloat16)
_EPS = {float16: 2.0 ** -10, bfloat16: 2.0 ** -7, float32: 2.0 ** -23, float64: 2.0 ** -52}


def finfo_eps(dtype: DType) -> float:
    """The machine epsilon of a float dtype (`torch.finfo(dtype).eps`)."""
    if dtype not in _EPS:
        raise DTypeError(f"finfo_eps: expected a float dtype, got {dtype.name}")
    return _EPS[dtype]


# --- argument checks ----------------------------------------------------------------------------
def _check_tensors(op: str, x: Any, **others: Tensor | None) -> None:
    """x and the given optional tensors: Tensors of one float dtype on one device."""
    if not isinstance(x, Tensor):
        raise DTypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if not x._dtype.is_floating_point:
        raise DTypeError(f"{op}: expected a floating-point input, got dtype {x._dtype.name}")
    named = [(k, t) for k, t in others.items() if t is not None]
    for k, t in named:
        if not isinstance(t, Tensor):
            raise DTypeError(f"{op}: {k} must be a Tensor or None, got {type(t).__name__}")
        if t._dtype is not x._dtype:
            raise DTypeError(f"dtype mismatch in {op}: input {x._dtype.name}, {k} {t._dtype.name}")
    same_device(op, x, *(t for _, t in named))


def _check_vector(op: str, name: str, t: Tensor | None, n: int) -> None:
    if t is not None and t._shape != (n,):
        raise ShapeError(f"shape mismatch in {op}: {name} {fmt_shape(t._shape)} must have shape [{n}]")


def _up(t: Tensor) -> Tensor:
    """float16/bfloat16 as float32 (the compute dtype), other dtypes unchanged."""
    return cast(t, float32) if t._dtype in _HALF else t


def _rows_sum(t: Tensor) -> Tensor:
    """Sum over every dim but the last (the gradient of a weight broadcast over rows)."""
    return sum(reshape(t, (-1, t._shape[-1])), 0) if t.ndim > 1 else t


# --- rms_norm -----------------------------------------------------------------------------------
def rms_norm_composed(x: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """The reference: `x * rsqrt(mean(x^2, -1) + eps) * weight`, in float32 for half dtypes."""
    xf = _up(x)
    y = xf * rsqrt(mean(xf * xf, -1, keepdim=True) + eps)
    if weight is not None:
        y = y * _up(weight)
    return cast(y, x._dtype)


def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float | None = None) -> Tensor:
    """RMS normalisation over the last dim, times `weight` ([D] or None); `eps` defaults to the
    dtype's machine epsilon (like `torch.nn.functional.rms_norm`)."""
    if not (isinstance(x, Tensor) and x._dtype.is_floating_point and (weight is None or (
            isinstance(weight, Tensor) and weight._dtype is x._dtype and weight._device is x._device))):
        _check_tensors("rms_norm", x, weight=weight)
    shape = x._shape
    if not shape:
        raise ShapeError("rms_norm: expected an input with at least one dim, got a 0-d tensor")
    if weight is not None and weight._shape != shape[-1:]:
        _check_vector("rms_norm", "weight", weight, shape[-1])
    eps = finfo_eps(x._dtype) if eps is None else float(eps)
    be = x._backend
    kernel = fused(be, "rms_norm")
    if kernel is None:
        with ag.no_grad():
            out = rms_norm_composed(x, weight, eps)
    else:  # the kernel records nothing: no grad-mode switch needed
        wd = None if weight is None else be.contiguous(weight._data, weight._shape)
        out = make(kernel(be.contiguous(x._data, shape), wd, shape, eps, x._dtype), shape, x._dtype, x._device, be)
    if needs_grad(x, weight):
        def grad(g: Tensor) -> tuple[Tensor | None, ...]:
            xf, gf = _up(x), _up(g)
            r = rsqrt(mean(xf * xf, -1, keepdim=True) + eps)
            n = xf * r
            gn = gf * _up(weight) if weight is not None else gf
            dx = cast(r * (gn - n * mean(gn * n, -1, keepdim=True)), x._dtype) if x._requires_grad else None
            if weight is None:
                return (dx,)
            return dx, (cast(_rows_sum(gf * n), weight._dtype) if weight._requires_grad else None)

        record(out, "rms_norm", (x,) if weight is None else (x, weight), grad)
    return out


# --- layer_norm ---------------------------------------------------------------------------------
def layer_norm_composed(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    """The reference: `(x - mean) * rsqrt(var + eps) * weight + bias` over the last dim (biased
    variance), in float32 for half dtypes."""
    xf = _up(x)
    c = xf - mean(xf, -1, keepdim=True)
    y = c * rsqrt(mean(c * c, -1, keepdim=True) + eps)
    if weight is not None:
        y = y * _up(weight)
    if bias is not None:
        y = y + _up(bias)
    return cast(y, x._dtype)


def _layer_norm_last(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> Tensor:
    kernel = fused(x._backend, "layer_norm")
    with ag.no_grad():
        if kernel is None:
            out = layer_norm_composed(x, weight, bias, eps)
        else:
            xc = contiguous(x)
            wd = None if weight is None else contiguous(weight)._data
            bd = None if bias is None else contiguous(bias)._data
            out = like(x, kernel(xc._data, wd, bd, x._shape, eps, x._dtype), x._shape)
    inputs = tuple(t for t in (x, weight, bias) if t is not None)
    if needs_grad(*inputs):
        def grad(g: Tensor) -> tuple[Tensor | None, ...]:
            xf, gf = _up(x), _up(g)
            c = xf - mean(xf, -1, keepdim=True)
            r = rsqrt(mean(c * c, -1, keepdim=True) + eps)
            xhat = c * r
            gx = gf * _up(weight) if weight is not None else gf
            grads: list[Tensor | None] = [None]
            if x._requires_grad:
                dx = r * (gx - mean(gx, -1, keepdim=True) - xhat * mean(gx * xhat, -1, keepdim=True))
                grads[0] = cast(dx, x._dtype)
            if weight is not None:
                grads.append(cast(_rows_sum(gf * xhat), weight._dtype) if weight._requires_grad else None)
            if bias is not None:
                grads.append(cast(_rows_sum(gf), bias._dtype) if bias._requires_grad else None)
            return tuple(grads)

        record(out, "layer_norm", inputs, grad)
    return out


def _trailing(op: str, x: Tensor, normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    shape = (int(normalized_shape),) if isinstance(normalized_shape, int) else tuple(int(s) for s in normalized_shape)
    if not shape or x._shape[x.ndim - len(shape):] != shape or len(shape) > x.ndim:
        raise ShapeError(f"shape mismatch in {op}: normalized_shape {fmt_shape(shape)} must match the trailing "
                         f"dims of the input {fmt_shape(x._shape)}")
    return shape


def _flat_param(op: str, name: str, t: Tensor | None, shape: tuple[int, ...]) -> Tensor | None:
    if t is None:
        return None
    if t._shape != shape:
        raise ShapeError(f"shape mismatch in {op}: {name} {fmt_shape(t._shape)} must have the normalized shape "
                         f"{fmt_shape(shape)}")
    return t if len(shape) == 1 else reshape(t, (numel(shape),))


def layer_norm(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the trailing `normalized_shape` dims (PyTorch's signature)."""
    _check_tensors("layer_norm", x, weight=weight, bias=bias)
    shape = _trailing("layer_norm", x, normalized_shape)
    w = _flat_param("layer_norm", "weight", weight, shape)
    b = _flat_param("layer_norm", "bias", bias, shape)
    if len(shape) == 1:
        return _layer_norm_last(x, w, b, float(eps))
    lead = x._shape[:x.ndim - len(shape)]
    out = _layer_norm_last(reshape(x, lead + (numel(shape),)), w, b, float(eps))
    return reshape(out, x._shape)


def rms_norm_nd(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
                eps: float | None = None) -> Tensor:
    """RMS normalisation over the trailing `normalized_shape` dims (`torch.nn.functional.rms_norm`)."""
    _check_tensors("rms_norm", x, weight=weight)
    shape = _trailing("rms_norm", x, normalized_shape)
    w = _flat_param("rms_norm", "weight", weight, shape)
    if len(shape) == 1:
        return rms_norm(x, w, eps)
    lead = x._shape[:x.ndim - len(shape)]
    return reshape(rms_norm(reshape(x, lead + (numel(shape),)), w, eps), x._shape)


# --- group_norm ---------------------------------------------------------------------------------
def _channel_view(t: Tensor, ndim: int) -> Tensor:
    """A per-channel vector [C] as [1, C, 1, ...] for an input of `ndim` dims."""
    return reshape(t, (1, t._shape[0]) + (1,) * (ndim - 2))


def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Group normalisation of [N, C, *] over groups of C / num_groups channels, then a per-channel affine."""
    _check_tensors("group_norm", x, weight=weight, bias=bias)
    if x.ndim < 2:
        raise ShapeError(f"group_norm: expected an input [N, C, *] of at least 2 dims, got {fmt_shape(x._shape)}")
    c = x._shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or c % num_groups:
        raise ShapeError(f"group_norm: num_groups must be a positive int dividing the {c} channels of input "
                         f"{fmt_shape(x._shape)}, got {num_groups!r}")
    _check_vector("group_norm", "weight", weight, c)
    _check_vector("group_norm", "bias", bias, c)
    n = x._shape[0]
    y = reshape(_layer_norm_last(reshape(x, (n, num_groups, -1)), None, None, float(eps)), x._shape)
    if weight is not None:
        y = y * _channel_view(weight, x.ndim)
    if bias is not None:
        y = y + _channel_view(bias, x.ndim)
    return y


# --- batch_norm ---------------------------------------------------------------------------------
def _standardize(x: Tensor, dims: tuple[int, ...], eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(x - mean) * rsqrt(var + eps) over `dims` with an explicit backward; also the mean and the
    biased variance (float32 for half inputs, without grad)."""
    with ag.no_grad():
        xf = _up(x)
        mu = mean(xf, dims, keepdim=True)
        c = xf - mu
        var = mean(c * c, dims, keepdim=True)
        r = rsqrt(var + eps)
        xhat = c * r
        out = cast(xhat, x._dtype)
    if needs_grad(x):
        def grad(g: Tensor) -> tuple[Tensor]:
            gf = _up(g)
            dx = r * (gf - mean(gf, dims, keepdim=True) - xhat * mean(gf * xhat, dims, keepdim=True))
            return (cast(dx, x._dtype),)

        record(out, "batch_norm", (x,), grad)
    return out, mu, var


def batch_norm(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None = None,
               bias: Tensor | None = None, training: bool = False, momentum: float = 0.1,
               eps: float = 1e-5) -> Tensor:
    """Batch normalisation of [N, C, *] per channel (PyTorch's `F.batch_norm`).

    Training uses the batch statistics and, when running stats are given, updates them in place:
    `running = (1 - momentum) * running + momentum * stat` with the unbiased batch variance.
    Otherwise the running statistics normalise.
    """
    _check_tensors("batch_norm", x, weight=weight, bias=bias)
    if x.ndim < 2:
        raise ShapeError(f"batch_norm: expected an input [N, C, *] of at least 2 dims, got {fmt_shape(x._shape)}")
    c = x._shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        _check_vector("batch_norm", name, t, c)
    dims = (0,) + tuple(range(2, x.ndim))
    count = numel(x._shape) // c if c else 0
    if training:
        if count <= 1:
            raise ShapeError(f"batch_norm: expected more than 1 value per channel when training, got input "
                             f"{fmt_shape(x._shape)}")
        y, mu, var = _standardize(x, dims, float(eps))
        with ag.no_grad():
            for run, stat in ((running_mean, mu), (running_var, var * (count / (count - 1)))):
                if run is not None:
                    stat = cast(reshape(stat, (c,)), run._dtype)
                    run.copy_(run * (1.0 - momentum) + stat * momentum)
    else:
        if running_mean is None or running_var is None:
            raise ShapeError("batch_norm: running_mean and running_var are required when not training")
        rm = _channel_view(cast(running_mean.detach(), x._dtype), x.ndim)
        rv = _channel_view(cast(running_var.detach(), x._dtype), x.ndim)
        y = (x - rm) * rsqrt(rv + eps)
    if weight is not None:
        y = y * _channel_view(weight, x.ndim)
    if bias is not None:
        y = y + _channel_view(bias, x.ndim)
    return y


# --- silu_mul -----------------------------------------------------------------------------------
def silu_mul_composed(a: Tensor, b: Tensor) -> Tensor:
    """The reference: `silu(a) * b`."""
    return silu(a) * b


def _silu_mul_halves(x: Tensor) -> Tensor:
    """`silu(x[..., :n]) * x[..., n:]` for x [..., 2n] (the fused gate/up projection's output)."""
    if not isinstance(x, Tensor):
        raise DTypeError(f"silu_mul: input must be a Tensor, got {type(x).__name__}")
    shape = x._shape
    if not shape or shape[-1] % 2:
        raise ShapeError(f"silu_mul: with one input, its last dim must be even (the gate and up halves), got "
                         f"shape {fmt_shape(shape)}")
    n = shape[-1] // 2
    be = x._backend
    kernel = fused(be, "silu_mul")
    if kernel is None or needs_grad(x) or not x._dtype.is_floating_point:  # views record their gradients
        from .shape import narrow

        return silu_mul(narrow(x, -1, 0, n), narrow(x, -1, n, n))
    half = shape[:-1] + (n,)
    full = [(0, s, 1) for s in shape]
    lo, hi = list(full), list(full)
    lo[-1], hi[-1] = (0, n, 1), (n, 2 * n, 1)
    a, b = be.slice(x._data, shape, lo), be.slice(x._data, shape, hi)
    return make(kernel(be.contiguous(a, half), be.contiguous(b, half), half, x._dtype), half, x._dtype, x._device,
                be)


def silu_mul(a: Tensor, b: Tensor | None = None) -> Tensor:
    """`silu(a) * b`, the SwiGLU gate, in one kernel where the backend has it (a and b broadcast).

    With `b` None, `a`'s last dim holds the gate and up halves: `silu(a[..., :n]) * a[..., n:]`, the
    output of a fused gate/up projection gated without making views first."""
    if b is None:
        return _silu_mul_halves(a)
    if not (isinstance(a, Tensor) and isinstance(b, Tensor) and a._dtype is b._dtype and a._device is b._device
            and a._dtype.is_floating_point):
        _check_tensors("silu_mul", a, b=b)
    shape = a._shape if a._shape == b._shape else broadcast_shapes(a._shape, b._shape, "silu_mul")
    be = a._backend
    kernel = fused(be, "silu_mul")
    if kernel is None:
        with ag.no_grad():
            out = silu_mul_composed(a, b)
    else:
        if a._shape == shape and b._shape == shape:
            ad, bd = be.contiguous(a._data, shape), be.contiguous(b._data, shape)
        else:
            with ag.no_grad():
                ad = contiguous(a if a._shape == shape else expand(a, shape))._data
                bd = contiguous(b if b._shape == shape else expand(b, shape))._data
        out = make(kernel(ad, bd, shape, a._dtype), shape, a._dtype, a._device, be)
    if needs_grad(a, b):
        from ._base import unbroadcast

        def grad(g: Tensor) -> tuple[Tensor | None, Tensor | None]:
            s = sigmoid(a)
            da = unbroadcast(g * b * s * (1.0 + a * (1.0 - s)), a._shape) if a._requires_grad else None
            db = unbroadcast(g * (a * s), b._shape) if b._requires_grad else None
            return da, db

        record(out, "silu_mul", (a, b), grad)
    return out

"""Softmax and log-softmax: fused `*_last_dim` kernels when the backend has them, else the
composition below, which is the reference those kernels are tested against."""

from __future__ import annotations

from ..dtype import DType, as_dtype
from ..tensor import Tensor
from ._base import fused, like, needs_grad, norm_dim, record
from .elementwise import cast, exp, log
from .reduce import amax, sum
from .shape import transpose


def _prepare(x: Tensor, dtype: DType | str | None) -> Tensor:
    if dtype is not None:
        x = cast(x, as_dtype(dtype))
    if not x._dtype.is_floating_point:
        x = cast(x, as_dtype(float))
    return x


def softmax_composed(x: Tensor, dim: int) -> Tensor:
    e = exp(x - amax(x, dim, keepdim=True))
    return e / sum(e, dim, keepdim=True)


def log_softmax_composed(x: Tensor, dim: int) -> Tensor:
    s = x - amax(x, dim, keepdim=True)
    return s - log(sum(exp(s), dim, keepdim=True))


def _run(name: str, x: Tensor, d: int) -> Tensor:
    """The fused last-dim kernel on x (moving `d` last if needed), or the composition."""
    from .. import autograd as ag

    kernel = fused(x._backend, f"{name}_last_dim")
    with ag.no_grad():
        if kernel is None:
            return (softmax_composed if name == "softmax" else log_softmax_composed)(x.detach(), d)
        last = x.ndim - 1
        y = x.detach() if d == last else transpose(x.detach(), d, last)
        out = like(y, kernel(y._data, y._shape, y._dtype), y._shape)
        return out if d == last else transpose(out, d, last)


def softmax(x: Tensor, dim: int, dtype: DType | str | None = None) -> Tensor:
    """`exp(x) / sum(exp(x))` along `dim`."""
    x = _prepare(x, dtype)
    if x.ndim == 0:
        return exp(x - x)
    d = norm_dim(dim, x.ndim, "softmax")
    out = _run("softmax", x, d)
    if needs_grad(x):
        def grad(g: Tensor) -> tuple[Tensor]:
            y = out.detach()
            return (y * (g - sum(g * y, d, keepdim=True)),)

        record(out, "softmax", (x,), grad)
    return out


def log_softmax(x: Tensor, dim: int, dtype: DType | str | None = None) -> Tensor:
    """`x - logsumexp(x)` along `dim`."""
    x = _prepare(x, dtype)
    if x.ndim == 0:
        return x - x
    d = norm_dim(dim, x.ndim, "log_softmax")
    out = _run("log_softmax", x, d)
    if needs_grad(x):
        def grad(g: Tensor) -> tuple[Tensor]:
            return (g - exp(out.detach()) * sum(g, d, keepdim=True),)

        record(out, "log_softmax", (x,), grad)
    return out

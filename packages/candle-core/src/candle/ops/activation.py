"""Softmax and log-softmax: fused `*_last_dim` kernels when the backend has them, else the
composition below, which is the reference those kernels are tested against."""

from __future__ import annotations

from ..autograd import no_grad
from ..dtype import DType, as_dtype
from ..tensor import Tensor
from ._base import fused, make, needs_grad, norm_dim, record
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
    """The fused last-dim kernel on x (moving `d` last if needed), or the composition (not recorded)."""
    kernel = fused(x._backend, f"{name}_last_dim")
    last = len(x._shape) - 1
    if kernel is not None and d == last:  # the common case, kept short: it is on every attention's path
        return make(kernel(x._data, x._shape, x._dtype), x._shape, x._dtype, x._device, x._backend)
    y = x.detach()
    if kernel is None:
        with no_grad():
            return (softmax_composed if name == "softmax" else log_softmax_composed)(y, d)
    y = transpose(y, d, last)
    out = make(kernel(y._data, y._shape, y._dtype), y._shape, y._dtype, y._device, y._backend)
    return transpose(out, d, last)


def softmax(x: Tensor, dim: int, dtype: DType | str | None = None) -> Tensor:
    """`exp(x) / sum(exp(x))` along `dim`."""
    x = _prepare(x, dtype)
    if x.ndim == 0:
        return exp(x - x)
    d = norm_dim(dim, x.ndim, "softmax")
    out = _run("softmax", x, d)
    if needs_grad(x):
        y = out.detach()

        def grad(g: Tensor) -> tuple[Tensor]:
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
        y = out.detach()

        def grad(g: Tensor) -> tuple[Tensor]:
            return (g - exp(y) * sum(g, d, keepdim=True),)

        record(out, "log_softmax", (x,), grad)
    return out

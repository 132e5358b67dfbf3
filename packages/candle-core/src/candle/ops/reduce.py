"""Reductions over one or several dims (sum, mean, max/min, argmax/argmin, var, std, logsumexp,
prod, all/any) and cumulative sums, with their gradient rules."""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence
from typing import Any

from ..dtype import DType, as_dtype, int64, uint8
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor
from ._base import fused, like, needs_grad, norm_dim, norm_dims, numel, record
from .elementwise import cast, eq, exp, log, ne, sqrt, where

Dims = int | Sequence[int] | None
ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def _reduced_shape(shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> tuple[int, ...]:
    if keepdim:
        return tuple(1 if i in dims else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in dims)


def _expand_back(g: Tensor, shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> Tensor:
    """Broadcast a reduced gradient back to the input shape."""
    from .shape import expand, reshape

    if not keepdim:
        g = reshape(g, _reduced_shape(shape, dims, True))
    return expand(g, shape)


def _reduce(op: str, x: Tensor, dim: Dims, keepdim: bool) -> tuple[Tensor, tuple[int, ...]]:
    if dim is None:
        dims = tuple(range(len(x._shape)))
        shape = (1,) * len(dims) if keepdim else ()
    else:
        dims = norm_dims(dim, x.ndim, op)
        shape = _reduced_shape(x._shape, dims, keepdim)
    if op in ("max", "min"):
        for d in dims:
            if x._shape[d] == 0:
                raise ShapeError(f"{op}: cannot reduce over the empty dim {d} of shape {fmt_shape(x._shape)}")
    if not dims:  # a 0-d tensor
        return x, dims
    data = x._backend.reduce(op, x._data, x._shape, dims, keepdim, x._dtype)
    return like(x, data, shape), dims


def sum(x: Tensor, dim: Dims = None, keepdim: bool = False, dtype: DType | str | None = None) -> Tensor:  # noqa: A001
    """Sum over `dim` (all dims when None); integer inputs sum to int64 like PyTorch."""
    if dtype is not None:
        x = cast(x, as_dtype(dtype))
    elif not x._dtype.is_floating_point and x._dtype is not int64:
        x = cast(x, int64)
    out, dims = _reduce("sum", x, dim, keepdim)
    if needs_grad(x) and out is not x:
        record(out, "sum", (x,), lambda g: (_expand_back(g, x._shape, dims, keepdim),))
    return out


def mean(x: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    """Mean over `dim`; float tensors only, like PyTorch."""
    if not x._dtype.is_floating_point:
        raise DTypeError(f"mean: expected a float tensor, got dtype {x._dtype.name} (cast it first)")
    dims = norm_dims(dim, x.ndim, "mean")
    n = numel(tuple(x._shape[d] for d in dims))
    return sum(x, dims, keepdim) * (1.0 / n) if n else sum(x, dims, keepdim) / 0.0


def prod(x: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    """Product over `dim` (no gradient rule)."""
    if not x._dtype.is_floating_point and x._dtype is not int64:
        x = cast(x, int64)
    if needs_grad(x):
        raise DTypeError("prod has no gradient rule in candle; use exp(log(x).sum()) for positive x")
    return _reduce("prod", x, dim, keepdim)[0]


def _amax_like(op: str, x: Tensor, dim: Dims, keepdim: bool) -> Tensor:
    out, dims = _reduce(op, x, dim, keepdim)
    if needs_grad(x) and out is not x:
        res = out.detach()

        def grad(g: Tensor) -> tuple[Tensor]:
            y = _expand_back(res, x._shape, dims, keepdim)
            mask = cast(eq(x, y), g._dtype)
            count = _expand_back(sum(mask, dims, keepdim), x._shape, dims, keepdim)
            return (_expand_back(g, x._shape, dims, keepdim) * mask / count,)

        record(out, op, (x,), grad)
    return out


def amax(x: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    """Maximum over `dim`; the gradient is shared evenly between ties (PyTorch's amax)."""
    return _amax_like("max", x, dim, keepdim)


def amin(x: Tensor, dim: Dims = None, keepdim: bool = False) -> Tensor:
    return _amax_like("min", x, dim, keepdim)


def _max_min(op: str, x: Tensor, dim: Any, keepdim: bool) -> Any:
    if isinstance(dim, Tensor):
        from .elementwise import maximum, minimum

        return maximum(x, dim) if op == "max" else minimum(x, dim)
    if dim is None:
        return _amax_like(op, x, None, False)
    d = norm_dim(dim, x.ndim, op)
    idx = _arg(f"arg{op}", x, d, True)
    from .indexing import gather
    from .shape import squeeze

    values = gather(x, d, idx) if x.ndim else x
    if not keepdim and x.ndim:
        values, idx = squeeze(values, d), squeeze(idx, d)
    return ValuesIndices(values, idx)


def max(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """`x.max()` is the overall maximum; `x.max(dim)` gives (values, indices); `x.max(t)` is maximum."""
    return _max_min("max", x, dim, keepdim)


def min(x: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    return _max_min("min", x, dim, keepdim)


def _arg(op: str, x: Tensor, dim: int | None, keepdim: bool) -> Tensor:
    if dim is None:
        from .shape import reshape

        flat = reshape(x, (-1,))
        out = _arg(op, flat, 0, False)
        return reshape(out, (1,) * x.ndim) if keepdim else out
    d = norm_dim(dim, x.ndim, op)
    if x.ndim == 0:
        return like(x, x._backend.full((), 0, int64), (), int64)
    if x._shape[d] == 0:
        raise ShapeError(f"{op}: cannot reduce over the empty dim {d} of shape {fmt_shape(x._shape)}")
    shape = _reduced_shape(x._shape, (d,), keepdim)
    return like(x, x._backend.arg_reduce(op, x._data, x._shape, d, keepdim, x._dtype), shape, int64)


def argmax(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    """Index of the maximum (the first on ties) as int64; over the flattened tensor when dim is None."""
    return _arg("argmax", x, dim, keepdim)


def argmin(x: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return _arg("argmin", x, dim, keepdim)


def var(x: Tensor, dim: Dims = None, keepdim: bool = False, *, correction: int = 1,
        unbiased: bool | None = None) -> Tensor:
    """Variance with Bessel's `correction` (1 by default, like PyTorch)."""
    if unbiased is not None:
        correction = int(unbiased)
    dims = norm_dims(dim, x.ndim, "var")
    n = numel(tuple(x._shape[d] for d in dims))
    c = x - mean(x, dims, keepdim=True)
    return sum(c * c, dims, keepdim) / float(n - correction) if n - correction > 0 else sum(c * c, dims, keepdim) / 0.0


def std(x: Tensor, dim: Dims = None, keepdim: bool = False, *, correction: int = 1,
        unbiased: bool | None = None) -> Tensor:
    return sqrt(var(x, dim, keepdim, correction=correction, unbiased=unbiased))


def logsumexp(x: Tensor, dim: Dims, keepdim: bool = False) -> Tensor:
    """`log(sum(exp(x)))` over `dim`, computed stably."""
    if not x._dtype.is_floating_point:
        x = cast(x, as_dtype(float))
    dims = norm_dims(dim, x.ndim, "logsumexp")
    m = amax(x.detach(), dims, keepdim=True)
    m = where(ne(m, float("inf")) * ne(m, float("-inf")), m, 0.0)
    out = log(sum(exp(x - m), dims, keepdim=True)) + m
    if not keepdim:
        from .shape import squeeze

        out = squeeze(out, dims)
    return out


def cumsum(x: Tensor, dim: int, dtype: DType | str | None = None) -> Tensor:
    """Inclusive cumulative sum along `dim` (integers accumulate in int64)."""
    if dtype is not None:
        x = cast(x, as_dtype(dtype))
    elif not x._dtype.is_floating_point:
        x = cast(x, int64)
    d = norm_dim(dim, x.ndim, "cumsum")
    if x.ndim == 0:
        return x
    kernel = fused(x._backend, "cumsum")
    if kernel is not None:
        out = like(x, kernel(x._data, x._shape, d, x._dtype), x._shape)
    else:
        out = _cumsum_composed(x, d)
    if needs_grad(x):
        from .shape import flip

        record(out, "cumsum", (x,), lambda g: (flip(cumsum(flip(g, d), d), d),))
    return out


def _cumsum_composed(x: Tensor, d: int) -> Tensor:
    """The reference: a matmul with an upper-triangular matrix of ones."""
    from ..autograd import no_grad
    from .creation import ones
    from .indexing import triu
    from .linalg import matmul
    from .shape import transpose

    n = x._shape[d]
    tri = triu(ones((n, n), dtype=x._dtype, device=x._device))
    with no_grad():
        return transpose(matmul(transpose(x, d, -1), tri), d, -1)


def all(x: Tensor) -> Tensor:  # noqa: A001
    """1 (uint8) if every element is non-zero."""
    return _reduce("min", ne(x, 0), None, False)[0] if x.numel() else like(x, x._backend.full((), 1, uint8), (), uint8)


def any(x: Tensor) -> Tensor:  # noqa: A001
    """1 (uint8) if some element is non-zero."""
    return _reduce("max", ne(x, 0), None, False)[0] if x.numel() else like(x, x._backend.full((), 0, uint8), (), uint8)

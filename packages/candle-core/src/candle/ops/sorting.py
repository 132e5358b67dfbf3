"""Sorting: `sort`, `argsort`, `topk` (values are differentiable through a gather)."""

from __future__ import annotations

from collections import namedtuple

from ..dtype import int64
from ..errors import ShapeError, fmt_shape
from ..tensor import Tensor
from ._base import like, needs_grad, norm_dim
from .indexing import gather
from .shape import narrow

ValuesIndices = namedtuple("ValuesIndices", ["values", "indices"])


def sort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = True) -> ValuesIndices:
    """Sort along `dim`: (values, int64 indices); equal elements keep their order."""
    if x.ndim == 0:
        return ValuesIndices(x, like(x, x._backend.full((), 0, int64), (), int64))
    d = norm_dim(dim, x.ndim, "sort")
    vals, idx = x._backend.sort(x._data, x._shape, d, bool(descending), x._dtype)
    indices = like(x, idx, x._shape, int64)
    values = gather(x, d, indices) if needs_grad(x) else like(x, vals, x._shape)
    return ValuesIndices(values, indices)


def argsort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = True) -> Tensor:
    return sort(x, dim, descending).indices


def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> ValuesIndices:  # noqa: A002
    """The `k` largest (or smallest) elements along `dim`, in order."""
    d = norm_dim(dim, x.ndim, "topk")
    n = x._shape[d] if x.ndim else 1
    if not 0 <= k <= n:
        raise ShapeError(f"topk: k={k} out of range for dim {d} of size {n} (shape {fmt_shape(x._shape)})")
    values, indices = sort(x, d, descending=largest)
    if x.ndim == 0:
        return ValuesIndices(values, indices)
    return ValuesIndices(narrow(values, d, 0, k), narrow(indices, d, 0, k))

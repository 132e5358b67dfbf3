"""Indexing ops: cat/stack, index_select, gather, scatter(_add), index_add, tril/triu, in-place
copies, and `__getitem__`/`__setitem__` with ints, slices, None, Ellipsis and integer tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import autograd as ag
from ..dtype import int64, promote, uint8
from ..errors import DimError, DTypeError, GradError, ShapeError, fmt_shape
from ..tensor import Tensor
from ._base import (
    broadcast_shapes,
    check_index,
    like,
    needs_grad,
    norm_dim,
    numel,
    record,
    same_device,
    scalar_tensor,
    zeros_of,
)
from .elementwise import add, cast, lt, mul, where
from .shape import expand, flatten, narrow, permute, reshape, slice_view, sliced_view, unsqueeze


def _as_i64(index: Tensor) -> Tensor:
    return index if index._dtype is int64 else cast(index, int64)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Concatenate along an existing dim; all other dims must match."""
    ts = list(tensors)
    if not ts:
        raise ShapeError("cat: expected a non-empty sequence of tensors")
    ref = ts[0]
    if not isinstance(ref, Tensor):
        raise DTypeError(f"cat: expected Tensors, got {type(ref).__name__}")
    shape0 = ref._shape
    d = norm_dim(dim, len(shape0), "cat")
    rest = shape0[:d] + shape0[d + 1:]
    dtype, dev, total = ref._dtype, ref._device, 0
    for t in ts:
        if not isinstance(t, Tensor):
            raise DTypeError(f"cat: expected Tensors, got {type(t).__name__}")
        s = t._shape
        if len(s) != len(shape0) or s[:d] + s[d + 1:] != rest:
            shapes = ", ".join(fmt_shape(x._shape) for x in ts)
            raise ShapeError(f"shape mismatch in cat along dim {d}: {shapes}")
        if t._device is not dev:
            same_device("cat", *ts)
        if t._dtype is not dtype:
            dtype = promote(dtype, t._dtype)
        total += s[d]
    if len(ts) == 1:
        return ts[0]
    ts = [cast(t, dtype) for t in ts] if any(t._dtype is not dtype for t in ts) else ts
    shape = shape0[:d] + (total,) + shape0[d + 1:]
    out = like(ref, ref._backend.cat([t._data for t in ts], [t._shape for t in ts], d, dtype), shape, dtype)
    if needs_grad(*ts):
        sizes = [t._shape[d] for t in ts]

        def grad(g: Tensor) -> list[Tensor]:
            out, start = [], 0
            for s in sizes:
                out.append(narrow(g, d, start, s))
                start += s
            return out

        record(out, "cat", tuple(ts), grad)
    return out


concat = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    """Join tensors of one shape along a new dim."""
    ts = list(tensors)
    if not ts:
        raise ShapeError("stack: expected a non-empty sequence of tensors")
    for t in ts[1:]:
        if t._shape != ts[0]._shape:
            shapes = ", ".join(fmt_shape(x._shape) for x in ts)
            raise ShapeError(f"shape mismatch in stack: {shapes}")
    d = norm_dim(dim, ts[0].ndim + 1, "stack")
    return cat([unsqueeze(t, d) for t in ts], d)


def index_select(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """Slices of `x` at positions `index` (1-d) along `dim`."""
    index = check_index("index_select", index)
    same_device("index_select", x, index)
    d = norm_dim(dim, x.ndim, "index_select")
    if index.ndim > 1:
        raise ShapeError(f"index_select: index must be 1-d, got shape {fmt_shape(index._shape)}")
    index = _as_i64(reshape(index, (-1,)))
    n = index._shape[0]
    if x.ndim == 0:
        raise ShapeError("index_select: cannot index a 0-d tensor")
    shape = x._shape[:d] + (n,) + x._shape[d + 1:]
    out = like(x, x._backend.index_select(x._data, x._shape, index._data, n, d, x._dtype), shape)
    if needs_grad(x):
        record(out, "index_select", (x,), lambda g: (index_add(zeros_of(g, x._shape), d, index, g),))
    return out


def _check_gather_shapes(op: str, x: Tensor, d: int, index: Tensor, src: Tensor | None = None) -> None:
    if index.ndim != x.ndim:
        raise ShapeError(f"{op}: index {fmt_shape(index._shape)} must have as many dims as input "
                         f"{fmt_shape(x._shape)}")
    for i, (si, sx) in enumerate(zip(index._shape, x._shape)):
        if i != d and si > sx:
            raise ShapeError(f"{op}: index {fmt_shape(index._shape)} is larger than input {fmt_shape(x._shape)} "
                             f"in dim {i}")
    if src is not None and src._shape != index._shape:
        raise ShapeError(f"{op}: src {fmt_shape(src._shape)} must have the shape of index {fmt_shape(index._shape)}")


def gather(x: Tensor, dim: int, index: Tensor) -> Tensor:
    """`out[i][j] = x[i][index[i][j]]` along `dim` (PyTorch's gather)."""
    index = _as_i64(check_index("gather", index))
    same_device("gather", x, index)
    d = norm_dim(dim, x.ndim, "gather")
    if x.ndim == 0:
        x = reshape(x, (1,))
    _check_gather_shapes("gather", x, d, index)
    out = like(x, x._backend.gather(x._data, x._shape, d, index._data, index._shape, x._dtype), index._shape)
    if needs_grad(x):
        record(out, "gather", (x,), lambda g: (scatter_add(zeros_of(g, x._shape), d, index, g),))
    return out


def _scatter(op: str, x: Tensor, dim: int, index: Tensor, src: Any, reduce: str | None) -> Tensor:
    index = _as_i64(check_index(op, index))
    same_device(op, x, index)
    d = norm_dim(dim, x.ndim, op)
    if not isinstance(src, Tensor):
        src = expand(scalar_tensor(x, src, x._dtype), index._shape)
    same_device(op, x, src)
    src = cast(src, x._dtype)
    if src._shape != index._shape and src.ndim == index.ndim and all(
            a >= b for a, b in zip(src._shape, index._shape)):
        src = slice_view(src, [(0, s, 1) for s in index._shape])
    _check_gather_shapes(op, x, d, index, src)
    data = x._backend.scatter(x._data, x._shape, d, index._data, index._shape, src._data, reduce, x._dtype)
    out = like(x, data, x._shape)
    if needs_grad(x, src):
        def grad(g: Tensor) -> tuple[Tensor, Tensor]:
            gx = g if reduce == "add" else _scatter(op, g, d, index, 0, None)
            return gx, gather(g, d, index)

        record(out, op, (x, src), grad)
    return out


def scatter(x: Tensor, dim: int, index: Tensor, src: Any) -> Tensor:
    """A copy of `x` with `src` (a tensor or scalar) written at `index` along `dim`."""
    return _scatter("scatter", x, dim, index, src, None)


def scatter_add(x: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """A copy of `x` with `src` added at `index` along `dim` (duplicates accumulate)."""
    return _scatter("scatter_add", x, dim, index, src, "add")


def index_add(x: Tensor, dim: int, index: Tensor, source: Tensor, alpha: float = 1) -> Tensor:
    """A copy of `x` with the slices of `source` added at positions `index` along `dim`."""
    index = check_index("index_add", index)
    same_device("index_add", x, index, source)
    d = norm_dim(dim, x.ndim, "index_add")
    index = _as_i64(reshape(index, (-1,)))
    n = index._shape[0]
    expect = x._shape[:d] + (n,) + x._shape[d + 1:]
    if source._shape != expect:
        raise ShapeError(f"index_add: source {fmt_shape(source._shape)} must have shape {fmt_shape(expect)} for "
                         f"input {fmt_shape(x._shape)}, dim {d} and {n} indices")
    source = cast(source, x._dtype)
    if alpha != 1:
        source = mul(source, alpha)
    out = like(x, x._backend.index_add(x._data, x._shape, d, index._data, n, source._data, x._dtype), x._shape)
    if needs_grad(x, source):
        record(out, "index_add", (x, source), lambda g: (g, index_select(g, d, index)))
    return out


def _tri(x: Tensor, diagonal: int, lower: bool, op: str) -> Tensor:
    if x.ndim < 2:
        raise ShapeError(f"{op}: expected at least 2 dims, got shape {fmt_shape(x._shape)}")
    from .creation import arange

    m, n = x._shape[-2], x._shape[-1]
    rows = reshape(arange(m, device=x._device), (m, 1))
    cols = reshape(arange(n, device=x._device), (1, n))
    diff = cols - rows
    keep = lt(diff, diagonal + 1) if lower else lt(diagonal - 1, diff)
    return where(keep, x, scalar_tensor(x, 0, x._dtype))


def tril(x: Tensor, diagonal: int = 0) -> Tensor:
    """Zero the elements above the `diagonal`-th diagonal of the last two dims."""
    return _tri(x, diagonal, True, "tril")


def triu(x: Tensor, diagonal: int = 0) -> Tensor:
    """Zero the elements below the `diagonal`-th diagonal of the last two dims."""
    return _tri(x, diagonal, False, "triu")


def copy_(dst: Tensor, src: Any) -> Tensor:
    """Write `src` (tensor or scalar, broadcast to dst's shape, cast to its dtype) into `dst` in place."""
    if dst._requires_grad and ag.state.enabled:
        raise GradError("in-place write into a tensor that requires grad; wrap it in candle.no_grad()")
    if (isinstance(src, Tensor) and src._shape == dst._shape and src._dtype is dst._dtype
            and src._device is dst._device):  # the common case: nothing to move, cast or broadcast
        dst._backend.copy_(dst._data, src._data, dst._shape)
        return dst
    if isinstance(src, Tensor):
        if src._device is not dst._device:
            from .convert import to

            src = to(src, device=dst._device)
        src = cast(src.detach(), dst._dtype)
        broadcast_shapes(dst._shape, src._shape, "copy_")
        if numel(src._shape) > numel(dst._shape) or len(src._shape) > len(dst._shape):
            raise ShapeError(f"copy_: source {fmt_shape(src._shape)} does not broadcast to {fmt_shape(dst._shape)}")
    else:
        src = scalar_tensor(dst, src, dst._dtype)
    dst._backend.copy_(dst._data, src._data, dst._shape)
    return dst


# --- __getitem__ / __setitem__ -------------------------------------------------------------------
def _expand_index(x: Tensor, index: Any) -> list[Any]:
    items = list(index) if isinstance(index, tuple) else [index]
    out: list[Any] = []
    for it in items:
        if isinstance(it, (list, range)):
            from .creation import tensor

            it = tensor(list(it), device=x._device)
            if it._dtype.is_floating_point:
                raise DTypeError(f"index: lists used as indices must hold integers, got {it._dtype.name}")
        if isinstance(it, Tensor) and it._dtype is uint8:  # a mask: becomes one index tensor per dim
            out.extend(_nonzero(it))
            continue
        if isinstance(it, Tensor) and it._dtype.is_floating_point:
            raise DTypeError(f"index: tensors used as indices must be integers, got {it._dtype.name}")
        if not (it is None or it is Ellipsis or isinstance(it, (int, slice, Tensor))):
            if hasattr(it, "__index__"):
                it = it.__index__()
            else:
                raise DTypeError(f"index: unsupported index type {type(it).__name__}")
        out.append(it)
    consumed = sum(1 for it in out if it is not None and it is not Ellipsis)
    if consumed > x.ndim:
        raise DimError(f"index: too many indices ({consumed}) for a tensor of shape {fmt_shape(x._shape)}")
    ell = [i for i, it in enumerate(out) if it is Ellipsis]
    if len(ell) > 1:
        raise DimError("index: only one Ellipsis (...) is allowed")
    fill = [slice(None)] * (x.ndim - consumed)
    if ell:
        out[ell[0]:ell[0] + 1] = fill
    else:
        out.extend(fill)
    return out


def _nonzero(mask: Tensor) -> list[Tensor]:
    """The index tensors of a mask's non-zero elements (a host round trip: the size depends on data)."""
    import numpy as np

    from .creation import from_numpy

    where_ = np.nonzero(mask.numpy())
    return [from_numpy(np.ascontiguousarray(w, dtype=np.int64)).to(device=mask._device) for w in where_]


def getitem(x: Tensor, index: Any) -> Tensor:
    """`x[index]` with PyTorch/numpy semantics for ints, slices, None, ..., integer tensors and masks."""
    items = index if type(index) is tuple else (index,)
    if len(items) <= len(x._shape):  # fast path: ints and slices only
        specs: list[tuple[int, int, int]] = []
        sliced: list[int] = []
        out_shape: list[int] = []
        for d, it in enumerate(items):
            n = x._shape[d]
            if type(it) is slice and (it.step is None or it.step > 0):
                a, b, c = it.indices(n)
                specs.append((a, max(a, b), c))
                k = len(range(a, b, c))
                sliced.append(k)
                out_shape.append(k)
            elif type(it) is int and -n <= it < n:
                i = it + n if it < 0 else it
                specs.append((i, i + 1, 1))
                sliced.append(1)
            else:
                break
        else:
            for n in x._shape[len(items):]:
                specs.append((0, n, 1))
                sliced.append(n)
                out_shape.append(n)
            return sliced_view(x, specs, tuple(sliced), tuple(out_shape))
    items = _expand_index(x, index)
    specs = []
    out_shape = []
    adv: list[tuple[int, Tensor]] = []  # (dim in the basic result, index tensor)
    d = 0
    for it in items:
        if it is None:
            out_shape.append(1)
            continue
        n = x._shape[d]
        if isinstance(it, int):
            i = it + n if it < 0 else it
            if not 0 <= i < n:
                raise DimError(f"index {it} is out of range for dim {d} of size {n} (shape {fmt_shape(x._shape)})")
            specs.append((i, i + 1, 1))
        elif isinstance(it, slice):
            if it.step is not None and it.step <= 0:
                raise ShapeError(f"index: slice step must be positive, got {it.step} (use flip)")
            a, b, c = it.indices(n)
            specs.append((a, max(a, b), c))
            out_shape.append(len(range(a, b, c)))
        else:
            specs.append((0, n, 1))
            adv.append((len(out_shape), it))
            out_shape.append(n)
        d += 1
    y = slice_view(x, specs, tuple(out_shape))
    return _advanced(y, adv) if adv else y


def _advanced(y: Tensor, adv: list[tuple[int, Tensor]]) -> Tensor:
    """Apply integer-tensor indices at dims `adv` of `y` (numpy's placement rule)."""
    dims = [d for d, _ in adv]
    idx = [_as_i64(t) for _, t in adv]
    same_device("index", y, *idx)
    bshape: tuple[int, ...] = ()
    for t in idx:
        bshape = broadcast_shapes(bshape, t._shape, "index")
    adjacent = dims == list(range(dims[0], dims[0] + len(dims)))
    if not adjacent:  # the indexed dims move to the front
        rest = [i for i in range(y.ndim) if i not in dims]
        y = permute(y, dims + rest)
        dims = list(range(len(dims)))
    sizes = [y._shape[d] for d in dims]
    linear: Tensor | None = None
    for t, n in zip(idx, sizes):
        t = where(lt(t, 0), add(t, n), t)
        linear = t if linear is None else add(mul(linear, n), t)
    assert linear is not None
    linear = expand(linear, bshape) if linear._shape != bshape else linear
    first = dims[0]
    merged = flatten(y, first, first + len(dims) - 1) if len(dims) > 1 else y
    picked = index_select(merged, first, reshape(linear, (-1,)))
    return reshape(picked, merged._shape[:first] + bshape + merged._shape[first + 1:])


def setitem(x: Tensor, index: Any, value: Any) -> None:
    """`x[index] = value`, in place (value broadcasts to the indexed shape)."""
    items = index if isinstance(index, tuple) else (index,)
    basic = all(it is None or it is Ellipsis or isinstance(it, (int, slice)) for it in items)
    if basic:
        copy_(getitem(x, index), value)
        return
    from .creation import arange

    with ag.no_grad():
        pos = reshape(arange(numel(x._shape), device=x._device), x._shape)
        sel = getitem(pos, index)
        if not isinstance(value, Tensor):
            value = scalar_tensor(x, value, x._dtype)
        value = cast(value, x._dtype)
        if value._shape != sel._shape:
            value = expand(value, sel._shape)
        flat = reshape(x, (-1,))
        new = scatter(flat, 0, reshape(sel, (-1,)), reshape(value, (-1,)))
    copy_(x, reshape(new, x._shape))


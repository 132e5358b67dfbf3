"""View and shape ops: reshape, permute, slicing, squeeze, expand, split, flip... Views share
storage with their input; each op's gradient maps the output's grad back to the input's shape."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..autograd import state as _ag_state
from ..errors import ShapeError, fmt_shape
from ..strides import view_strides
from ..tensor import Tensor
from ._base import like, make, needs_grad, norm_dim, norm_dims, numel, record, zeros_of

Spec = tuple[int, int, int]


def _shape_args(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and not isinstance(shape[0], int):
        shape = tuple(shape[0])
    for s in shape:
        if type(s) is not int:
            return tuple(int(v) for v in shape)
    return shape


def infer_shape(shape: tuple[int, ...], n: int, op: str, src: tuple[int, ...]) -> tuple[int, ...]:
    """Resolve one -1 in `shape` so that it holds `n` elements."""
    neg = [i for i, s in enumerate(shape) if s == -1]
    if len(neg) > 1 or any(s < -1 for s in shape):
        raise ShapeError(f"{op}: invalid shape {fmt_shape(shape)}")
    if neg:
        rest = numel(tuple(s for s in shape if s != -1))
        if rest == 0 or n % rest:
            raise ShapeError(f"{op}: cannot reshape {fmt_shape(src)} ({n} elements) into {fmt_shape(shape)}")
        shape = tuple(n // rest if s == -1 else s for s in shape)
    if numel(shape) != n:
        raise ShapeError(f"{op}: cannot reshape {fmt_shape(src)} ({n} elements) into {fmt_shape(shape)}")
    return shape


def reshape(x: Tensor, *shape: Any) -> Tensor:
    """A tensor with the same elements and a new shape (one dim may be -1); a view when possible."""
    new = _shape_args(shape)
    if new == x._shape:
        return x
    n = numel(x._shape)
    if -1 in new or numel(new) != n:
        new = infer_shape(new, n, "reshape", x._shape)
        if new == x._shape:
            return x
    out = like(x, x._backend.reshape(x._data, x._shape, new), new)
    if needs_grad(x):
        src = x._shape
        record(out, "reshape", (x,), lambda g: (reshape(g, src),))
    return out


def view(x: Tensor, *shape: Any) -> Tensor:
    """Like `reshape`, but raises instead of copying when the layout does not allow a view."""
    new = infer_shape(_shape_args(shape), x.numel(), "view", x._shape)
    if not x._backend.is_contiguous(x._data, x._shape) and view_strides(x._shape, x.stride(), new) is None:
        raise ShapeError(f"view: shape {fmt_shape(new)} is not compatible with the strides of a tensor of shape "
                         f"{fmt_shape(x._shape)}; use reshape() or contiguous() first")
    return reshape(x, new)


def permute(x: Tensor, *dims: Any) -> Tensor:
    """Reorder the dims (a view)."""
    ds = _shape_args(dims)
    if len(ds) != x.ndim:
        raise ShapeError(f"permute: expected {x.ndim} dims for shape {fmt_shape(x._shape)}, got {list(ds)}")
    nd = len(x._shape)
    ds = tuple(d + nd if d < 0 else d for d in ds)
    if sorted(ds) != list(range(nd)):
        raise ShapeError(f"permute: dims {list(ds)} are not a permutation of 0..{x.ndim - 1}")
    if ds == tuple(range(x.ndim)):
        return x
    shape = tuple(x._shape[d] for d in ds)
    out = like(x, x._backend.permute(x._data, x._shape, ds), shape)
    if needs_grad(x):
        inv = tuple(sorted(range(len(ds)), key=lambda i: ds[i]))
        record(out, "permute", (x,), lambda g: (permute(g, inv),))
    return out


def transpose(x: Tensor, dim0: int, dim1: int) -> Tensor:
    """Swap two dims (a view)."""
    if x.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return x
    nd = len(x._shape)
    d0 = dim0 + nd if dim0 < 0 else dim0
    d1 = dim1 + nd if dim1 < 0 else dim1
    if not (0 <= d0 < nd and 0 <= d1 < nd):
        norm_dim(dim0, nd, "transpose"), norm_dim(dim1, nd, "transpose")
    if d0 == d1:
        return x
    p = list(range(nd))
    p[d0], p[d1] = d1, d0
    shape = list(x._shape)
    shape[d0], shape[d1] = shape[d1], shape[d0]
    out = make(x._backend.permute(x._data, x._shape, p), tuple(shape), x._dtype, x._device, x._backend)
    if _ag_state.enabled and x._requires_grad:
        record(out, "transpose", (x,), lambda g: (transpose(g, d0, d1),))
    return out


def t(x: Tensor) -> Tensor:
    """Transpose of a tensor of at most 2 dims."""
    if x.ndim > 2:
        raise ShapeError(f"t: expected at most 2 dims, got shape {fmt_shape(x._shape)}; use transpose()")
    return transpose(x, 0, 1) if x.ndim == 2 else x


def movedim(x: Tensor, source: int, destination: int) -> Tensor:
    s, d = norm_dim(source, x.ndim, "movedim"), norm_dim(destination, x.ndim, "movedim")
    p = [i for i in range(x.ndim) if i != s]
    p.insert(d, s)
    return permute(x, p)


def slice_view(x: Tensor, specs: Sequence[Spec], shape: tuple[int, ...] | None = None) -> Tensor:
    """The view `x[start:stop:step, ...]` for normalized specs, one per dim, reshaped to `shape`
    when given (dropping or inserting size-1 dims, as indexing with ints and None does)."""
    return sliced_view(x, specs, tuple([len(range(a, b, c)) for a, b, c in specs]), shape)


def sliced_view(x: Tensor, specs: Sequence[Spec], sliced: tuple[int, ...], shape: tuple[int, ...] | None) -> Tensor:
    """`slice_view` with the sliced sizes (one per spec) already computed by the caller."""
    out_shape = sliced if shape is None else shape
    if sliced == x._shape:
        return x if out_shape == sliced else reshape(x, out_shape)
    b = x._backend
    data = b.slice(x._data, x._shape, specs)
    if out_shape != sliced:
        data = b.reshape(data, sliced, out_shape)
    out = make(data, out_shape, x._dtype, x._device, b)
    if _ag_state.enabled and x._requires_grad:
        def grad(g: Tensor) -> tuple[Tensor]:
            z = zeros_of(g, x._shape)
            gd = g._data if out_shape == sliced else g._backend.reshape(g._data, out_shape, sliced)
            z._backend.copy_(z._backend.slice(z._data, x._shape, specs), gd, sliced)
            return (z,)

        record(out, "slice", (x,), grad)
    return out


def _narrowed(x: Tensor, d: int, start: int, length: int) -> Tensor:
    """The view of elements `start .. start+length` along dim `d` (arguments already checked)."""
    shape = x._shape
    if length == shape[d]:
        return x
    specs = [(0, s, 1) for s in shape]
    specs[d] = (start, start + length, 1)
    if _ag_state.enabled and x._requires_grad:
        return slice_view(x, specs)
    be = x._backend
    return make(be.slice(x._data, shape, specs), shape[:d] + (length,) + shape[d + 1:], x._dtype, x._device, be)


def narrow(x: Tensor, dim: int, start: int, length: int) -> Tensor:
    """Elements `start .. start+length` along `dim` (a view)."""
    nd = len(x._shape)
    d = dim + nd if dim < 0 else dim
    if not 0 <= d < nd:
        d = norm_dim(dim, nd, "narrow")
    n = x._shape[d]
    if start < 0:
        start += n
    if not (0 <= start and length >= 0 and start + length <= n):
        raise ShapeError(f"narrow: start {start} + length {length} out of range for dim {d} of size {n} "
                         f"(shape {fmt_shape(x._shape)})")
    return _narrowed(x, d, start, length)


def squeeze(x: Tensor, dim: Any = None) -> Tensor:
    """Remove size-1 dims (all of them, or those in `dim`)."""
    if dim is None:
        return reshape(x, tuple(s for s in x._shape if s != 1))
    ds = norm_dims(dim, x.ndim, "squeeze")
    return reshape(x, tuple(s for i, s in enumerate(x._shape) if not (i in ds and s == 1)))


def unsqueeze(x: Tensor, dim: int) -> Tensor:
    """Insert a size-1 dim at `dim` (negative counts from the end of the result)."""
    d = norm_dim(dim, x.ndim + 1, "unsqueeze")
    return reshape(x, x._shape[:d] + (1,) + x._shape[d:])


def flatten(x: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if x.ndim == 0:
        return reshape(x, (1,))
    s, e = norm_dim(start_dim, x.ndim, "flatten"), norm_dim(end_dim, x.ndim, "flatten")
    if s > e:
        raise ShapeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    return reshape(x, x._shape[:s] + (numel(x._shape[s:e + 1]),) + x._shape[e + 1:])


def unflatten(x: Tensor, dim: int, sizes: Sequence[int]) -> Tensor:
    d = norm_dim(dim, x.ndim, "unflatten")
    sizes = infer_shape(tuple(sizes), x._shape[d], "unflatten", x._shape)
    return reshape(x, x._shape[:d] + sizes + x._shape[d + 1:])


def expand(x: Tensor, *shape: Any) -> Tensor:
    """Broadcast to a larger shape without copying (-1 keeps a dim)."""
    new = _shape_args(shape)
    if len(new) < x.ndim:
        raise ShapeError(f"expand: target {fmt_shape(new)} has fewer dims than shape {fmt_shape(x._shape)}")
    lead = len(new) - x.ndim
    out_shape = list(new)
    for i, s in enumerate(x._shape):
        n = new[lead + i]
        if n == -1:
            out_shape[lead + i] = s
        elif s != n and s != 1:
            raise ShapeError(f"expand: cannot expand shape {fmt_shape(x._shape)} to {fmt_shape(new)}")
    if any(s < 0 for s in out_shape[:lead]):
        raise ShapeError(f"expand: -1 is not allowed for new leading dims in {fmt_shape(new)}")
    target = tuple(out_shape)
    if target == x._shape:
        return x
    src = x._shape
    data = x._data if lead == 0 else x._backend.reshape(x._data, src, (1,) * lead + src)
    out = like(x, x._backend.expand(data, (1,) * lead + src, target), target)
    if needs_grad(x):
        from ._base import unbroadcast

        record(out, "expand", (x,), lambda g: (unbroadcast(g, src),))
    return out


def broadcast_to(x: Tensor, shape: Sequence[int]) -> Tensor:
    return expand(x, tuple(shape))


def split(x: Tensor, split_size_or_sections: int | Sequence[int], dim: int = 0) -> list[Tensor]:
    """Pieces of `split_size` along `dim` (the last may be smaller), or of the given sizes (views)."""
    nd = len(x._shape)
    d = dim + nd if dim < 0 else dim
    if not 0 <= d < nd:
        d = norm_dim(dim, nd, "split")
    n = x._shape[d]
    if isinstance(split_size_or_sections, int):
        size = split_size_or_sections
        if size <= 0:
            raise ShapeError(f"split: split_size must be positive, got {size}")
        sizes = [min(size, n - i) for i in range(0, n, size)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n or (sizes and min(sizes) < 0):
            raise ShapeError(f"split: sizes {sizes} do not sum to dim {d} of shape {fmt_shape(x._shape)}")
    out, start = [], 0
    for s in sizes:
        out.append(_narrowed(x, d, start, s))
        start += s
    return out


def chunk(x: Tensor, chunks: int, dim: int = 0) -> list[Tensor]:
    """At most `chunks` pieces of equal size along `dim` (PyTorch's rule for the last one)."""
    if chunks <= 0:
        raise ShapeError(f"chunk: chunks must be positive, got {chunks}")
    d = norm_dim(dim, x.ndim, "chunk")
    n = x._shape[d]
    return split(x, max(-(-n // chunks), 1), d)


def unbind(x: Tensor, dim: int = 0) -> list[Tensor]:
    d = norm_dim(dim, x.ndim, "unbind")
    return [squeeze(p, d) for p in split(x, 1, d)]


def flip(x: Tensor, dims: int | Sequence[int]) -> Tensor:
    """Reverse the order of elements along `dims`."""
    ds = norm_dims(dims, x.ndim, "flip")
    if not ds:
        return x
    out = like(x, x._backend.flip(x._data, x._shape, ds), x._shape)
    if needs_grad(x):
        record(out, "flip", (x,), lambda g: (flip(g, ds),))
    return out


def contiguous(x: Tensor) -> Tensor:
    """`x` if its layout is contiguous, else a contiguous copy."""
    data = x._backend.contiguous(x._data, x._shape)
    if data is x._data:
        return x
    out = like(x, data, x._shape)
    if needs_grad(x):
        record(out, "contiguous", (x,), lambda g: (g,))
    return out


def clone(x: Tensor) -> Tensor:
    """A copy with its own storage."""
    z = zeros_of(x)
    z._backend.copy_(z._data, x._data, x._shape)
    if needs_grad(x):
        record(z, "clone", (x,), lambda g: (g,))
    return z


def repeat(x: Tensor, *sizes: Any) -> Tensor:
    """Tile `x` `sizes[i]` times along each dim (PyTorch's `repeat`)."""
    reps = _shape_args(sizes)
    if len(reps) < x.ndim:
        raise ShapeError(f"repeat: {len(reps)} repeat counts for a tensor of {x.ndim} dims")
    src = (1,) * (len(reps) - x.ndim) + x._shape
    y = reshape(x, tuple(v for s in src for v in (1, s)))
    y = expand(y, tuple(v for r, s in zip(reps, src) for v in (r, s)))
    return reshape(y, tuple(r * s for r, s in zip(reps, src)))

"""Helpers every op module shares: building result tensors, dims, devices, broadcasting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import autograd as ag
from ..device import Device
from ..dtype import DType
from ..errors import DeviceError, DimError, DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor

Shape = tuple[int, ...]
make = Tensor._make
record = ag.record
needs_grad = ag.needs_grad


def like(x: Tensor, data: Any, shape: Shape, dtype: DType | None = None) -> Tensor:
    """A new tensor on `x`'s device from a native array."""
    return make(data, shape, dtype or x._dtype, x._device, x._backend)


def norm_dim(dim: int, ndim: int, op: str) -> int:
    """A non-negative dim, or a DimError naming the op."""
    n = ndim or 1  # a 0-d tensor accepts dim 0 and -1, like PyTorch
    d = dim + n if dim < 0 else dim
    if not 0 <= d < n:
        raise DimError(f"dim {dim} out of range in {op} for a tensor of {ndim} dims (expected {-n}..{n - 1})")
    return d


def norm_dims(dims: int | Sequence[int] | None, ndim: int, op: str) -> tuple[int, ...]:
    """Sorted unique non-negative dims; None means all dims."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = (dims,)
    out = sorted({norm_dim(d, ndim, op) for d in dims})
    if ndim == 0:
        return ()
    return tuple(out)


def same_device(op: str, *ts: Tensor) -> Device:
    dev = ts[0]._device
    for t in ts[1:]:
        if t._device is not dev:
            devs = ", ".join(str(x._device) for x in ts)
            raise DeviceError(f"device mismatch in {op}: tensors on {devs}")
    return dev


def broadcast_shapes(a: Shape, b: Shape, op: str) -> Shape:
    """numpy/PyTorch broadcasting of two shapes."""
    if a == b:
        return a
    n = max(len(a), len(b))
    pa = (1,) * (n - len(a)) + a
    pb = (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(pa, pb):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise ShapeError(f"shape mismatch in {op}: lhs {fmt_shape(a)}, rhs {fmt_shape(b)} do not broadcast")
    return tuple(out)


def numel(shape: Shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def unbroadcast(g: Tensor, shape: Shape) -> Tensor:
    """Sum `g` down to `shape` (the gradient of a broadcast)."""
    if g._shape == shape:
        return g
    from .reduce import sum as _sum

    lead = len(g._shape) - len(shape)
    dims = list(range(lead))
    for i, s in enumerate(shape):
        if s == 1 and g._shape[lead + i] != 1:
            dims.append(lead + i)
    if dims:
        g = _sum(g, dims, keepdim=True)
    from .shape import reshape

    return reshape(g, shape)


def zeros_of(x: Tensor, shape: Shape | None = None, dtype: DType | None = None) -> Tensor:
    """Zeros on x's device."""
    shape = x._shape if shape is None else shape
    dtype = dtype or x._dtype
    return make(x._backend.full(shape, 0, dtype), shape, dtype, x._device, x._backend)


def full_of(x: Tensor, shape: Shape, value: float | int, dtype: DType | None = None) -> Tensor:
    dtype = dtype or x._dtype
    return make(x._backend.full(shape, value, dtype), shape, dtype, x._device, x._backend)


def scalar_tensor(x: Tensor, value: float | int, dtype: DType) -> Tensor:
    """A 0-d tensor on x's device."""
    return make(x._backend.full((), value, dtype), (), dtype, x._device, x._backend)


def check_index(op: str, index: Any) -> Tensor:
    """An integer index tensor, or a DTypeError naming the op."""
    if not isinstance(index, Tensor):
        raise DTypeError(f"{op}: index must be a Tensor, got {type(index).__name__}")
    if index._dtype.is_floating_point:
        raise DTypeError(f"{op}: index must be an integer tensor, got dtype {index._dtype.name}")
    return index


class _FusedState:
    enabled = True


fused_state = _FusedState()


def fused(backend: Any, name: str) -> Any:
    """The backend's optional fused kernel `name`, or None (then core runs the composition)."""
    return getattr(backend, name, None) if fused_state.enabled else None

"""Matrix products: `matmul` with PyTorch's rules for 1-d operands and broadcast batch dims."""

from __future__ import annotations

from ..autograd import state as _ag_state
from ..dtype import promote
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor
from ._base import broadcast_shapes, make, record, same_device, unbroadcast
from .elementwise import cast
from .shape import expand, squeeze, transpose, unsqueeze


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """Matrix product; 1-d operands are treated as vectors, batch dims broadcast."""
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a._dtype is b._dtype and a._device is b._device:
        sa, sb = a._shape, b._shape
        if len(sa) == 2 and len(sb) == 2 and sa[1] == sb[0]:  # the common case, checked cheaply
            return _product(a, b, a, b, (sa[0], sb[1]))
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise DTypeError(f"matmul: expected two Tensors, got {type(a).__name__} and {type(b).__name__}")
    same_device("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"shape mismatch in matmul: lhs {fmt_shape(a._shape)}, rhs {fmt_shape(b._shape)} "
                         "(0-d operands are not allowed)")
    ka = a._shape[-1]
    kb = b._shape[-2] if b.ndim > 1 else b._shape[0]
    if ka != kb:
        raise ShapeError(f"shape mismatch in matmul: lhs {fmt_shape(a._shape)}, rhs {fmt_shape(b._shape)}")
    if a._dtype is not b._dtype:
        dt = promote(a._dtype, b._dtype)
        a, b = cast(a, dt), cast(b, dt)
    if a.ndim == 1:
        return squeeze(matmul(unsqueeze(a, 0), b), -2 if b.ndim > 1 else -1)
    if b.ndim == 1:
        return squeeze(matmul(a, unsqueeze(b, 1)), -1)
    batch = broadcast_shapes(a._shape[:-2], b._shape[:-2], "matmul")
    ea = a if a._shape[:-2] == batch else expand(a, batch + a._shape[-2:])
    eb = b if b._shape[:-2] == batch else expand(b, batch + b._shape[-2:])
    return _product(a, b, ea, eb, batch + (a._shape[-2], b._shape[-1]))


def _product(a: Tensor, b: Tensor, ea: Tensor, eb: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The backend's matmul of the expanded operands, recording the gradient for a and b."""
    be = ea._backend
    out = make(be.matmul(ea._data, eb._data, ea._shape, eb._shape, a._dtype), shape, a._dtype, a._device, be)
    if _ag_state.enabled and (a._requires_grad or b._requires_grad):
        def grad(g: Tensor) -> tuple[Tensor, Tensor]:
            ga = matmul(g, transpose(b, -1, -2)) if a._requires_grad else None
            gb = matmul(transpose(a, -1, -2), g) if b._requires_grad else None
            return (unbroadcast(ga, a._shape) if ga is not None else None,  # type: ignore[return-value]
                    unbroadcast(gb, b._shape) if gb is not None else None)

        record(out, "matmul", (a, b), grad)
    return out


def mm(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"mm: expected 2-d operands, got lhs {fmt_shape(a._shape)}, rhs {fmt_shape(b._shape)}")
    return matmul(a, b)


def bmm(a: Tensor, b: Tensor) -> Tensor:
    if a.ndim != 3 or b.ndim != 3 or a._shape[0] != b._shape[0]:
        raise ShapeError(f"bmm: expected 3-d operands with one batch size, got lhs {fmt_shape(a._shape)}, "
                         f"rhs {fmt_shape(b._shape)}")
    return matmul(a, b)

"""Gradient clipping: `clip_grad_norm_` and `clip_grad_value_`, with torch.nn.utils' semantics."""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import reduce

from .. import autograd
from ..dtype import promote
from ..errors import GradError
from ..ops.indexing import stack
from ..tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm"]

_Params = Tensor | Iterable[Tensor]


def _grads(parameters: _Params) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p.grad for p in params if p.grad is not None]


def _vector_norm(x: Tensor, p: float) -> Tensor:
    """`torch.linalg.vector_norm(x, p)` over all elements."""
    if p == math.inf:
        return x.abs().amax()
    if p == -math.inf:
        return x.abs().amin()
    if p == 0:
        return (x != 0).sum().to(dtype=x.dtype)
    if p == 1:
        return x.abs().sum()
    if p == 2:
        return (x * x).sum().sqrt()
    return (x.abs() ** p).sum() ** (1.0 / p)


def get_total_norm(tensors: Iterable[Tensor], norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    """The `norm_type`-norm of all `tensors` together, as a 0-d tensor (0 if there are none)."""
    ts = list(tensors)
    p = float(norm_type)
    if not ts:
        from ..ops.creation import tensor

        return tensor(0.0)
    with autograd.no_grad():
        dtype = reduce(promote, (t.dtype for t in ts))
        dev = ts[0].device
        norms = [_vector_norm(t.detach(), p).to(device=dev, dtype=dtype) for t in ts]
        total = _vector_norm(stack(norms), p)
    if error_if_nonfinite and not math.isfinite(float(total.item())):
        raise GradError(f"the total norm of order {norm_type} of the gradients is non-finite "
                          f"({float(total.item())}), so it cannot be clipped; pass error_if_nonfinite=False "
                          "to clip anyway")
    return total


def clip_grad_norm_(parameters: _Params, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> Tensor:
    """Scale the gradients in place so their total `norm_type`-norm is at most `max_norm`.

    Like torch: every gradient is multiplied by `min(max_norm / (total + 1e-6), 1)`; returns the
    total norm before clipping. `norm_type` may be `math.inf`.
    """
    grads = _grads(parameters)
    total = get_total_norm(grads, norm_type, error_if_nonfinite)
    if not grads:
        return total
    with autograd.no_grad():
        coef = (float(max_norm) / (total + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(coef.to(device=g.device, dtype=g.dtype))
    return total


def clip_grad_value_(parameters: _Params, clip_value: float) -> None:
    """Clamp every gradient in place to `[-clip_value, clip_value]`."""
    v = float(clip_value)
    with autograd.no_grad():
        for g in _grads(parameters):
            g.clamp_(-v, v)

"""Small tensor helpers shared by the optimizers, rounding like PyTorch's kernels."""

from __future__ import annotations

from ..tensor import Tensor


def lerp(start: Tensor, end: Tensor, weight: float) -> Tensor:
    """`torch.lerp`: `start + w * (end - start)` for |w| < 0.5, else `end - (end - start) * (1 - w)`."""
    if abs(weight) < 0.5:
        return start + (end - start) * weight
    return end - (end - start) * (1.0 - weight)


def grad_of(p: Tensor, maximize: bool, weight_decay: float) -> Tensor:
    """The gradient an update uses: negated when maximizing, plus L2 weight decay `wd * p`."""
    g = p.grad
    assert g is not None
    if maximize:
        g = -g
    if weight_decay != 0:
        g = g + p.detach() * weight_decay
    return g


def check_non_negative(**values: float) -> None:
    """Raise `ValueError` naming the first negative hyper-parameter."""
    for name, v in values.items():
        if v < 0.0:
            raise ValueError(f"invalid {name} value: {v}")

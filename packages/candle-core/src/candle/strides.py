"""Stride arithmetic for backends whose native arrays carry their own layout (element strides)."""

from __future__ import annotations

import math

Shape = tuple[int, ...]

__all__ = ["dense_strides", "view_strides"]


def dense_strides(shape: Shape) -> Shape:
    """The element strides of a C-contiguous array of `shape`."""
    st = [0] * len(shape)
    acc = 1
    for i in range(len(shape) - 1, -1, -1):
        st[i] = acc
        acc *= shape[i]
    return tuple(st)


def view_strides(shape: Shape, strides: Shape, new: Shape) -> Shape | None:
    """Strides viewing `new` on memory laid out as (`shape`, `strides`), or None when `new` needs a copy
    (PyTorch's chunk-matching rule, `computeStride`)."""
    if math.prod(shape) == 0 or not shape:
        return dense_strides(new)
    out = [0] * len(new)
    view_d = len(new) - 1
    base = strides[-1]
    t_numel = v_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        t_numel *= shape[d]
        if d == 0 or (shape[d - 1] != 1 and strides[d - 1] != t_numel * base):
            while view_d >= 0 and (v_numel < t_numel or new[view_d] == 1):
                out[view_d] = v_numel * base
                v_numel *= new[view_d]
                view_d -= 1
            if v_numel != t_numel:
                return None
            if d > 0:
                base = strides[d - 1]
                t_numel = v_numel = 1
    return tuple(out) if view_d == -1 else None

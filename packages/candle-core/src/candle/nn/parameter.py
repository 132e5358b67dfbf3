"""`Parameter`: a tensor that a `Module` registers as trainable."""

from __future__ import annotations

from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires grad (unless `requires_grad=False`) and that modules collect."""

    __slots__ = ()

    def __new__(cls, data: Tensor, requires_grad: bool = True) -> Parameter:
        p = object.__new__(cls)
        p._assign(data.detach())
        p._requires_grad = False
        if requires_grad:
            p.requires_grad_(True)
        return p

    def __init__(self, data: Tensor, requires_grad: bool = True) -> None:
        pass

    def _assign(self, t: Tensor) -> None:
        """Take over `t`'s storage, shape, dtype and device (keeps this object's identity)."""
        self._data, self._backend, self._device = t._data, t._backend, t._device
        self._dtype, self._shape = t._dtype, t._shape
        self._node, self.grad, self._retains_grad = None, None, False

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

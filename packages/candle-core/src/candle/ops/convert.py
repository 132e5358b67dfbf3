"""Moving tensors between devices and dtypes, DLPack, and printing."""

from __future__ import annotations

from typing import Any

from ..device import Device, as_device
from ..dtype import DType, as_dtype, from_numpy_dtype
from ..errors import UnsupportedError
from ..tensor import Tensor
from ._base import make, needs_grad, record
from .elementwise import cast

# DLPack device type codes -> candle device types
_DLPACK_DEVICES = {1: "cpu", 2: "cuda", 3: "cpu", 4: "opencl", 10: "rocm", 13: "cuda"}


def to(x: Tensor, device: Device | str | None = None, dtype: DType | str | None = None, copy: bool = False) -> Tensor:
    """`x` on `device` with `dtype` (x itself when nothing changes and copy is False)."""
    if dtype is not None:
        x = cast(x, as_dtype(dtype))
    if device is not None:
        dev = as_device(device)
        if dev is not x._device:
            src = x
            b = dev.backend
            if not b.supports_dtype(x._dtype):
                from ..errors import DTypeError

                raise DTypeError(f"to: dtype {x._dtype.name} is not supported on device {dev}")
            host = x._backend.to_numpy(x._data, x._shape, x._dtype)
            out = make(b.from_numpy(host, x._dtype), x._shape, x._dtype, dev, b)
            if needs_grad(src):
                record(out, "to", (src,), lambda g: (to(g, device=src._device),))
            return out
    if copy:
        from .shape import clone

        return clone(x)
    return x


def dlpack_device(x: Tensor) -> tuple[int, int]:
    fn = getattr(x._backend, "dlpack_device", None)
    if fn is None:
        raise UnsupportedError(f"backend {x._backend.name} does not export DLPack")
    return fn()


def from_dlpack(obj: Any) -> Tensor:
    """A tensor sharing memory with a DLPack-capable object (numpy, torch, cupy...)."""
    kind, index = obj.__dlpack_device__()
    kind = int(kind)
    name = _DLPACK_DEVICES.get(kind)
    if name is None:
        raise UnsupportedError(f"from_dlpack: DLPack device type {kind} has no candle backend")
    dev = Device(name, 0 if name == "cpu" else int(index))
    b = dev.backend
    data, shape, dtype = b.from_dlpack(obj)
    return make(data, shape, dtype, dev, b)


def format_tensor(t: Tensor) -> str:
    """PyTorch-like repr: `tensor([[1., 2.]], dtype=float32, device=cpu)`."""
    import numpy as np

    a = t.numpy()
    if t._dtype.short in ("f16", "bf16"):
        a = a.astype(np.float32)
    body = np.array2string(a, separator=", ", prefix="tensor(", threshold=1000, edgeitems=3,
                           precision=4, suppress_small=False)
    extra = [f"dtype={t._dtype.name}"]
    if t._device.type != "cpu":
        extra.append(f"device='{t._device}'")
    if t._node is not None:
        extra.append(f"grad_fn=<{t._node.name}>")
    elif t._requires_grad:
        extra.append("requires_grad=True")
    if not t.numel() and t.ndim > 1:
        extra.insert(0, f"size={list(t._shape)}")
    return f"tensor({body}, {', '.join(extra)})"


__all__ = ["to", "dlpack_device", "from_dlpack", "format_tensor", "from_numpy_dtype"]

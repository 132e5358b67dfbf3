"""Tensor creation: from Python data and numpy, constants, ranges, identity, and random tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import random as _random
from ..device import Device, as_device
from ..dtype import DType, as_dtype, float32, float64, from_numpy_dtype, get_default_dtype, int64, uint8, uint32
from ..errors import DTypeError, ShapeError
from ..tensor import Tensor
from ._base import make

_NUMPY_WIDEN = {"int8": int64, "int16": int64, "int32": int64, "uint16": uint32, "uint64": int64, "bool": uint8}


def _shape_arg(size: tuple[Any, ...]) -> tuple[int, ...]:
    if len(size) == 1 and not isinstance(size[0], int):
        size = tuple(size[0])
    shape = tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise ShapeError(f"negative dimension in shape {list(shape)}")
    return shape


def _new(data: Any, shape: tuple[int, ...], dtype: DType, device: Device, requires_grad: bool) -> Tensor:
    t = make(data, shape, dtype, device, device.backend)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _check_dtype(dtype: DType, device: Device) -> None:
    if not device.backend.supports_dtype(dtype):
        raise DTypeError(f"dtype {dtype.name} is not supported on device {device}")


def from_numpy(array: Any, device: Device | str | None = None) -> Tensor:
    """A tensor of a numpy array; on the CPU it shares memory with the array (like PyTorch)."""
    import numpy as np

    if not isinstance(array, np.ndarray):
        raise DTypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    name = array.dtype.name
    if name in _NUMPY_WIDEN:
        dtype = _NUMPY_WIDEN[name]
        array = array.astype(dtype.numpy)
    else:
        dtype = from_numpy_dtype(array.dtype)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    dev = as_device(device) if device is not None else Device("cpu")
    _check_dtype(dtype, dev)
    return _new(dev.backend.from_numpy(array, dtype), tuple(array.shape), dtype, dev, False)


def tensor(data: Any, dtype: DType | str | None = None, device: Device | str | None = None,
           requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of `data` (nested lists, scalars, numpy arrays, tensors).

    Python floats give the default float dtype, ints int64, bools uint8.
    """
    import numpy as np

    if isinstance(data, Tensor):
        src = data.detach()
        out = src.to(device=device or src._device, dtype=dtype or src._dtype, copy=True)
        return out.requires_grad_(True) if requires_grad else out
    if hasattr(data, "__dlpack__") and not isinstance(data, np.ndarray) and not hasattr(data, "__array__"):
        from .convert import from_dlpack

        return tensor(from_dlpack(data), dtype, device, requires_grad)
    try:
        arr = np.array(data, copy=True)
    except ValueError as e:
        raise DTypeError(f"tensor: cannot build a tensor from ragged or non-numeric data ({e})") from e
    if arr.dtype.kind == "O":
        raise DTypeError(f"tensor: cannot build a tensor from {type(data).__name__} (ragged or non-numeric data)")
    if not isinstance(data, np.ndarray) and arr.dtype.kind == "f":
        target = get_default_dtype()
    elif arr.dtype.name in _NUMPY_WIDEN:
        target = _NUMPY_WIDEN[arr.dtype.name]
    else:
        target = from_numpy_dtype(arr.dtype)
    if dtype is not None:
        target = as_dtype(dtype)
    if arr.dtype != target.numpy:
        arr = arr.astype(target.numpy)
    dev = as_device(device)
    _check_dtype(target, dev)
    return _new(dev.backend.from_numpy(arr, target), tuple(arr.shape), target, dev,
                requires_grad)


as_tensor = tensor


def full(size: Sequence[int] | int, fill_value: float | int, dtype: DType | str | None = None,
         device: Device | str | None = None, requires_grad: bool = False) -> Tensor:
    """A tensor filled with `fill_value` (its dtype inferred from the value unless given)."""
    shape = _shape_arg((size,) if isinstance(size, int) else tuple(size))
    if dtype is None:
        dt = get_default_dtype() if isinstance(fill_value, float) else (
            uint8 if isinstance(fill_value, bool) else int64)
    else:
        dt = as_dtype(dtype)
    dev = as_device(device)
    _check_dtype(dt, dev)
    return _new(dev.backend.full(shape, fill_value, dt), shape, dt, dev, requires_grad)


def _float_or(dtype: DType | str | None) -> DType:
    return get_default_dtype() if dtype is None else as_dtype(dtype)


def zeros(*size: Any, dtype: DType | str | None = None, device: Device | str | None = None,
          requires_grad: bool = False) -> Tensor:
    return full(_shape_arg(size), 0, _float_or(dtype), device, requires_grad)


def ones(*size: Any, dtype: DType | str | None = None, device: Device | str | None = None,
         requires_grad: bool = False) -> Tensor:
    return full(_shape_arg(size), 1, _float_or(dtype), device, requires_grad)


def empty(*size: Any, dtype: DType | str | None = None, device: Device | str | None = None,
          requires_grad: bool = False) -> Tensor:
    """Like `zeros` (candle never hands out uninitialised memory)."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def _like(x: Tensor, dtype: DType | str | None, device: Device | str | None) -> tuple[DType, Device]:
    return (x._dtype if dtype is None else as_dtype(dtype)), (x._device if device is None else as_device(device))


def zeros_like(x: Tensor, dtype: DType | str | None = None, device: Device | str | None = None,
               requires_grad: bool = False) -> Tensor:
    dt, dev = _like(x, dtype, device)
    return full(x._shape, 0, dt, dev, requires_grad)


def ones_like(x: Tensor, dtype: DType | str | None = None, device: Device | str | None = None,
              requires_grad: bool = False) -> Tensor:
    dt, dev = _like(x, dtype, device)
    return full(x._shape, 1, dt, dev, requires_grad)


empty_like = zeros_like


def full_like(x: Tensor, fill_value: float | int, dtype: DType | str | None = None,
              device: Device | str | None = None, requires_grad: bool = False) -> Tensor:
    dt, dev = _like(x, dtype, device)
    return full(x._shape, fill_value, dt, dev, requires_grad)


def arange(start: float | int, end: float | int | None = None, step: float | int = 1,
           dtype: DType | str | None = None, device: Device | str | None = None,
           requires_grad: bool = False) -> Tensor:
    """`start, start+step, ...` below `end` (`arange(n)` counts from 0)."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ShapeError("arange: step must be non-zero")
    if dtype is None:
        dt = get_default_dtype() if any(isinstance(v, float) for v in (start, end, step)) else int64
    else:
        dt = as_dtype(dtype)
    n = max(0, math.ceil((end - start) / step))
    dev = as_device(device)
    _check_dtype(dt, dev)
    return _new(dev.backend.arange(start, step, n, dt), (n,), dt, dev, requires_grad)


def linspace(start: float, end: float, steps: int, dtype: DType | str | None = None,
             device: Device | str | None = None, requires_grad: bool = False) -> Tensor:
    """`steps` evenly spaced values from `start` to `end` inclusive."""
    if steps < 0:
        raise ShapeError(f"linspace: steps must be non-negative, got {steps}")
    dt = _float_or(dtype)
    dev = as_device(device)
    if steps == 1:
        return full((1,), float(start), dt, dev, requires_grad)
    compute = float64 if dev.backend.supports_dtype(float64) else float32
    i = arange(steps, dtype=compute, device=dev)
    step = (end - start) / (steps - 1) if steps > 1 else 0.0
    half = steps // 2
    # like PyTorch: the first half counts up from start, the second half down from end
    from .elementwise import where

    lo = i * step + start
    hi = (i - (steps - 1)) * step + end
    out = where(i < half, lo, hi).to(dtype=dt)
    return out.requires_grad_(True) if requires_grad else out


def eye(n: int, m: int | None = None, dtype: DType | str | None = None, device: Device | str | None = None,
        requires_grad: bool = False) -> Tensor:
    """The `n x m` identity matrix."""
    m = n if m is None else m
    dev = as_device(device)
    rows = arange(n, device=dev).reshape(n, 1)
    cols = arange(m, device=dev).reshape(1, m)
    out = (rows == cols).to(dtype=_float_or(dtype))
    return out.requires_grad_(True) if requires_grad else out


def _sample(kind: str, shape: tuple[int, ...], a: float, b: float, dtype: DType | str | None,
            device: Device | str | None, generator: _random.Generator | None, requires_grad: bool) -> Tensor:
    dt = _float_or(dtype)
    if not dt.is_floating_point:
        raise DTypeError(f"{kind}: expected a float dtype, got {dt.name}")
    dev = as_device(device)
    _check_dtype(dt, dev)
    seed = (generator or _random.default_generator).next_seed()
    b_ = dev.backend
    data = b_.rand_uniform(shape, a, b, dt, seed) if kind == "rand" else b_.rand_normal(shape, a, b, dt, seed)
    return _new(data, shape, dt, dev, requires_grad)


def rand(*size: Any, dtype: DType | str | None = None, device: Device | str | None = None,
         generator: _random.Generator | None = None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1)."""
    return _sample("rand", _shape_arg(size), 0.0, 1.0, dtype, device, generator, requires_grad)


def randn(*size: Any, dtype: DType | str | None = None, device: Device | str | None = None,
          generator: _random.Generator | None = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples."""
    return _sample("randn", _shape_arg(size), 0.0, 1.0, dtype, device, generator, requires_grad)


def uniform(size: Sequence[int], low: float, high: float, dtype: DType | str | None = None,
            device: Device | str | None = None, generator: _random.Generator | None = None) -> Tensor:
    return _sample("rand", _shape_arg((tuple(size),)), low, high, dtype, device, generator, False)


def normal(size: Sequence[int], mean: float, std: float, dtype: DType | str | None = None,
           device: Device | str | None = None, generator: _random.Generator | None = None) -> Tensor:
    return _sample("randn", _shape_arg((tuple(size),)), mean, std, dtype, device, generator, False)


def randint(low: int, high: int | None = None, size: Sequence[int] = (), dtype: DType | str | None = None,
            device: Device | str | None = None, generator: _random.Generator | None = None) -> Tensor:
    """Integers uniform in [low, high)."""
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ShapeError(f"randint: empty range [{low}, {high})")
    u = _sample("rand", _shape_arg((tuple(size),)), 0.0, 1.0, float64, device, generator, False)
    from .elementwise import clamp, floor

    v = clamp(floor(u * (high - low) + low), low, high - 1)
    return v.to(dtype=int64 if dtype is None else as_dtype(dtype))


def rand_like(x: Tensor, dtype: DType | str | None = None, generator: _random.Generator | None = None) -> Tensor:
    return rand(x._shape, dtype=dtype or x._dtype, device=x._device, generator=generator)


def randn_like(x: Tensor, dtype: DType | str | None = None, generator: _random.Generator | None = None) -> Tensor:
    return randn(x._shape, dtype=dtype or x._dtype, device=x._device, generator=generator)


def randperm(n: int, device: Device | str | None = None, generator: _random.Generator | None = None) -> Tensor:
    """A random permutation of 0..n-1 (int64)."""
    from .sorting import argsort

    return argsort(rand(n, dtype=float64, device=device, generator=generator))

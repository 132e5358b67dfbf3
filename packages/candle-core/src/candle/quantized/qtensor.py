"""`QTensor`: a tensor of GGML blocks (Q4_0 ... Q8_K, or F16/BF16/F32) resident on a device.

    q = QTensor.quantize(w, "q4_k")                  # from a float Tensor or numpy array [..., K]
    q = QTensor.from_gguf(reader, "blk.0.ffn_up.weight", device="cuda")
    q = QTensor.from_raw(raw_bytes, "q4_1", (576, 1536))
    w = q.dequantize("float32")                      # a float Tensor of q.shape
    y = candle.quantized.qmatmul(x, q)               # x @ dequantize(q).T without materialising it

The shape is row-major with the blocks along the last dim (`K`, GGUF's ne0); kernels see the tensor as a
matrix `(N, K)`, N the product of the other dims. On each device the backend keeps its own resident form
(`qstore`): the raw bytes by default, a layout made for its matmul on the CPU. `raw()` always gives the
exact GGML bytes back (for saving).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..device import Device, as_device
from ..dtype import DType, as_dtype, float32, uint8
from ..errors import DTypeError, ShapeError, UnsupportedError, fmt_shape
from ..io.ggml_quants import GGML_BLOCK_SIZES, GGMLType, ggml_type, row_nbytes
from ..tensor import Tensor
from .quantize import QUANTIZE_TYPES, quantize

__all__ = ["QTensor"]

DeviceLike = Device | str | None


class QTensor:
    """GGML blocks of `qtype` with a row-major float `shape`, resident on `device` (see the module docs).
    Not differentiable: quantized weights are for inference."""

    __slots__ = ("_device", "_native", "_qtype", "_shape")

    def __init__(self, native: Any, qtype: GGMLType, shape: tuple[int, ...], device: Device) -> None:
        """Internal: use `quantize`, `from_raw` or `from_gguf`."""
        self._native = native
        self._qtype = qtype
        self._shape = shape
        self._device = device

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def from_raw(cls, raw: np.ndarray | bytes, qtype: GGMLType | int | str, shape: Any,
                 device: DeviceLike = None) -> QTensor:
        """From raw GGML bytes (a uint8 array or bytes of exactly `row_nbytes(qtype, K) * N` bytes)."""
        t = ggml_type(qtype)
        shp = tuple(int(s) for s in shape)
        if not shp or any(s < 0 for s in shp):
            raise ShapeError(f"QTensor: invalid shape {list(shp)}")
        bs, _ = GGML_BLOCK_SIZES[t]
        k = shp[-1]
        if k % bs:
            raise ShapeError(f"QTensor: the last dim {k} of shape {fmt_shape(shp)} is not a multiple of the {t.name} "
                             f"block size {bs}")
        n = math.prod(shp[:-1])
        arr = np.frombuffer(raw, np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) else np.asarray(raw)
        if arr.dtype != np.uint8:
            raise DTypeError(f"QTensor.from_raw: expected uint8 bytes, got dtype {arr.dtype}")
        want = n * row_nbytes(t, k)
        if arr.size != want:
            raise ShapeError(f"QTensor.from_raw: {t.name} {fmt_shape(shp)} takes {want} bytes, got {arr.size}")
        dev = as_device(device if device is not None else "cpu")
        return cls(_store(dev, arr.reshape(n, -1), t, (n, k)), t, shp, dev)

    @classmethod
    def quantize(cls, x: Tensor | np.ndarray, qtype: GGMLType | int | str, device: DeviceLike = None) -> QTensor:
        """Quantize a float Tensor or array `[..., K]` (on the host, with `candle.quantized.quantize`) onto
        `device` (default: the tensor's device, else cpu)."""
        t = ggml_type(qtype)
        if t not in QUANTIZE_TYPES:
            raise UnsupportedError(f"QTensor.quantize: quantization to {t.name} is not implemented")
        if isinstance(x, Tensor):
            if not x.dtype.is_floating_point:
                raise DTypeError(f"QTensor.quantize: expected a float tensor, got dtype {x.dtype.name}")
            dev = device if device is not None else x.device
            arr = np.asarray(x.to(dtype=float32).numpy()).reshape(x.shape)
        else:
            dev = device
            arr = np.asarray(x)
        shape = tuple(arr.shape) if arr.ndim else (1,)
        return cls.from_raw(quantize(arr, t), t, shape, dev)

    @classmethod
    def from_gguf(cls, reader: Any, name: str, device: DeviceLike = None) -> QTensor:
        """Tensor `name` of an open `candle.io.GGUFReader`, kept in its stored type."""
        info = reader.tensor_info(name)
        t = info.qtype
        if t is None or (t not in GGML_BLOCK_SIZES):
            raise UnsupportedError(f"QTensor.from_gguf: tensor {name!r} has unknown GGML type id {info.type_id}")
        return cls.from_raw(reader.raw(name), t, tuple(int(s) for s in info.shape), device)

    # --- attributes -----------------------------------------------------------------------------
    @property
    def qtype(self) -> GGMLType:
        return self._qtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def device(self) -> Device:
        return self._device

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """`(N, K)`: the shape kernels see."""
        return math.prod(self._shape[:-1]), self._shape[-1]

    @property
    def nbytes(self) -> int:
        """Bytes of the GGML blocks (the size in a GGUF file)."""
        n, k = self.matrix_shape
        return n * row_nbytes(self._qtype, k)

    @property
    def resident_nbytes(self) -> int:
        """Bytes the device's resident form takes (the raw size when the backend keeps raw bytes)."""
        nb = getattr(self._native, "nbytes", None)
        return int(nb) if isinstance(nb, (int, np.integer)) else self.nbytes

    def __len__(self) -> int:
        return self._shape[0]

    # --- conversions ----------------------------------------------------------------------------
    def raw(self) -> np.ndarray:
        """The GGML bytes on the host: uint8 `(N, row_nbytes)`."""
        b = self._device.backend
        n, k = self.matrix_shape
        fn = getattr(b, "qraw", None)
        if fn is not None:
            return np.asarray(fn(self._native, self._qtype.name, (n, k)))
        return np.asarray(b.to_numpy(self._native, (n, row_nbytes(self._qtype, k)), uint8))

    def dequantize(self, dtype: DType | str = "float32") -> Tensor:
        """The values as a float Tensor of `shape` on the same device."""
        from .ops import qdequantize

        return qdequantize(self, as_dtype(dtype))

    def to(self, device: DeviceLike) -> QTensor:
        """This tensor on `device` (itself if already there; moves go through the raw bytes on the host)."""
        dev = as_device(device)
        if dev == self._device:
            return self
        return QTensor.from_raw(self.raw(), self._qtype, self._shape, dev)

    def __repr__(self) -> str:
        return (f"QTensor({self._qtype.name}, shape={list(self._shape)}, device={self._device}, "
                f"{self.nbytes / 2 ** 20:.2f} MiB)")


def _store(dev: Device, raw: np.ndarray, t: GGMLType, shape: tuple[int, int]) -> Any:
    b = dev.backend
    fn = getattr(b, "qstore", None)
    if fn is not None:
        return fn(np.ascontiguousarray(raw), t.name, shape)
    return b.from_numpy(np.ascontiguousarray(raw), uint8)


"""GGUF files (llama.cpp's format), read by candle itself: gguf-py is not needed.

`GGUFReader(path)` memory-maps the file and parses and validates the whole header on open
(metadata, tensor infos, data ranges); tensors are read on request. Quantized tensors dequantize
with the vectorised numpy kernels of `candle.io.ggml_quants` (bit-identical to gguf-py and ggml).

Metadata values map to Python as: integer scalars -> int, FLOAT32/FLOAT64 -> float, BOOL -> bool,
STRING -> str (invalid UTF-8 kept as surrogate escapes), arrays of numbers or bools -> 1-D numpy
arrays of the stored dtype (native byte order, `np.bool_` for BOOL), arrays of strings -> list[str],
arrays of arrays -> lists of those. `field_types[key]` keeps each value's GGUF type
(`(ARRAY, INT32)`...) so a writer can reproduce it.

    with GGUFReader("model.gguf") as r:
        vocab = r.metadata["tokenizer.ggml.tokens"]
        w = r.load("blk.0.attn_q.weight")            # float32 candle Tensor, row-major shape
        info = r.tensor_info("token_embd.weight")    # .shape, .ggml_type, .nbytes, .offset
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..device import Device
from ..dtype import DType, as_dtype
from ..errors import CandleError, DTypeError, FileFormatError, UnsupportedError
from ..ops.creation import from_numpy
from ..tensor import Tensor
from . import _dtypes
from ._atomic import PathLike
from ._gguf_parse import GGUFValueType, Header, TensorInfo, parse_header
from ._mmap import map_file
from .ggml_quants import DEQUANTIZE_TYPES, GGML_BLOCK_SIZES, PLAIN_NUMPY, GGMLType, dequantize

__all__ = ["GGMLType", "GGUFReader", "GGUFTensorInfo", "GGUFValueType"]

GGUFTensorInfo = TensorInfo
DeviceLike = Device | str | None

_PLAIN = frozenset(PLAIN_NUMPY) | {GGMLType.BF16}  # types stored element by element


class GGUFReader:
    """An open GGUF file: header parsed and validated on open, tensors memory-mapped on request.

    Attributes: `path`, `version` (2 or 3), `alignment`, `data_offset` (file offset of the data
    section), `metadata` (dict key -> value, see the module docs), `field_types` (key -> GGUF value
    types), `tensor_names` (file order). `device` is the default device of `load` (cpu if None).
    """

    def __init__(self, path: PathLike, device: DeviceLike = None):
        self.path = path
        self._where = f"'{os.fspath(path)}'"
        self._device = device
        buf, _ = map_file(path)
        self._buf: Any = buf
        h: Header = parse_header(buf, self._where)
        self.version: int = h.version
        self.alignment: int = h.alignment
        self.data_offset: int = h.data_start
        self.metadata: dict[str, Any] = h.metadata
        self.field_types: dict[str, tuple[GGUFValueType, ...]] = h.types
        self._tensors: dict[str, TensorInfo] = h.tensors

    # --- the header ------------------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        """Tensor names in file order."""
        return list(self._tensors)

    @property
    def tensors(self) -> list[TensorInfo]:
        """Every tensor info, in file order."""
        return list(self._tensors.values())

    def tensor_info(self, name: str) -> TensorInfo:
        """The info of tensor `name`: `.shape` (row-major), `.dims` (ne0-first), `.ggml_type`,
        `.nbytes`, `.offset` (in the data section), `.data_offset` (in the file)."""
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self._where}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    # --- the data --------------------------------------------------------------------------
    def raw(self, name: str) -> np.ndarray:
        """The stored bytes of tensor `name`: a 1-D uint8 zero-copy view of the (copy-on-write) map."""
        info = self.tensor_info(name)
        self._type_of(info)
        if self._buf is None:
            raise CandleError(f"{self._where}: the file is closed")
        assert info.nbytes is not None
        if info.nbytes == 0:
            return np.zeros(0, np.uint8)
        return np.frombuffer(self._buf, np.uint8, info.nbytes, info.data_offset)

    def numpy(self, name: str, dtype: DType | str | None = None) -> np.ndarray:
        """Tensor `name` as a numpy array of row-major shape. `dtype=None`: plain types (F32, F16, BF16,
        F64, I8...I64) as stored, a zero-copy view of the map; quantized types dequantized to float32.
        Otherwise cast to the candle dtype `dtype` (quantized types only to float dtypes)."""
        info = self.tensor_info(name)
        t = self._type_of(info)
        target = as_dtype(dtype) if dtype is not None else None
        if t not in _PLAIN and target is not None and not target.is_floating_point:
            raise DTypeError(f"{self._where}: tensor {name!r} is {t.name}, which loads as a float dtype, "
                             f"not {target.name}")
        raw = self.raw(name)
        if t is GGMLType.BF16:
            arr = _dtypes.bf16_from_bits(raw.view("<u2")).reshape(info.shape)
        elif t in PLAIN_NUMPY:
            arr = raw.view(PLAIN_NUMPY[t]).reshape(info.shape)
        elif t in DEQUANTIZE_TYPES:
            arr = dequantize(raw, t).reshape(info.shape)
        else:
            raise UnsupportedError(f"{self._where}: tensor {name!r} has GGML type {t.name}, which candle cannot "
                                   f"dequantize (supported: {', '.join(sorted(k.name for k in DEQUANTIZE_TYPES))})")
        if not arr.flags.aligned:
            arr = arr.copy()  # a plain tensor at an offset that is not a multiple of its itemsize
        if target is not None and arr.dtype != target.numpy:
            arr = arr.astype(target.numpy)
        return arr

    def load(self, name: str, dtype: DType | str | None = "float32", device: DeviceLike = None) -> Tensor:
        """Tensor `name` as a candle Tensor of row-major shape on `device` (default: the reader's, else
        cpu), dequantized or cast to `dtype`. F32/F16/BF16 stored as the requested dtype are zero-copy
        views of the map on the CPU. `dtype=None` keeps plain types as stored (I8/I16/I32 widen to
        int64) and gives float32 for quantized ones. Unknown type ids raise `FileFormatError`, known
        types without a dequantizer `UnsupportedError`."""
        arr = self.numpy(name, dtype)
        if not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        dev = device if device is not None else self._device
        return from_numpy(arr, device=dev if dev is not None else "cpu")

    def _type_of(self, info: TensorInfo) -> GGMLType:
        t = info.qtype
        if t is None:
            raise FileFormatError(f"{self._where}: tensor {info.name!r} has unknown GGML type id {info.type_id} "
                                  f"(known: {', '.join(k.name for k in GGML_BLOCK_SIZES)})")
        return t

    # --- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Drop this reader's reference to the mapping; arrays and tensors already loaded stay valid."""
        self._buf = None

    def __enter__(self) -> GGUFReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"GGUFReader({self._where}, version={self.version}, {len(self.metadata)} metadata keys, "
                f"{len(self._tensors)} tensors)")

"""safetensors files, read and written by candle itself (the `safetensors` package is not needed).

Loads memory-map the file: on the CPU a tensor is a zero-copy (copy-on-write) view of the mapped
pages, read from disk on first touch. Every header is validated before anything is allocated.

File dtypes map to candle dtypes as F64, F32, F16, BF16, I64, U8, U32 -> the same; these are widened
losslessly (a copy): I32, I16, I8 -> int64, U16 -> uint32, and BOOL -> uint8 (a view). Other dtypes
(U64, F8_*, F6_*, F4, C64) raise `FileFormatError` naming the tensor when it is loaded.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..device import Device
from ..dtype import DType, as_dtype, bfloat16, float16, float32, float64, int64, uint8, uint32
from ..errors import CandleError, DTypeError, FileFormatError
from ..ops.creation import from_numpy
from ..tensor import Tensor
from . import _dtypes
from ._atomic import PathLike, atomic_write
from ._mmap import map_file
from ._st_header import Header, TensorInfo, parse_header

__all__ = ["SafetensorsFile", "TensorSlice", "load_safetensors", "safe_open", "save_safetensors"]

#: loadable file dtypes -> numpy dtype of the stored bytes (BF16's bits are read as uint16).
_FILE_NUMPY = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "U8": "u1", "U32": "<u4",
               "I32": "<i4", "I16": "<i2", "I8": "i1", "U16": "<u2", "BOOL": "?"}
_LOADS_AS = {"F64": float64, "F32": float32, "F16": float16, "BF16": bfloat16, "I64": int64, "U8": uint8,
             "U32": uint32, "I32": int64, "I16": int64, "I8": int64, "U16": uint32, "BOOL": uint8}
_SAVES_AS = {float64: "F64", float32: "F32", float16: "F16", bfloat16: "BF16", int64: "I64", uint8: "U8",
             uint32: "U32"}

DeviceLike = Device | str | None
_WHOLE: Any = object()  # the index meaning "the whole tensor" (None is numpy's newaxis)


class TensorSlice:
    """A lazy tensor of an open file: index it (`sl[0:2, ::2]`) to read only that part."""

    def __init__(self, file: SafetensorsFile, info: TensorInfo):
        self._file, self._info = file, info

    @property
    def shape(self) -> tuple[int, ...]:
        return self._info.shape

    def get_shape(self) -> list[int]:
        return list(self._info.shape)

    def get_dtype(self) -> str:
        """The file's dtype string, e.g. `"BF16"`."""
        return self._info.dtype

    def __getitem__(self, index: Any) -> Tensor:
        return self._file._tensor(self._info, index, None, None)


class SafetensorsFile:
    """An open safetensors file (see `safe_open`). The header is parsed and validated on open;
    tensors are mapped on request."""

    def __init__(self, path: PathLike, device: DeviceLike = None):
        self.path = path
        self._where = f"'{os.fspath(path)}'"
        self._device = device
        buf, _ = map_file(path)
        self._buf: Any = buf
        self._header: Header = parse_header(buf, self._where)

    # --- the header ------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Tensor names, sorted."""
        return sorted(self._header.tensors)

    def metadata(self) -> dict[str, str] | None:
        """The `__metadata__` entry (None when the file has none, like `safetensors.safe_open`)."""
        m = self._header.metadata
        return None if m is None else dict(m)

    def info(self, name: str) -> TensorInfo:
        """The header entry of `name`: file dtype string, shape, byte range."""
        try:
            return self._header.tensors[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {self._where}") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.info(name).shape

    def dtype(self, name: str) -> DType:
        """The candle dtype `get_tensor(name)` returns; `FileFormatError` if it cannot be loaded."""
        info = self.info(name)
        d = _LOADS_AS.get(info.dtype)
        if d is None:
            raise FileFormatError(f"{self._where}: tensor {name!r} has dtype {info.dtype}, which candle cannot load "
                                  f"(supported: {', '.join(_LOADS_AS)})")
        return d

    def __contains__(self, name: object) -> bool:
        return name in self._header.tensors

    def __len__(self) -> int:
        return len(self._header.tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    # --- the data --------------------------------------------------------------------------
    def get_tensor(self, name: str, device: DeviceLike = None, dtype: DType | str | None = None) -> Tensor:
        """Tensor `name` on `device` (default: the file's device, else cpu), cast to `dtype` if given."""
        return self._tensor(self.info(name), _WHOLE, device, dtype)

    def get_slice(self, name: str) -> TensorSlice:
        return TensorSlice(self, self.info(name))

    def _tensor(self, info: TensorInfo, index: Any, device: DeviceLike, dtype: DType | str | None) -> Tensor:
        self.dtype(info.name)
        if self._buf is None:
            raise CandleError(f"{self._where}: the file is closed")
        raw = self._raw(info)
        if index is not _WHOLE:
            raw = np.asarray(raw[index])
        if info.dtype == "BF16":
            arr = _dtypes.bf16_from_bits(raw)
        else:
            arr = _dtypes.to_candle_array(raw, f"{self._where}: tensor {info.name!r}")
        dev = device if device is not None else self._device
        t = from_numpy(arr, device=dev if dev is not None else "cpu")
        return t if dtype is None else t.to(dtype=as_dtype(dtype))

    def _raw(self, info: TensorInfo) -> np.ndarray:
        """The stored bytes of `info` as a numpy array of its file dtype (a view of the mmap)."""
        dt = np.dtype(_FILE_NUMPY[info.dtype])
        if info.numel == 0:
            return np.zeros(info.shape, dt)
        offset = self._header.data_start + info.start
        raw = np.ndarray(info.shape, dt, buffer=self._buf, offset=offset)
        return raw if offset % dt.itemsize == 0 else raw.copy()  # copy to align a misaligned tensor

    # --- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        """Drop this reader's reference to the mapping; tensors already loaded stay valid."""
        self._buf = None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def safe_open(path: PathLike, framework: str | None = None, device: DeviceLike = None) -> SafetensorsFile:
    """Open a safetensors file lazily: `with safe_open(p) as f: w = f.get_tensor("w")`.

    Like `safetensors.safe_open`: `keys()`, `metadata()`, `get_tensor`, `get_slice`, plus the cheap
    header-only `shape(name)`, `dtype(name)` and `info(name)`. `framework` is accepted for drop-in
    compatibility and ignored; `device` is the default device of `get_tensor` (cpu if None).
    """
    return SafetensorsFile(path, device)


def load_safetensors(path: PathLike, device: DeviceLike = None) -> dict[str, Tensor]:
    """Every tensor of a safetensors file, by name (sorted), on `device` (cpu if None).

    On the CPU the tensors are zero-copy views of a copy-on-write memory map of the file (writing to
    them never changes the file). Stored dtypes outside candle's are widened losslessly: I32, I16, I8
    -> int64, U16 -> uint32, BOOL -> uint8; U64, F8_*, F6_*, F4 and C64 raise `FileFormatError`.
    """
    with safe_open(path, device=device) as f:
        for name in f.keys():
            f.dtype(name)  # refuse unloadable dtypes before loading anything
        return {name: f.get_tensor(name) for name in f.keys()}


def save_safetensors(tensors: Mapping[str, Tensor], path: PathLike, metadata: Mapping[str, str] | None = None) -> None:
    """Write `tensors` to `path` atomically (a temporary file beside it, then `os.replace`).

    Tensors may be non-contiguous and on any device (copied to host one at a time). The header is
    padded to 8 bytes with spaces and lists names sorted; the data is laid out like the reference
    implementation (larger dtypes first, then by name) so every tensor is aligned when mapped.
    """
    entries = _entries(tensors, path)
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = _check_metadata(metadata, path)
    order = sorted(entries, key=lambda n: (-tensors[n].dtype.itemsize, n))
    offset = 0
    for name in order:
        nbytes = tensors[name].numel() * tensors[name].dtype.itemsize
        entries[name]["data_offsets"] = [offset, offset + nbytes]
        offset += nbytes
    header.update((name, entries[name]) for name in sorted(entries))
    try:
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise FileFormatError(f"save_safetensors {path}: a name or metadata string is not valid unicode") from e
    raw += b" " * (-len(raw) % 8)
    with atomic_write(path) as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for name in order:
            f.write(_tensor_bytes(tensors[name]))


def _entries(tensors: Mapping[str, Tensor], path: PathLike) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise FileFormatError(f"save_safetensors {path}: invalid tensor name {name!r}")
        if not isinstance(t, Tensor):
            raise DTypeError(f"save_safetensors {path}: {name!r} is a {type(t).__name__}, expected a candle.Tensor")
        out[name] = {"dtype": _SAVES_AS[t.dtype], "shape": list(t.shape)}
    return out


def _check_metadata(metadata: Mapping[str, str], path: PathLike) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise FileFormatError(f"save_safetensors {path}: metadata must map strings to strings")
    return dict(metadata)


def _tensor_bytes(t: Tensor) -> memoryview:
    """The little-endian, C-ordered bytes of `t` (a host copy only where needed)."""
    arr = _dtypes.host_array(t)
    if t.dtype is bfloat16:
        arr = _dtypes.bf16_to_le_bits(arr)
    elif sys.byteorder != "little":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))

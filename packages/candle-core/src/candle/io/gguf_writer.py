"""Writing GGUF files (version 3): metadata of every value type, tensor infos, aligned data.

    write_gguf("out.gguf", {"general.architecture": "llama", "llama.block_count": 30, ...},
               {"token_embd.weight": qtensor, "output_norm.weight": np_array, ...})
    copy = GGUFWriter("out.gguf"); copy.add_metadata(reader.metadata, reader.field_types); ...; copy.write()

Tensors may be `candle.quantized.QTensor`s (written as their GGML blocks), candle Tensors or numpy arrays
(F32, F16, BF16, F64, I8, I16, I32, I64 as stored; other dtypes raise), or `(raw_bytes, ggml_type, shape)`
triples. Metadata values take their GGUF type from `types` (as `GGUFReader.field_types` gives them, so a
file read and written back keeps every type) or, when absent, from the Python value: bool -> BOOL,
int -> INT32 (INT64 / UINT64 beyond it), float -> FLOAT32, str -> STRING, numpy arrays -> ARRAY of their
dtype, lists -> ARRAY (of STRING, BOOL, INT32, FLOAT32 or nested arrays). The file is written atomically
(a temporary file renamed over the target), tensors streamed one by one.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

import numpy as np

from ..errors import DTypeError, ShapeError
from ._atomic import PathLike, atomic_write
from ._gguf_parse import MAX_DIMS, SCALAR_NUMPY, GGUFValueType
from .ggml_quants import GGML_BLOCK_SIZES, GGMLType, ggml_type

__all__ = ["GGUFWriter", "write_gguf"]

_MAGIC = b"GGUF"
_VERSION = 3
_DEFAULT_ALIGNMENT = 32
V = GGUFValueType
_NP_TO_GGML = {"float32": GGMLType.F32, "float16": GGMLType.F16, "bfloat16": GGMLType.BF16, "float64": GGMLType.F64,
               "int8": GGMLType.I8, "int16": GGMLType.I16, "int32": GGMLType.I32, "int64": GGMLType.I64}
_NP_TO_VALUE = {"uint8": V.UINT8, "int8": V.INT8, "uint16": V.UINT16, "int16": V.INT16, "uint32": V.UINT32,
                "int32": V.INT32, "float32": V.FLOAT32, "bool": V.BOOL, "uint64": V.UINT64, "int64": V.INT64,
                "float64": V.FLOAT64}
_INT_RANGES = {V.UINT8: (0, 255), V.INT8: (-128, 127), V.UINT16: (0, 65535), V.INT16: (-32768, 32767),
               V.UINT32: (0, 2**32 - 1), V.INT32: (-2**31, 2**31 - 1), V.UINT64: (0, 2**64 - 1),
               V.INT64: (-2**63, 2**63 - 1)}


def _string(s: str) -> bytes:
    b = s.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(b)) + b


def _infer(value: Any) -> tuple[GGUFValueType, ...]:
    """The GGUF type of a Python value without a given type."""
    if isinstance(value, (bool, np.bool_)):
        return (V.BOOL,)
    if isinstance(value, (int, np.integer)):
        v = int(value)
        return (V.INT32,) if -2**31 <= v < 2**31 else (V.INT64,) if v < 2**63 else (V.UINT64,)
    if isinstance(value, (float, np.floating)):
        return (V.FLOAT32,)
    if isinstance(value, str):
        return (V.STRING,)
    if isinstance(value, np.ndarray):
        t = _NP_TO_VALUE.get(value.dtype.name)
        if t is None or value.ndim != 1:
            raise DTypeError(f"GGUF metadata: cannot store a numpy array of dtype {value.dtype} and shape "
                             f"{list(value.shape)} (1-d numeric or bool arrays only)")
        return (V.ARRAY, t)
    if isinstance(value, (list, tuple)):
        if not value:
            return (V.ARRAY, V.INT32)
        return (V.ARRAY, *_infer(value[0]))
    raise DTypeError(f"GGUF metadata: cannot store a value of type {type(value).__name__}")


def _encode(value: Any, types: tuple[GGUFValueType, ...], key: str) -> bytes:
    """The bytes of `value` stored as `types` (without the leading type tag)."""
    t = types[0]
    if t is V.STRING:
        if not isinstance(value, str):
            raise DTypeError(f"GGUF metadata {key!r}: STRING value must be a str, got {type(value).__name__}")
        return _string(value)
    if t is V.ARRAY:
        if len(types) < 2:
            raise DTypeError(f"GGUF metadata {key!r}: ARRAY needs an element type")
        et = types[1]
        head = struct.pack("<IQ", int(et), len(value))
        if et in (V.STRING, V.ARRAY):
            return head + b"".join(_encode(v, types[1:], key) for v in value)
        arr = np.asarray(value)
        if et is V.BOOL:
            arr = arr.astype(bool)
        return head + arr.astype(SCALAR_NUMPY[et]).tobytes()
    if t in _INT_RANGES:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise DTypeError(f"GGUF metadata {key!r}: {t.name} value must be an int, got {type(value).__name__}")
        lo, hi = _INT_RANGES[t]
        if not lo <= int(value) <= hi:
            raise DTypeError(f"GGUF metadata {key!r}: {value} does not fit {t.name}")
    return np.asarray(value).astype(SCALAR_NUMPY[t]).tobytes()


class _Tensor:
    __slots__ = ("name", "qtype", "shape", "data")

    def __init__(self, name: str, qtype: GGMLType, shape: tuple[int, ...], data: Any) -> None:
        self.name, self.qtype, self.shape, self.data = name, qtype, shape, data

    @property
    def nbytes(self) -> int:
        bs, ts = GGML_BLOCK_SIZES[self.qtype]
        n = 1
        for s in self.shape:
            n *= s
        return n // bs * ts

    def raw(self) -> np.ndarray:
        d = self.data
        if callable(d):
            d = d()
        return np.ascontiguousarray(d).view(np.uint8).reshape(-1)


class GGUFWriter:
    """Collects metadata and tensors, then `write()`s the file in one atomic step."""

    def __init__(self, path: PathLike, alignment: int = _DEFAULT_ALIGNMENT) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"GGUFWriter: alignment {alignment} is not a power of two")
        self.path = path
        self.alignment = alignment
        self._meta: dict[str, tuple[Any, tuple[GGUFValueType, ...]]] = {}
        self._tensors: dict[str, _Tensor] = {}

    # --- metadata -------------------------------------------------------------------------------
    def add(self, key: str, value: Any, types: Iterable[GGUFValueType] | None = None) -> None:
        """One metadata key (types as `GGUFReader.field_types[key]`, else inferred from the value)."""
        if key == "general.alignment":
            return  # written from `alignment`
        tt = tuple(GGUFValueType(t) for t in types) if types is not None else _infer(value)
        _encode(value, tt, key)  # validate now, not halfway through the file
        self._meta[key] = (value, tt)

    def add_metadata(self, metadata: Mapping[str, Any], types: Mapping[str, Iterable[GGUFValueType]] | None = None
                     ) -> None:
        """Many keys at once (e.g. a reader's `metadata` and `field_types`)."""
        for k, v in metadata.items():
            self.add(k, v, types.get(k) if types is not None else None)

    # --- tensors --------------------------------------------------------------------------------
    def add_tensor(self, name: str, tensor: Any) -> None:
        """A QTensor, a candle Tensor, a numpy array, or `(raw uint8 bytes, ggml type, row-major shape)`."""
        if name in self._tensors:
            raise ValueError(f"GGUFWriter: duplicate tensor name {name!r}")
        from ..quantized.qtensor import QTensor
        from ..tensor import Tensor

        if isinstance(tensor, QTensor):
            t = _Tensor(name, tensor.qtype, tensor.shape, tensor.raw)
        elif isinstance(tensor, tuple):
            raw, qt, shape = tensor
            t = _Tensor(name, ggml_type(qt), tuple(int(s) for s in shape), np.asarray(raw, np.uint8))
            if np.asarray(raw).size != t.nbytes:
                raise ShapeError(f"GGUFWriter: tensor {name!r}: {t.qtype.name} {list(t.shape)} takes {t.nbytes} "
                                 f"bytes, got {np.asarray(raw).size}")
        else:
            arr = np.asarray(tensor.numpy()).reshape(tensor.shape) if isinstance(tensor, Tensor) else np.asarray(tensor)
            qt = _NP_TO_GGML.get(arr.dtype.name)
            if qt is None:
                raise DTypeError(f"GGUFWriter: tensor {name!r} has dtype {arr.dtype}, which GGUF cannot store")
            arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
            shape = tuple(arr.shape) if arr.ndim else (1,)
            t = _Tensor(name, qt, shape, arr)
        if len(t.shape) > MAX_DIMS:
            raise ShapeError(f"GGUFWriter: tensor {name!r} has {len(t.shape)} dims (GGUF allows {MAX_DIMS})")
        bs, _ = GGML_BLOCK_SIZES[t.qtype]
        if t.shape and t.shape[-1] % bs:
            raise ShapeError(f"GGUFWriter: tensor {name!r}: last dim {t.shape[-1]} is not a multiple of the "
                             f"{t.qtype.name} block size {bs}")
        self._tensors[name] = t

    # --- writing --------------------------------------------------------------------------------
    def _header(self) -> bytes:
        meta = dict(self._meta)
        if self.alignment != _DEFAULT_ALIGNMENT:
            meta["general.alignment"] = (self.alignment, (V.UINT32,))
        parts = [_MAGIC, struct.pack("<IQQ", _VERSION, len(self._tensors), len(meta))]
        for k, (v, tt) in meta.items():
            parts += [_string(k), struct.pack("<I", int(tt[0])), _encode(v, tt, k)]
        offset = 0
        for t in self._tensors.values():
            dims = tuple(reversed(t.shape))
            parts += [_string(t.name), struct.pack(f"<I{len(dims)}Q", len(dims), *dims),
                      struct.pack("<IQ", int(t.qtype), offset)]
            offset += -(-t.nbytes // self.alignment) * self.alignment
        return b"".join(parts)

    def _pad(self, f: BinaryIO, pos: int) -> int:
        pad = -pos % self.alignment
        f.write(b"\0" * pad)
        return pos + pad

    def write(self) -> None:
        """Write the file (atomically: the target is replaced only when everything was written)."""
        head = self._header()
        with atomic_write(self.path) as f:
            f.write(head)
            pos = self._pad(f, len(head))
            for t in self._tensors.values():
                raw = t.raw()
                if raw.size != t.nbytes:
                    raise ShapeError(f"GGUFWriter: tensor {t.name!r} gave {raw.size} bytes, expected {t.nbytes}")
                f.write(raw.tobytes())
                pos = self._pad(f, pos + raw.size)


def write_gguf(path: PathLike, metadata: Mapping[str, Any], tensors: Mapping[str, Any],
               types: Mapping[str, Iterable[GGUFValueType]] | None = None, alignment: int = _DEFAULT_ALIGNMENT
               ) -> None:
    """Write a GGUF file with `metadata` (typed by `types` where given) and `tensors` (see the module docs)."""
    w = GGUFWriter(path, alignment)
    w.add_metadata(metadata, types)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write()

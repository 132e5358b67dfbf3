"""The GGUF header: parsed and checked completely, from a memory map, before any tensor is touched.

Layout (little-endian, versions 2 and 3): magic `GGUF`, u32 version, u64 tensor count, u64 key/value
count, the key/values (u64-length-prefixed UTF-8 key, u32 value type, value), the tensor infos
(name, u32 n_dims, n_dims u64 dims ne0-first, u32 GGML type, u64 offset into the data section), then
padding to `general.alignment` (default 32) and the data section.

Nothing read from the file is trusted: every count and length is checked against the bytes left in
the file before anything is allocated from it, and every problem is a `FileFormatError` naming the
file. The value-type tables here are meant to be shared with a GGUF writer.
"""

from __future__ import annotations

import math
import struct
from array import array
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

import numpy as np

from ..errors import FileFormatError
from .ggml_quants import GGML_BLOCK_SIZES, GGMLType

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8  # arrays of arrays nest at most this deep
INT64_MAX = (1 << 63) - 1


class GGUFValueType(IntEnum):
    """The type tags of GGUF metadata values."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


#: scalar value types -> little-endian numpy dtype of their stored bytes.
SCALAR_NUMPY: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "u1", GGUFValueType.INT8: "i1", GGUFValueType.UINT16: "<u2", GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4", GGUFValueType.FLOAT32: "<f4", GGUFValueType.BOOL: "u1",
    GGUFValueType.UINT64: "<u8", GGUFValueType.INT64: "<i8", GGUFValueType.FLOAT64: "<f8",
}
#: scalar value types -> `struct` format of one value.
SCALAR_STRUCT: dict[GGUFValueType, struct.Struct] = {
    GGUFValueType.UINT8: struct.Struct("<B"), GGUFValueType.INT8: struct.Struct("<b"),
    GGUFValueType.UINT16: struct.Struct("<H"), GGUFValueType.INT16: struct.Struct("<h"),
    GGUFValueType.UINT32: struct.Struct("<I"), GGUFValueType.INT32: struct.Struct("<i"),
    GGUFValueType.FLOAT32: struct.Struct("<f"), GGUFValueType.BOOL: struct.Struct("<B"),
    GGUFValueType.UINT64: struct.Struct("<Q"), GGUFValueType.INT64: struct.Struct("<q"),
    GGUFValueType.FLOAT64: struct.Struct("<d"),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MIN_VALUE_BYTES = {**{t: s.size for t, s in SCALAR_STRUCT.items()}, GGUFValueType.STRING: 8,
                    GGUFValueType.ARRAY: 12}
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, a one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, type, offset


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file.

    `dims` are ne0-first as stored (`shape` is them reversed: row-major, as torch and HF use);
    `type_id` is the raw GGML type id; `offset` is relative to the data section as stored, and
    `data_offset` the absolute file offset; `nbytes` is None when the type is unknown (the tensor
    then cannot be read).
    """

    name: str
    dims: tuple[int, ...]
    type_id: int
    offset: int
    nbytes: int | None
    data_offset: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        """Row-major shape: the dims reversed (`[576, 49152]` in the file -> `(49152, 576)`)."""
        return self.dims[::-1]

    @property
    def qtype(self) -> GGMLType | None:
        """The `GGMLType`, or None for an id this reader does not know."""
        return GGMLType(self.type_id) if self.type_id in GGML_BLOCK_SIZES.keys() else None

    @property
    def ggml_type(self) -> str:
        """The GGML type name, e.g. `"Q4_K"` (`"UNKNOWN(99)"` for an unknown id)."""
        t = self.qtype
        return t.name if t is not None else f"UNKNOWN({self.type_id})"

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)


@dataclass(frozen=True)
class Header:
    """A validated GGUF header; `data_start` is the file offset of the data section."""

    version: int
    metadata: dict[str, Any]
    types: dict[str, tuple[GGUFValueType, ...]]
    tensors: dict[str, TensorInfo]
    alignment: int
    data_start: int


class _Parser:
    """A cursor over the mapped bytes; every read is bounds-checked."""

    def __init__(self, buf: Any, where: str):
        self.buf, self.size, self.where, self.pos = buf, len(buf), where, 0

    def fail(self, problem: str) -> FileFormatError:
        return FileFormatError(f"invalid GGUF file {self.where}: {problem}")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"truncated: {what} at offset {self.pos} needs {n} bytes, "
                            f"{self.size - self.pos} left in the file")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        s = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return s

    def name(self, what: str) -> str:
        """A key or tensor name: strict UTF-8."""
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} {_short(raw)} is not valid UTF-8 ({e.reason})") from None

    def value_type(self, what: str) -> GGUFValueType:
        t = self.u32(f"value type of {what}")
        try:
            return GGUFValueType(t)
        except ValueError:
            raise self.fail(f"{what}: unknown value type {t}") from None

    # --- values ------------------------------------------------------------------------------
    def value(self, t: GGUFValueType, what: str, depth: int = 0) -> tuple[Any, tuple[GGUFValueType, ...]]:
        """A value of type `t` and its full type (`(ARRAY, <element type>...)` for arrays)."""
        if t is GGUFValueType.STRING:
            return _decode(self.raw_string(what)), (t,)
        if t is GGUFValueType.ARRAY:
            return self.array(what, depth)
        s = SCALAR_STRUCT[t]
        self.need(s.size, what)
        (v,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return (v != 0 if t is GGUFValueType.BOOL else v), (t,)

    def array(self, what: str, depth: int) -> tuple[Any, tuple[GGUFValueType, ...]]:
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"{what}: arrays nested more than {MAX_ARRAY_DEPTH} deep")
        et = self.value_type(f"elements of {what}")
        count = self.u64(f"element count of {what}")
        if count > (self.size - self.pos) // _MIN_VALUE_BYTES[et]:
            raise self.fail(f"{what}: array of {count} {et.name} values cannot fit in the "
                            f"{self.size - self.pos} bytes left in the file")
        if et is GGUFValueType.STRING:
            return self.string_array(count, what), (GGUFValueType.ARRAY, et)
        if et is GGUFValueType.ARRAY:
            items, sub = [], (et,)
            for i in range(count):
                v, t = self.value(et, f"{what}[{i}]", depth + 1)
                items.append(v)
                sub = t if i == 0 else sub  # the type of the first item stands for all (as in gguf-py)
            return items, (GGUFValueType.ARRAY, *sub)
        dt = np.dtype(SCALAR_NUMPY[et])
        arr = np.frombuffer(self.buf, dt, count, self.pos)
        self.pos += count * dt.itemsize
        arr = (arr != 0) if et is GGUFValueType.BOOL else arr.astype(dt.newbyteorder("="))  # a copy
        return arr, (GGUFValueType.ARRAY, et)

    def string_array(self, count: int, what: str) -> list[str]:
        """`count` length-prefixed strings: one scan for the lengths, then one bulk UTF-8 decode."""
        if count == 0:
            return []
        buf, start, size = self.buf, self.pos, self.size
        unpack = _U64.unpack_from
        ends = array("q", bytes(8 * count))  # 8 bytes an entry, not a Python int each
        p = start
        try:
            for i in range(count):
                p += 8 + unpack(buf, p)[0]
                ends[i] = p
        except (struct.error, OverflowError):
            raise self.fail(f"truncated: {what} runs past the end of the file") from None
        if p > size:
            raise self.fail(f"truncated: {what} runs past the end of the file ({p} > {size} bytes)")
        self.pos = p
        return _split_strings(buf, start, ends)

    # --- the whole header --------------------------------------------------------------------
    def header(self) -> Header:
        if self.size < 4 or bytes(self.buf[:4]) != MAGIC:
            raise self.fail(f"bad magic {_short(bytes(self.buf[:4]))} (expected {MAGIC!r})")
        self.pos = 4
        version = self.u32("version")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if version & 0xFFFF == 0 and swapped in SUPPORTED_VERSIONS:
                raise self.fail(f"big-endian GGUF (version {swapped}) is not supported")
            if version == 1:
                raise self.fail("GGUF version 1 is not supported (re-convert the file to version 3)")
            raise self.fail(f"unsupported GGUF version {version} (supported: 2, 3)")
        n_tensors = self.u64("tensor count")
        n_kv = self.u64("metadata key/value count")
        left = self.size - self.pos
        if n_kv > left // _MIN_KV_BYTES:
            raise self.fail(f"{n_kv} metadata key/values cannot fit in the {left} bytes left in the file")
        if n_tensors > left // _MIN_TENSOR_INFO_BYTES:
            raise self.fail(f"{n_tensors} tensor infos cannot fit in the {left} bytes left in the file")

        metadata: dict[str, Any] = {}
        types: dict[str, tuple[GGUFValueType, ...]] = {}
        for i in range(n_kv):
            key = self.name(f"metadata key #{i}")
            if key in metadata:
                raise self.fail(f"duplicate metadata key {_short(key)}")
            what = f"metadata {_short(key)}"
            metadata[key], types[key] = self.value(self.value_type(what), what)

        alignment = DEFAULT_ALIGNMENT
        if "general.alignment" in metadata:
            alignment = metadata["general.alignment"]
            if types["general.alignment"] != (GGUFValueType.UINT32,):
                raise self.fail(f"general.alignment must be a UINT32, got {types['general.alignment'][0].name}")
            if alignment == 0 or alignment & (alignment - 1):
                raise self.fail(f"general.alignment {alignment} is not a power of two")

        infos = [self.tensor_info(i) for i in range(n_tensors)]
        data_start = -(-self.pos // alignment) * alignment
        tensors: dict[str, TensorInfo] = {}
        for info in infos:
            if info.name in tensors:
                raise self.fail(f"duplicate tensor name {_short(info.name)}")
            tensors[info.name] = replace(info, data_offset=data_start + info.offset)
        self.check_data(tensors, alignment, data_start)
        return Header(version, metadata, types, tensors, alignment, data_start)

    def tensor_info(self, i: int) -> TensorInfo:
        name = self.name(f"name of tensor #{i}")
        what = f"tensor {_short(name)}"
        n_dims = self.u32(f"n_dims of {what}")
        if n_dims > MAX_DIMS:
            raise self.fail(f"{what} has {n_dims} dimensions (at most {MAX_DIMS})")
        self.need(8 * n_dims, f"dims of {what}")
        dims = struct.unpack_from(f"<{n_dims}Q", self.buf, self.pos)
        self.pos += 8 * n_dims
        type_id = self.u32(f"type of {what}")
        offset = self.u64(f"data offset of {what}")
        if any(d > INT64_MAX for d in dims):
            raise self.fail(f"{what} has dims {list(dims)} beyond the int64 range")
        nbytes = None
        if type_id in GGML_BLOCK_SIZES.keys():
            t = GGMLType(type_id)
            bs, ts = GGML_BLOCK_SIZES[t]
            ne0 = dims[0] if dims else 1  # no dims: one element
            if ne0 % bs:
                raise self.fail(f"{what}: first dimension {ne0} is not a multiple of the {t.name} block size {bs}")
            nbytes = math.prod(dims) // bs * ts
        return TensorInfo(name, tuple(dims), type_id, offset, nbytes)

    def check_data(self, tensors: dict[str, TensorInfo], alignment: int, data_start: int) -> None:
        """Every tensor lies, aligned, inside the data section, and no two overlap."""
        data_len = self.size - data_start
        spans = []
        for info in tensors.values():
            what = f"tensor {_short(info.name)}"
            if info.offset % alignment:
                raise self.fail(f"{what}: data offset {info.offset} is not a multiple of the alignment {alignment}")
            if info.nbytes is None:
                if info.offset > max(data_len, 0):
                    raise self.fail(f"{what}: data offset {info.offset} lies beyond the end of the file")
                continue
            if info.offset + info.nbytes > max(data_len, 0):
                raise self.fail(f"{what}: data [{info.offset}, {info.offset + info.nbytes}) lies beyond the "
                                f"data section ({max(data_len, 0)} bytes)")
            if info.nbytes:
                spans.append((info.offset, info.offset + info.nbytes, info.name))
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise self.fail(f"the data of tensors {_short(a)} and {_short(b)} overlap")


def _short(value: Any, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def _decode(raw: bytes) -> str:
    """String values are UTF-8; invalid bytes survive as surrogate escapes (`s.encode("utf-8",
    "surrogateescape")` gives them back) rather than failing the whole file."""
    return raw.decode("utf-8", "surrogateescape")


def _split_strings(buf: Any, start: int, ends: array[int]) -> list[str]:
    """The strings whose bytes end at `ends` (each after an 8-byte length) in `buf` from `start`.

    Removes the length prefixes with one numpy mask, leaving a NUL before each string, decodes all
    of it at once and splits at the NULs. Strings holding NULs themselves go the slow way.
    """
    count = len(ends)
    total = ends[-1] - start
    region = np.frombuffer(buf, np.uint8, total, start)
    e = np.frombuffer(ends, np.int64) - start
    prefix = np.empty(count, np.int64)  # where each length prefix starts
    prefix[0] = 0
    prefix[1:] = e[:-1]
    keep = np.ones(total, bool)
    for k in range(7):  # drop 7 of the 8 prefix bytes...
        keep[prefix + k] = False
    joined = region[keep]
    joined[prefix - 7 * np.arange(count)] = 0  # ...and turn the 8th into the separator
    if int(np.count_nonzero(joined == 0)) == count:
        return joined.tobytes().decode("utf-8", "surrogateescape").split("\x00")[1:]
    mv = memoryview(buf)
    starts = (prefix + start + 8).tolist()
    return [_decode(bytes(mv[a:b])) for a, b in zip(starts, ends)]


def parse_header(buf: Any, where: str) -> Header:
    """Parse and validate the GGUF header of `buf` (an mmap or bytes); errors are `FileFormatError`s
    naming `where` (the file)."""
    return _Parser(buf, where).header()

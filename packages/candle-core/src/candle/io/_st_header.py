"""The safetensors header: parsed and checked completely before any tensor is touched.

Layout: 8 bytes little-endian header length N, N bytes of UTF-8 JSON, then the data section.
Nothing read from the file is trusted: every length and offset is checked against the file size.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import FileFormatError

MAX_HEADER_BYTES = 100_000_000  # the limit of the reference implementation
MAX_NDIM = 64

_Fail = Callable[[str], FileFormatError]

#: bits per element of every dtype the format defines (loadable or not).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16,
    "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "C64": 64, "I64": 64, "U64": 64, "F64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


@dataclass(frozen=True)
class TensorInfo:
    """One header entry: the file's dtype string, the shape and the byte range in the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A validated header; `data_start` is the file offset of the data section."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] | None
    data_start: int


def _short(value: Any, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {_short(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_header(buf: Any, where: str) -> Header:
    """Parse and validate the header of the safetensors bytes `buf` (an mmap or bytes); errors are
    `FileFormatError`s that start with `where` (the file name)."""

    def fail(problem: str) -> FileFormatError:
        return FileFormatError(f"invalid safetensors file {where}: {problem}")

    size = len(buf)
    if size < 8:
        raise fail(f"file is {size} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(buf[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise fail(f"header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    if 8 + n > size:
        raise fail(f"header length {n} runs past the end of the file ({size} bytes)")
    try:
        text = bytes(buf[8:8 + n]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(f"header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise fail(f"header is not valid JSON ({str(e)[:100]})") from None
    if not isinstance(obj, dict):
        raise fail(f"header is not a JSON object (got {type(obj).__name__})")
    metadata = obj.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise fail("__metadata__ is not a JSON object mapping strings to strings")
    data_len = size - 8 - n
    tensors = {name: _entry(name, entry, data_len, fail) for name, entry in obj.items()}
    _check_overlaps(tensors.values(), fail)
    return Header(tensors, metadata, 8 + n)


def _entry(name: str, entry: Any, data_len: int, fail: _Fail) -> TensorInfo:
    what = f"tensor {_short(name)}"
    if not isinstance(entry, dict):
        raise fail(f"{what}: entry is not a JSON object")
    missing = [k for k in ("dtype", "shape", "data_offsets") if k not in entry]
    if missing:
        raise fail(f"{what}: entry lacks {', '.join(missing)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise fail(f"{what}: unknown dtype {_short(dtype)}")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise fail(f"{what}: shape must be a list of at most {MAX_NDIM} integers, got {_short(shape)}")
    if not all(_is_int(s) and s >= 0 for s in shape):
        raise fail(f"{what}: shape entries must be non-negative integers, got {_short(shape)}")
    if math.prod(s for s in shape if s) * max(DTYPE_BITS[dtype] // 8, 1) > sys.maxsize:
        raise fail(f"{what}: shape {_short(shape)} is too large to address")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        raise fail(f"{what}: data_offsets must be two non-negative integers, got {_short(offsets)}")
    start, end = offsets
    if end < start:
        raise fail(f"{what}: data_offsets end {end} is before start {start}")
    if end > data_len:
        raise fail(f"{what}: data_offsets end {end} lies beyond the data section ({data_len} bytes)")
    numel = math.prod(shape)
    expected = (numel * DTYPE_BITS[dtype] + 7) // 8
    if end - start != expected:
        raise fail(f"{what}: data_offsets span {end - start} bytes but shape {_short(shape)} of {dtype} "
                   f"needs {expected}")
    return TensorInfo(name, dtype, tuple(shape), start, end)


def _check_overlaps(infos: Iterable[TensorInfo], fail: _Fail) -> None:
    spans = sorted((i for i in infos if i.end > i.start), key=lambda i: (i.start, i.end))
    for prev, cur in zip(spans, spans[1:]):
        if cur.start < prev.end:
            raise fail(f"tensors {_short(prev.name)} [{prev.start}, {prev.end}) and {_short(cur.name)} "
                       f"[{cur.start}, {cur.end}) overlap")

"""The .npy format through numpy's own header functions, bounded and checked before any allocation.

bfloat16 has no portable .npy dtype, so candle stores it as its raw uint16 bits under the one-field
structured dtype `[("bfloat16", "<u2")]` (`BF16_MARKER`): any numpy reads it without pickle
(`a["bfloat16"]` gives the bits) and candle's loaders turn it back into bfloat16.
"""

from __future__ import annotations

import io
import math
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..errors import FileFormatError
from . import _dtypes

BF16_MARKER = np.dtype([("bfloat16", "<u2")])
MAX_HEADER_BYTES = 65536
MAX_NDIM = 64
_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class NpyHeader:
    """A validated .npy header; `offset` is where the data starts, `nbytes` its exact size."""

    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    offset: int
    nbytes: int


def read_header(f: BinaryIO, where: str) -> NpyHeader:
    """Read and check the header of the .npy stream `f` (left just after it); never reads more than
    `MAX_HEADER_BYTES`. Object dtypes (pickled data) are refused."""
    prefix = f.read(8)
    if len(prefix) < 8 or prefix[:6] != _MAGIC:
        raise FileFormatError(f"{where}: not a .npy file (bad magic string)")
    version = (prefix[6], prefix[7])
    if version not in ((1, 0), (2, 0)):
        raise FileFormatError(f"{where}: unsupported .npy format version {version[0]}.{version[1]}")
    size_field = f.read(2 if version == (1, 0) else 4)
    hlen = int.from_bytes(size_field, "little")
    if len(size_field) < (2 if version == (1, 0) else 4) or hlen > MAX_HEADER_BYTES:
        raise FileFormatError(f"{where}: .npy header length {hlen} is truncated or over {MAX_HEADER_BYTES} bytes")
    text = f.read(hlen)
    if len(text) != hlen:
        raise FileFormatError(f"{where}: truncated .npy header ({len(text)} of {hlen} bytes)")
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = reader(io.BytesIO(size_field + text), max_header_size=MAX_HEADER_BYTES)
    except Exception as e:  # numpy raises ValueError, TypeError, SyntaxError... on hostile headers
        raise FileFormatError(f"{where}: malformed .npy header ({str(e)[:120]})") from None
    if dtype.hasobject:
        raise FileFormatError(f"{where}: the array holds Python objects (pickled data), which candle refuses")
    if dtype.itemsize == 0:
        raise FileFormatError(f"{where}: zero-size dtype {dtype} is not supported")
    if len(shape) > MAX_NDIM or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise FileFormatError(f"{where}: invalid shape {str(shape)[:80]} in .npy header")
    if math.prod(s for s in shape if s) * dtype.itemsize > sys.maxsize:
        raise FileFormatError(f"{where}: shape {str(shape)[:80]} is too large to address")
    return NpyHeader(tuple(shape), bool(fortran), dtype, len(prefix) + len(size_field) + hlen,
                     math.prod(shape) * dtype.itemsize)


def array_from_buffer(h: NpyHeader, buf: Any, where: str) -> np.ndarray:
    """The array of header `h` over `buf` (zero-copy), converted to a dtype candle holds."""
    if h.nbytes == 0:
        arr = np.zeros(h.shape, h.dtype)
    else:
        arr = np.ndarray(h.shape, h.dtype, buffer=buf, offset=h.offset, order="F" if h.fortran_order else "C")
    return to_candle(arr, where)


def to_candle(arr: np.ndarray, where: str) -> np.ndarray:
    """Undo the bfloat16 marker; map other dtypes with `_dtypes.to_candle_array`."""
    if arr.dtype.names is not None:
        if arr.dtype.names == ("bfloat16",) and arr.dtype.itemsize == 2 and arr.dtype["bfloat16"].kind == "u":
            return _dtypes.bf16_from_bits(arr.view(arr.dtype["bfloat16"]))
        raise FileFormatError(f"{where}: structured dtype {str(arr.dtype)[:80]} has no candle equivalent")
    return _dtypes.to_candle_array(arr, where)


def from_candle(arr: np.ndarray, is_bf16: bool) -> np.ndarray:
    """The array to write for a host array of a candle tensor (bfloat16 as the marker dtype)."""
    return _dtypes.bf16_to_le_bits(arr).view(BF16_MARKER) if is_bf16 else arr

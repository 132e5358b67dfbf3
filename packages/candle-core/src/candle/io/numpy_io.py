"""numpy's .npy and .npz files, never with pickle.

bfloat16 tensors are stored as raw uint16 bits under the structured dtype `[("bfloat16", "<u2")]`
(in .npy and in each .npz member alike) and restored on load; see `candle.io._npy`. Loaded dtypes
map like `candle.from_numpy`, widening losslessly (bool -> uint8, int8/16/32 -> int64,
uint16 -> uint32); uint64, complex, strings, objects and other structured dtypes raise
`FileFormatError`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np

from ..device import Device
from ..dtype import bfloat16
from ..errors import DTypeError, FileFormatError
from ..ops.creation import from_numpy
from ..tensor import Tensor
from . import _dtypes, _npy
from ._atomic import PathLike, atomic_write
from ._mmap import map_file

__all__ = ["load_npy", "load_npz", "save_npy", "save_npz"]

DeviceLike = Device | str | None
_DEFLATE_MAX_RATIO = 1100  # deflate cannot expand more than ~1032x; a bigger claim is a zip bomb
_CHUNK = 1 << 24


def _host(t: Tensor, where: str) -> np.ndarray:
    if not isinstance(t, Tensor):
        raise DTypeError(f"{where}: expected a candle.Tensor, got {type(t).__name__}")
    return _npy.from_candle(_dtypes.host_array(t), t.dtype is bfloat16)


def save_npy(tensor: Tensor, path: PathLike) -> None:
    """Write `tensor` to the .npy file `path` (used as given, atomically; bfloat16 as the marker dtype)."""
    arr = _host(tensor, f"save_npy '{os.fspath(path)}'")
    with atomic_write(path) as f:
        np.lib.format.write_array(f, arr, allow_pickle=False)


def load_npy(path: PathLike, device: DeviceLike = None) -> Tensor:
    """The tensor in the .npy file `path`, on `device` (cpu if None; there a zero-copy, copy-on-write
    memory map when the dtype needs no widening)."""
    where = f"'{os.fspath(path)}'"
    with open(path, "rb") as f:
        header = _npy.read_header(f, where)
    buf, size = map_file(path)
    if header.offset + header.nbytes > size:
        raise FileFormatError(f"{where}: .npy data is truncated: shape {list(header.shape)} of {header.dtype} "
                              f"needs {header.nbytes} bytes, the file holds {max(size - header.offset, 0)}")
    return from_numpy(_npy.array_from_buffer(header, buf, where), device=device or "cpu")


def save_npz(tensors: Mapping[str, Tensor], path: PathLike, compress: bool = False) -> None:
    """Write `tensors` to the .npz file `path` (members `<name>.npy`, deflated if `compress`), atomically."""
    where = f"save_npz '{os.fspath(path)}'"
    for name in tensors:
        if not isinstance(name, str) or not name:
            raise FileFormatError(f"{where}: invalid array name {name!r}")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", compression=method, allowZip64=True) as zf:
        for name, t in tensors.items():
            arr = _host(t, f"{where}: {name!r}")
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, arr, allow_pickle=False)


def load_npz(path: PathLike, device: DeviceLike = None) -> dict[str, Tensor]:
    """Every array of the .npz file `path`, by name (member name less `.npy`), on `device` (cpu if None).

    The archive is checked before reading: only stored or deflated `.npy` members, no duplicates,
    no overlapping members, sizes within deflate's limits; each member's declared size must match
    its .npy header, and CRCs are verified.
    """
    where = f"'{os.fspath(path)}'"
    with open(path, "rb") as f:
        archive_size = os.fstat(f.fileno()).st_size
        try:
            zf = zipfile.ZipFile(f)
            infos = zf.infolist()
        except Exception as e:  # BadZipFile, LargeZipFile, ValueError, EOFError, struct.error...
            raise FileFormatError(f"{where}: not a valid .npz (zip) archive ({str(e)[:120]})") from None
        with zf:
            _check_members(infos, archive_size, where)
            arrays = {zi.filename[:-4]: _read_member(zf, zi, f"{where} member {zi.filename!r}") for zi in infos}
    return {name: from_numpy(arr, device=device or "cpu") for name, arr in arrays.items()}


def _check_members(infos: list[zipfile.ZipInfo], archive_size: int, where: str) -> None:
    names = [zi.filename for zi in infos]
    if len(set(names)) != len(names):
        raise FileFormatError(f"{where}: duplicate member names in .npz archive")
    for zi in infos:
        what = f"{where} member {zi.filename!r}"
        if not zi.filename.endswith(".npy"):
            raise FileFormatError(f"{what}: not a .npy member")
        if zi.flag_bits & 0x1:
            raise FileFormatError(f"{what}: encrypted members are not supported")
        if zi.compress_type == zipfile.ZIP_STORED:
            ok = zi.file_size == zi.compress_size
        elif zi.compress_type == zipfile.ZIP_DEFLATED:
            ok = zi.file_size <= _DEFLATE_MAX_RATIO * zi.compress_size + 1024
        else:
            raise FileFormatError(f"{what}: compression method {zi.compress_type} is not supported "
                                  "(only stored or deflated)")
        if not ok:
            raise FileFormatError(f"{what}: declared size {zi.file_size} is impossible for compressed size "
                                  f"{zi.compress_size} (zip bomb?)")
        if zi.header_offset + 30 + zi.compress_size > archive_size:
            raise FileFormatError(f"{what}: data runs past the end of the archive")
    spans = sorted(infos, key=lambda zi: zi.header_offset)
    for prev, cur in zip(spans, spans[1:]):
        if prev.header_offset + 30 + len(prev.filename.encode()) + prev.compress_size > cur.header_offset:
            raise FileFormatError(f"{where}: members {prev.filename!r} and {cur.filename!r} overlap (zip bomb?)")


def _read_member(zf: zipfile.ZipFile, zi: zipfile.ZipInfo, where: str) -> np.ndarray:
    try:
        with zf.open(zi) as member:
            header = _npy.read_header(member, where)
            if header.offset + header.nbytes != zi.file_size:
                raise FileFormatError(f"{where}: shape {list(header.shape)} of {header.dtype} needs "
                                      f"{header.nbytes} data bytes, the member holds {zi.file_size - header.offset}")
            data = np.empty(header.nbytes, np.uint8)
            _read_exactly(member, data, where)
    except FileFormatError:
        raise
    except Exception as e:  # BadZipFile (bad CRC), zlib.error, EOFError, OSError...
        raise FileFormatError(f"{where}: corrupt member ({type(e).__name__}: {str(e)[:120]})") from None
    order = "F" if header.fortran_order else "C"
    arr = data.view(header.dtype).reshape(header.shape, order=order) if header.nbytes else np.zeros(
        header.shape, header.dtype)
    return _npy.to_candle(arr, where)


def _read_exactly(stream: BinaryIO, out: np.ndarray, where: str) -> None:
    view = memoryview(out)
    pos = 0
    while pos < len(view):
        n = stream.readinto(view[pos:pos + _CHUNK])
        if not n:
            raise FileFormatError(f"{where}: data is truncated ({pos} of {len(view)} bytes)")
        pos += n
    if stream.read(1):
        raise FileFormatError(f"{where}: trailing bytes after the array data")

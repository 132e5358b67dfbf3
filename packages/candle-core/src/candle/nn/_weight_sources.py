"""The files a `WeightStore` reads: safetensors (memory-mapped), a sharded safetensors set (an
`*.index.json`), npz (read one member at a time) and GGUF (through `candle.io.gguf.GGUFReader`).

Each source lists its tensor names and shapes from headers only and loads one tensor on request
(on the CPU; the store casts and moves it).
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Protocol

from ..dtype import DType
from ..errors import CandleError, FileFormatError
from ..io import _npy
from ..io._atomic import PathLike
from ..io.numpy_io import _check_members, _read_member
from ..io.safetensors import SafetensorsFile, safe_open
from ..ops.creation import from_numpy
from ..tensor import Tensor


class Source(Protocol):
    """One file (or one sharded set) of named tensors."""

    where: str

    def names(self) -> list[str]: ...

    def shape(self, name: str) -> tuple[int, ...]: ...

    def load(self, name: str, dtype: DType | None) -> Tensor: ...


class SafetensorsSource:
    """One safetensors file, memory-mapped; tensors are zero-copy views on the CPU."""

    def __init__(self, path: PathLike) -> None:
        self.where = f"'{os.fspath(path)}'"
        self._file = safe_open(path)

    def names(self) -> list[str]:
        return self._file.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self._file.shape(name)

    def load(self, name: str, dtype: DType | None) -> Tensor:
        return self._file.get_tensor(name)


class ShardedSource:
    """A set of safetensors shards listed by an index (`model.safetensors.index.json`:
    `{"weight_map": {tensor name: shard file name}}`); shards are opened on first use."""

    def __init__(self, index_path: PathLike) -> None:
        index_path = os.fspath(index_path)
        where = f"'{index_path}'"
        try:
            with open(index_path, encoding="utf-8") as f:
                index = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            raise FileFormatError(f"{where}: not a valid JSON index ({str(e)[:120]})") from None
        wmap = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wmap, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in wmap.items()):
            raise FileFormatError(f"{where}: the index has no 'weight_map' of tensor names to shard file names")
        directory = os.path.dirname(os.path.abspath(index_path))
        self._map: dict[str, str] = {}
        for shard in sorted(set(wmap.values())):
            if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/"):
                raise FileFormatError(f"{where}: shard file name {shard!r} must be relative to the index's folder")
            if not os.path.isfile(os.path.join(directory, shard)):
                raise FileFormatError(f"{where}: shard {shard!r} listed in the index does not exist")
        self._map = {k: os.path.join(directory, v) for k, v in wmap.items()}
        self._shards: dict[str, SafetensorsFile] = {}
        self.where = f"{where} ({len(set(wmap.values()))} shards)"

    def _shard(self, name: str) -> SafetensorsFile:
        path = self._map[name]
        f = self._shards.get(path)
        if f is None:
            f = self._shards[path] = safe_open(path)
        if name not in f:
            raise FileFormatError(f"{self.where}: the index puts tensor {name!r} in '{path}', which does not hold it")
        return f

    def names(self) -> list[str]:
        return sorted(self._map)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shard(name).shape(name)

    def load(self, name: str, dtype: DType | None) -> Tensor:
        return self._shard(name).get_tensor(name)


class NpzSource:
    """An .npz archive, validated on open; each tensor is read (and decompressed) on request."""

    def __init__(self, path: PathLike) -> None:
        self._path = os.fspath(path)
        self.where = f"'{self._path}'"
        with open(self._path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                with zipfile.ZipFile(f) as zf:
                    infos = zf.infolist()
            except Exception as e:  # BadZipFile, LargeZipFile, ValueError, EOFError...
                raise FileFormatError(f"{self.where}: not a valid .npz (zip) archive ({str(e)[:120]})") from None
        _check_members(infos, size, self.where)
        self._infos = {zi.filename[:-4]: zi for zi in infos}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def names(self) -> list[str]:
        return sorted(self._infos)

    def shape(self, name: str) -> tuple[int, ...]:
        if name not in self._shapes:
            zi = self._infos[name]
            with zipfile.ZipFile(self._path) as zf, zf.open(zi) as member:
                self._shapes[name] = _npy.read_header(member, f"{self.where} member {zi.filename!r}").shape
        return self._shapes[name]

    def load(self, name: str, dtype: DType | None) -> Tensor:
        zi = self._infos[name]
        with zipfile.ZipFile(self._path) as zf:
            return from_numpy(_read_member(zf, zi, f"{self.where} member {zi.filename!r}"))


class GGUFSource:
    """A GGUF file through `candle.io.gguf.GGUFReader` (memory-mapped; shapes row-major; quantized
    tensors are dequantized on load, straight to the requested dtype, else to float32)."""

    def __init__(self, path: PathLike) -> None:
        self.where = f"'{os.fspath(path)}'"
        try:
            from ..io.gguf import GGUFReader
        except ImportError as e:
            raise CandleError(f"{self.where}: reading GGUF needs candle.io.gguf.GGUFReader, which is not "
                              f"available ({e})") from None
        self._reader: Any = GGUFReader(path)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._reader.metadata)

    def names(self) -> list[str]:
        return sorted(self._reader.tensor_names)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in self._reader.tensor_info(name).shape)

    def load(self, name: str, dtype: DType | None) -> Tensor:
        return self._reader.load(name, dtype)  # None: plain types as stored, quantized ones as float32


def open_source(path: PathLike) -> Source:
    """The source for `path`, by extension (`.safetensors`, `.json` index, `.npz`, `.gguf`), else by
    the file's first bytes."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"weight file '{p}' does not exist")
    ext = os.path.splitext(p)[1].lower()
    if ext == ".json":
        return ShardedSource(p)
    if ext == ".npz":
        return NpzSource(p)
    if ext == ".gguf":
        return GGUFSource(p)
    if ext != ".safetensors":
        with open(p, "rb") as f:
            magic = f.read(4)
        if magic == b"GGUF":
            return GGUFSource(p)
        if magic[:2] == b"PK":
            return NpzSource(p)
    return SafetensorsSource(p)


def expand_paths(path: PathLike) -> list[str]:
    """A folder becomes its `model.safetensors.index.json` (or single index), else its `*.safetensors`."""
    p = os.fspath(path)
    if not os.path.isdir(p):
        return [p]
    files = sorted(os.listdir(p))
    indexes = [f for f in files if f.endswith(".safetensors.index.json")]
    if "model.safetensors.index.json" in indexes:
        return [os.path.join(p, "model.safetensors.index.json")]
    if len(indexes) == 1:
        return [os.path.join(p, indexes[0])]
    shards = [os.path.join(p, f) for f in files if f.endswith(".safetensors")]
    if not shards:
        raise FileNotFoundError(f"folder '{p}' holds no safetensors file or index")
    return shards

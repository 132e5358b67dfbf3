"""`WeightStore`: named weights read from files by dotted prefix, in the spirit of Candle's `VarBuilder`.

    store = WeightStore("model.safetensors.index.json", dtype="bfloat16", device="cuda")
    layer = store.pp("model.layers.0")
    w = layer.get("self_attn.q_proj.weight", shape=(4096, 4096))

Sources: a safetensors file (memory-mapped), a sharded set through its `*.index.json` (or a folder),
an `.npz`, or a GGUF file. Only headers are read on open; each tensor is read when asked for.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .. import autograd
from ..device import Device, as_device
from ..dtype import DType, as_dtype
from ..errors import CandleError, ShapeError, fmt_shape
from ..io._atomic import PathLike
from ..tensor import Tensor
from ._weight_sources import Source, expand_paths, open_source

if TYPE_CHECKING:
    from .module import Module

__all__ = ["MissingTensorError", "WeightStore"]


class MissingTensorError(CandleError, KeyError):
    """A tensor that none of a store's files holds; the message names the files and close names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Files:
    """The opened sources and the name -> source map that every prefixed view shares."""

    def __init__(self, sources: list[Source]) -> None:
        self.sources = sources
        self.index: dict[str, Source] = {}
        for src in sources:
            for name in src.names():
                self.index.setdefault(name, src)  # the first file that holds a name wins

    @property
    def where(self) -> str:
        return ", ".join(s.where for s in self.sources)


class WeightStore:
    """Tensors by dotted name from one or several files, cast to a dtype and placed on a device.

    `dtype=None` keeps each tensor's file dtype; otherwise floating tensors are cast to `dtype` (integer
    ones keep theirs unless `get(..., dtype=...)` asks). `device=None` means the CPU.
    """

    def __init__(self, paths: PathLike | Sequence[PathLike], dtype: DType | str | None = None,
                 device: Device | str | None = None, prefix: str = "") -> None:
        items = [paths] if isinstance(paths, (str, bytes)) or not isinstance(paths, Sequence) else list(paths)
        if not items:
            raise CandleError("WeightStore needs at least one file")
        files = [p for item in items for p in expand_paths(item)]  # type: ignore[arg-type]
        self._files = _Files([open_source(p) for p in files])
        self._prefix = prefix.strip(".")
        self.dtype: DType | None = as_dtype(dtype) if dtype is not None else None
        self.device: Device = as_device(device if device is not None else "cpu")

    @classmethod
    def _view(cls, files: _Files, prefix: str, dtype: DType | None, device: Device) -> WeightStore:
        store = object.__new__(cls)
        store._files, store._prefix, store.dtype, store.device = files, prefix, dtype, device
        return store

    # --- prefixes --------------------------------------------------------------------------
    @property
    def prefix(self) -> str:
        return self._prefix

    def pp(self, prefix: str | int) -> WeightStore:
        """A view whose names are under `<this prefix>.<prefix>` (like `VarBuilder::pp`)."""
        return self._view(self._files, self._full(str(prefix)), self.dtype, self.device)

    push_prefix = pp

    def to(self, device: Device | str | None = None, dtype: DType | str | None = None) -> WeightStore:
        """A view of the same files with another default device and/or dtype."""
        return self._view(self._files, self._prefix, as_dtype(dtype) if dtype is not None else self.dtype,
                          as_device(device) if device is not None else self.device)

    def _full(self, name: str) -> str:
        name = name.strip(".")
        if not self._prefix:
            return name
        return f"{self._prefix}.{name}" if name else self._prefix

    # --- lookup ------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        """Names under this view's prefix, relative to it, sorted."""
        if not self._prefix:
            return sorted(self._files.index)
        head = self._prefix + "."
        return sorted(n[len(head):] for n in self._files.index if n.startswith(head))

    def contains(self, name: str) -> bool:
        return self._full(name) in self._files.index

    __contains__ = contains  # type: ignore[assignment]

    def shape(self, name: str) -> tuple[int, ...]:
        """The stored shape of `name` (read from the header only)."""
        full = self._full(name)
        return self._source(full).shape(full)

    def _source(self, full: str) -> Source:
        src = self._files.index.get(full)
        if src is None:
            close = difflib.get_close_matches(full, list(self._files.index), n=3, cutoff=0.6)
            hint = f"; close names: {', '.join(repr(c) for c in close)}" if close else ""
            raise MissingTensorError(f"weight store: no tensor named {full!r} in {self._files.where}{hint}")
        return src

    def get(self, name: str, shape: Sequence[int] | None = None, dtype: DType | str | None = None,
            device: Device | str | None = None) -> Tensor:
        """Tensor `<prefix>.<name>`, checked against `shape` (before it is read), cast to `dtype` (default:
        the store's, floating tensors only) and placed on `device` (default: the store's)."""
        full = self._full(name)
        src = self._source(full)
        stored = src.shape(full)
        if shape is not None and tuple(shape) != stored:
            raise ShapeError(f"weight store: tensor {full!r} has shape {fmt_shape(stored)} in {src.where}, "
                             f"expected {fmt_shape(tuple(shape))}")
        want = as_dtype(dtype) if dtype is not None else self.dtype
        t = src.load(full, want)
        if want is not None and want != t.dtype and (dtype is not None or t.dtype.is_floating_point):
            t = t.to(dtype=want)
        return t.to(device=as_device(device) if device is not None else self.device)

    __getitem__ = get

    # --- modules -------------------------------------------------------------------------------
    def load_into(self, module: Module, strict: bool = True) -> tuple[list[str], list[str]]:
        """Fill `module`'s parameters and persistent buffers from this view (names relative to its prefix).

        Each tensor is checked against the module's shape and cast to the module tensor's dtype and device;
        parameters keep their identity but take over the loaded storage (zero-copy from a memory-mapped
        file on the CPU). Returns (missing, unexpected) keys; with `strict` either raises `CandleError`.
        Everything is read and checked before the module is changed.
        """
        own = module.state_dict(keep_vars=True)
        names = set(self.keys())
        missing = [k for k in own if k not in names]
        unexpected = sorted(names - set(own))
        if strict and (missing or unexpected):
            parts = [f"{what}: {_few(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected))
                     if keys]
            raise CandleError(f"load_into {type(module).__name__} from {self._files.where}"
                              f"{f' (prefix {self._prefix!r})' if self._prefix else ''}: " + "; ".join(parts))
        loaded = {k: self.get(k, shape=t.shape, dtype=t.dtype, device=t.device) for k, t in own.items() if k in names}
        with autograd.no_grad():
            for key, t in loaded.items():
                owner, _, attr = key.rpartition(".")
                m = module.get_submodule(owner)
                if attr in m._parameters:
                    p = m._parameters[attr]
                    requires_grad = p.requires_grad
                    p._assign(t.detach())
                    p._requires_grad = requires_grad
                else:
                    m._buffers[attr] = t.detach()
        return missing, unexpected

    def __repr__(self) -> str:
        dt = self.dtype.name if self.dtype is not None else "file dtypes"
        return f"WeightStore({self._files.where}, prefix={self._prefix!r}, dtype={dt}, device={self.device})"


def _few(keys: list[str], n: int = 8) -> str:
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more

"""What `candle info FILE` prints: the metadata and tensors of a safetensors or GGUF file (headers only,
nothing is loaded), with huge metadata arrays (vocabularies, merges) truncated."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from candle import FileFormatError

__all__ = ["describe_file", "short_value"]


def short_value(v: Any, limit: int = 8, width: int = 100) -> str:
    """A metadata value in one line: arrays as `[n items] first, ..., last` and long strings cut."""
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, (list, tuple)):
        n = len(v)
        items = [short_value(x, limit, 40) for x in v[:limit]]
        more = f", ... ({n - limit} more)" if n > limit else ""
        return f"[{n} items] [" + ", ".join(items) + more + "]"
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= width else s[:width - 20] + f"... ({len(s)} chars)"


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    return ""


def _table(rows: list[tuple[str, str, str, str]]) -> Iterator[str]:
    w0 = max([len(r[0]) for r in rows] + [4])
    w1 = max([len(r[1]) for r in rows] + [5])
    w2 = max([len(r[2]) for r in rows] + [5])
    yield f"  {'name':<{w0}}  {'dtype':<{w1}}  {'shape':<{w2}}  size"
    for r in rows:
        yield f"  {r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]:<{w2}}  {r[3]}"


def _gguf(path: str, metadata: bool, tensors: bool) -> Iterator[str]:
    from candle.io import GGUFReader

    r = GGUFReader(path)
    infos = r.tensors
    total = sum(i.nbytes or 0 for i in infos)
    yield (f"{path}: GGUF v{r.version}, {len(r.metadata)} metadata keys, {len(infos)} tensors, "
           f"{_size(total)} of tensor data (alignment {r.alignment})")
    if metadata:
        yield "metadata:"
        width = max([len(k) for k in r.metadata] + [1])
        for k, v in r.metadata.items():
            yield f"  {k:<{width}}  {short_value(v)}"
    if tensors:
        yield "tensors (shape row-major; GGUF stores the dims reversed):"
        yield from _table([(i.name, i.ggml_type, str(list(i.shape)), _size(i.nbytes or 0)) for i in infos])


def _safetensors(path: str, metadata: bool, tensors: bool) -> Iterator[str]:
    from candle.io import safe_open

    f = safe_open(path)
    names = f.keys()
    infos = [f.info(n) for n in names]
    total = sum(i.end - i.start for i in infos)
    n_params = sum(math.prod(i.shape) for i in infos)
    yield f"{path}: safetensors, {len(names)} tensors, {n_params:,} elements, {_size(total)}"
    md = f.metadata()
    if metadata:
        yield "metadata:" + ("" if md else " (none)")
        for k, v in (md or {}).items():
            yield f"  {k}  {short_value(v)}"
    if tensors:
        yield "tensors:"
        yield from _table([(i.name, i.dtype, str(list(i.shape)), _size(i.end - i.start)) for i in infos])


def describe_file(path: str, metadata: bool = True, tensors: bool = True) -> Iterator[str]:
    """Lines describing a safetensors or GGUF file (by its first bytes), or each such file of a folder."""
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith((".safetensors", ".gguf")))
        if not files:
            raise FileNotFoundError(f"folder '{path}' holds no .safetensors or .gguf file")
        for i, f in enumerate(files):
            if i:
                yield ""
            yield from describe_file(os.path.join(path, f), metadata, tensors)
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(f"'{path}' does not exist")
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic[:4] == b"GGUF":
        yield from _gguf(path, metadata, tensors)
    elif len(magic) == 8:
        yield from _safetensors(path, metadata, tensors)
    else:
        raise FileFormatError(f"'{path}': too short to be a safetensors or GGUF file")

"""Copy-on-write memory maps of whole files."""

from __future__ import annotations

import mmap
import os
from typing import Any

PathLike = str | os.PathLike


def map_file(path: PathLike) -> tuple[Any, int]:
    """`(buffer, size)` for the file at `path`: a private copy-on-write mmap (arrays over it are
    writable, writes never reach the file), or `b""` for an empty file (which cannot be mapped).

    Pages are read on first touch only. Replace a mapped file atomically (as candle's savers do);
    truncating it in place while mapped makes later reads of the lost pages crash the process."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            return b"", 0
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    return mm, len(mm)

"""Host-side weight layout helpers shared by the architectures (used at load time, not per token).

`transposed(w)` is `w.t().contiguous()` done in blocks of rows: a transposing copy of a large matrix touches
the destination with a stride of its row length, and copying it in one go thrashes the caches. For
Gemma-3's tied embedding (262144 x 640 float32, 671 MB) numpy's single copy took about 3 s here, the
blocked copy about 0.25 s (blocks of 512 source rows; each block's destination is a column strip that
stays in cache).
"""

from __future__ import annotations

import candle
from candle import ShapeError, Tensor

__all__ = ["fuse_transposed", "transposed"]

_BLOCK = 512  # source rows per block
_SMALL = 1 << 20  # elements below which one plain copy is as fast


def transposed(w: Tensor, block: int = _BLOCK) -> Tensor:
    """A C-contiguous `[cols, rows]` copy of the 2-d tensor `w` `[rows, cols]`, on its device, in its dtype."""
    if w.ndim != 2:
        raise ShapeError(f"transposed: expected a 2-d tensor, got shape {list(w.shape)}")
    rows, cols = w.shape
    if rows * cols <= _SMALL or rows <= block:
        return w.t().contiguous()
    out = candle.empty((cols, rows), dtype=w.dtype, device=w.device)
    for i in range(0, rows, block):
        n = min(block, rows - i)
        out.narrow(1, i, n).copy_(w.narrow(0, i, n).t())
    return out


def fuse_transposed(*ws: Tensor) -> Tensor:
    """`[out_i, in]` matrices -> one C-contiguous `[in, sum(out_i)]` matrix (the layout `x @ W` runs on)."""
    w = candle.cat(list(ws), 0) if len(ws) > 1 else ws[0]
    return transposed(w)

"""Launch configurations of the kernels: pure arithmetic, no CuPy (tested in CI without a GPU)."""

from __future__ import annotations

from dataclasses import dataclass

#: shared memory a block may use without opting in (bytes)
SMEM_DEFAULT = 48 * 1024
#: threads per block of the elementwise-style kernels
BLOCK = 256
#: grid-stride kernels launch at most this many blocks (enough to fill any current GPU)
MAX_BLOCKS = 65535
#: accumulators per thread in sdpa_flash (FLASH_ACC in kernels/attention.cu) and its block size
FLASH_ACC = 32
FLASH_THREADS = 128
#: threads of sdpa_decode and the row kernels' cap
DECODE_THREADS = 128
ROW_MAX_THREADS = 1024
#: rows of x per qmatvec block (QMV_ROWS in kernels/quant.cu) and warps per block
QMV_ROWS = 8
QMV_WARPS = 4


def grid_1d(n: int, block: int = BLOCK) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) of a grid-stride kernel over n items (at least one block)."""
    blocks = max(1, min(MAX_BLOCKS, -(-n // block)))
    return (blocks,), (block,)


def row_threads(d: int) -> int:
    """Threads per block of a row kernel over rows of d elements: a multiple of 32, about d/4 (each
    thread handles a few elements), at most 1024."""
    t = 32
    while t < ROW_MAX_THREADS and t * 4 < d:
        t *= 2
    return t


def row_cache(d: int, ct_size: int, limit: int = SMEM_DEFAULT) -> int:
    """Dynamic shared memory (bytes) to cache one row of d compute-type values, or 0 when it does not fit
    (the kernel then reads the row from global memory on every pass)."""
    need = d * ct_size
    return need if 0 < need <= limit - 32 * ct_size - 256 else 0


def decode_smem(e: int, s: int, ct_size: int, threads: int = DECODE_THREADS) -> int:
    """Dynamic shared memory of sdpa_decode: q (E), the scores (S) and the partial sums (threads)."""
    return (e + s + threads) * ct_size


def decode_fits(e: int, s: int, ct_size: int, limit: int = SMEM_DEFAULT) -> bool:
    """Whether sdpa_decode can hold the scores of s keys (plus its static 32-value scratch)."""
    return decode_smem(e, s, ct_size) + 32 * ct_size <= limit


@dataclass(frozen=True)
class FlashTiles:
    """Tile sizes of sdpa_flash: BQ query rows and BK keys per tile, and its dynamic shared memory."""

    bq: int
    bk: int
    smem: int


def flash_smem(bq: int, bk: int, e: int, ev: int, ct_size: int) -> int:
    return (bq * e + bk * (e + 1) + bk * ev + bq * bk + 3 * bq) * ct_size


def flash_tiles(e: int, ev: int, ct_size: int, limit: int = SMEM_DEFAULT) -> FlashTiles | None:
    """The largest tiles of sdpa_flash that fit: BQ * Ev accumulators within FLASH_ACC per thread, shared
    memory within `limit`; None when even the smallest do not fit (huge head dims: core composes)."""
    for bq in (32, 16, 8, 4, 2, 1):
        if bq * ev > FLASH_ACC * FLASH_THREADS:
            continue
        for bk in (64, 32, 16, 8, 4):
            smem = flash_smem(bq, bk, e, ev, ct_size)
            if smem <= limit:
                return FlashTiles(bq, bk, smem)
    return None


def use_decode_kernel(lq: int, hq_per_kv: int, s: int, e: int, ct_size: int) -> bool:
    """sdpa_decode (one block per query row) for few query rows whose scores fit shared memory, else
    sdpa_flash."""
    return lq <= 4 and decode_fits(e, s, ct_size)


def qmatvec_grid(m: int, n: int) -> tuple[tuple[int, int], tuple[int]]:
    """(grid, block) of qmatvec: one warp per output column, QMV_ROWS rows of x per block row."""
    return (max(1, -(-n // QMV_WARPS)), max(1, -(-m // QMV_ROWS))), (32 * QMV_WARPS,)


#: up to this many rows of x, qmatmul runs qmatvec (dequantize on the fly); above, it dequantizes the
#: weight once and runs one cuBLAS GEMM
QMATVEC_MAX_ROWS = 16

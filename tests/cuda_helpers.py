"""Helpers shared by the CUDA test files (on a GPU, on the kernel-model device and on the CPU-compiled
kernels): fused-vs-composed runs, the attention cases, and backends on stand-in runtimes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import candle
import candle.testing

# (lq, s, hq, hk, e): decode, GQA, a long cache, square prefill, a wide head, an odd head size
SDPA_SHAPES = [(1, 77, 9, 3, 64), (3, 300, 8, 8, 128), (1, 20_000, 4, 1, 64), (70, 70, 9, 3, 64),
               (33, 130, 4, 2, 256), (5, 40, 2, 1, 40)]
SDPA_MASKS = ["none", "causal", "offset", "bool", "add"]


def fused_and_composed(fn: Callable[[], candle.Tensor], via: str = "f64") -> tuple[np.ndarray, np.ndarray]:
    """fn() with the fused kernels and with core's composition, as float64 arrays (cast through `via`)."""
    got = fn()
    with candle.testing.composed_only():
        ref = fn()
    return (got.to(dtype=via).numpy().astype(np.float64), ref.to(dtype=via).numpy().astype(np.float64))


def sdpa_inputs(device: str, batch: int, dtype: str, lq: int, s: int, hq: int, hk: int, e: int,
                masking: str) -> tuple[candle.Tensor, candle.Tensor, candle.Tensor, dict[str, Any]]:
    """q, k (a strided view, like a KV cache's), v and the keyword arguments of one attention case."""
    rng = np.random.default_rng(lq * 1000 + s)

    def t(a: np.ndarray, dt: str | None = dtype) -> candle.Tensor:
        return candle.tensor(a, device=device, dtype=dt)

    q = t(rng.standard_normal((batch, hq, lq, e)))
    k = t(rng.standard_normal((batch, s, hk, e))).transpose(1, 2)
    v = t(rng.standard_normal((batch, hk, s, e)))
    kw: dict[str, Any] = {"enable_gqa": hq != hk}
    if masking == "causal":
        kw["is_causal"] = True
    elif masking == "offset":
        kw["causal_offset"] = s - lq
    elif masking == "bool":
        kw["attn_mask"] = t(rng.random((1, 1, lq, s)) > 0.3, None)
    elif masking == "add":
        kw["attn_mask"] = t(rng.standard_normal((batch, 1, lq, s)))
    return q, k, v, kw


def stand_in_backend(cls: type, runtime: Any, device: str) -> Any:
    """An instance of the CUDA backend class `cls` on `runtime` (a stand-in for the GPU), registered as the
    backend of `device`."""
    from candle.device import Device

    sub = type(f"StandIn{cls.__name__}", (cls,), {"name": device})
    dev = Device(device)
    be = sub(runtime, dev)
    dev._backend = be
    return be

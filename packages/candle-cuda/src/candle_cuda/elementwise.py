"""bfloat16 elementwise kernels on CuPy (`cupy.ElementwiseKernel`, broadcasting by CuPy): conversions
between bfloat16 words and float32, and binary ops, one kernel each instead of the several integer
passes `bf16.py` needs. GPU only (the emulated runtime uses `bf16.py`); compiled once per process."""

from __future__ import annotations

from functools import cache
from typing import Any

PREAMBLE = r"""
__device__ __forceinline__ float candle_bf2f(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short candle_f2bf(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}
"""

#: binary ops with a one-kernel bfloat16 form (others go through float32 arrays); NaN propagates like numpy
BINARY_EXPR: dict[str, str] = {
    "add": "x + y", "sub": "x - y", "mul": "x * y", "div": "x / y",
    "maximum": "(x > y || x != x) ? x : y", "minimum": "(x < y || x != x) ? x : y",
}


@cache
def _kernels() -> dict[str, Any]:
    import cupy

    k: dict[str, Any] = {
        "to_f32": cupy.ElementwiseKernel("uint16 a", "float32 y", "y = candle_bf2f(a)", "candle_bf16_to_f32",
                                         preamble=PREAMBLE),
        "from_f32": cupy.ElementwiseKernel("float32 a", "uint16 y", "y = candle_f2bf(a)", "candle_f32_to_bf16",
                                           preamble=PREAMBLE),
    }
    for op, expr in BINARY_EXPR.items():
        k[op] = cupy.ElementwiseKernel(
            "uint16 a, uint16 b", "uint16 out",
            f"float x = candle_bf2f(a), y = candle_bf2f(b); out = candle_f2bf({expr})", f"candle_bf16_{op}",
            preamble=PREAMBLE)
    return k


def bf16_to_f32(u: Any) -> Any:
    return _kernels()["to_f32"](u)


def f32_to_bf16(f: Any) -> Any:
    if f.dtype.name != "float32":
        f = f.astype("float32")
    return _kernels()["from_f32"](f)


def bf16_binary(op: str, a: Any, b: Any) -> Any:
    return _kernels()[op](a, b)

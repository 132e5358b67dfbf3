"""Special functions numpy lacks, vectorised: `erf` accurate to about 2e-15 in float64."""

from __future__ import annotations

import math

import numpy as np

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_SQRT_PI = math.sqrt(math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """erf in float64: its Taylor series below |x| = 2, the continued fraction of erfc above."""
    x = np.asarray(x, dtype=np.float64)
    small = np.abs(x) < 2.0
    xs = np.where(small, x, 0.0)
    x2 = xs * xs
    term = xs.copy()
    total = xs.copy()
    for n in range(1, 32):
        term *= -x2 / n
        total += term / (2 * n + 1)
    total *= _TWO_OVER_SQRT_PI
    if not small.all():
        xl = np.where(small, 2.0, np.minimum(np.abs(np.nan_to_num(x)), 7.0))
        f = xl.copy()
        for k in range(40, 0, -1):
            f = xl + (k * 0.5) / f
        large = np.sign(x) * (1.0 - np.exp(-xl * xl) / (_SQRT_PI * f))
        total = np.where(small, total, large)
        total = np.where(np.isnan(x), np.nan, total)
    return total

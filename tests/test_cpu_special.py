"""The CPU backend's erf: float64 inputs to ~1e-15, float32/float16 inputs (a rational approximation) to 1e-7."""

from __future__ import annotations

import math

import numpy as np

import candle
from candle.cpu.special import erf


def test_erf_single_precision_path() -> None:
    x = np.linspace(-6, 6, 240_001)
    want = np.array([math.erf(v) for v in x.astype(np.float32).astype(np.float64)])
    got = erf(x.astype(np.float32))
    assert got.dtype == np.float64 and np.abs(got - want).max() < 1e-7
    assert np.abs(erf(x.astype(np.float16)) - np.array([math.erf(v) for v in x.astype(np.float16).astype(float)])
                  ).max() < 1e-7
    special = erf(np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32))
    assert np.isnan(special[0]) and special[1:3].astype(np.float32).tolist() == [1.0, -1.0]
    assert special[3] == 0.0 and np.signbit(special[4])
    tiny = np.array([1e-30, -1e-12], np.float32)
    np.testing.assert_allclose(erf(tiny), 2 / math.sqrt(math.pi) * tiny.astype(np.float64), rtol=1e-6)


def test_erf_double_precision_path() -> None:
    x = np.linspace(-7, 7, 20_001)
    want = np.array([math.erf(v) for v in x])
    assert np.abs(erf(x) - want).max() < 1e-14


def test_gelu_erf_float32_matches_formula() -> None:
    x = np.linspace(-8, 8, 10_001).astype(np.float32)
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    got = candle.tensor(x).gelu().numpy()
    assert got.dtype == np.float32 and np.abs(got - want).max() < 1e-6

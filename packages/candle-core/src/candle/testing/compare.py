"""Comparing candle results with references: tolerances by dtype, values as float64/int64."""

from __future__ import annotations

from typing import Any

import numpy as np

# (rtol, atol) for forward results, by candle dtype short name
TOLERANCES: dict[str, tuple[float, float]] = {
    "f64": (1e-9, 1e-10), "f32": (1e-4, 1e-5), "f16": (1e-2, 1e-2), "bf16": (4e-2, 4e-2),
    "i64": (0, 0), "u8": (0, 0), "u32": (0, 0),
}
GRAD_TOLERANCES: dict[str, tuple[float, float]] = {
    "f64": (1e-8, 1e-9), "f32": (1e-3, 1e-4), "f16": (3e-2, 3e-2), "bf16": (8e-2, 8e-2),
}


def to_numpy64(t: Any) -> np.ndarray:
    """A candle tensor, torch tensor or array as float64 (floats) or int64 (integers, bools)."""
    if hasattr(t, "detach") and hasattr(t, "cpu") and type(t).__module__.startswith("torch"):
        t = t.detach().cpu()
        if t.dtype.is_floating_point:
            return t.double().numpy()
        return t.long().numpy()
    a = np.asarray(t)
    if a.dtype.kind == "f" or a.dtype.name == "bfloat16":
        return a.astype(np.float64)
    return a.astype(np.int64)


def assert_close(actual: Any, expected: Any, rtol: float | None = None, atol: float | None = None,
                 dtype: str = "f32", what: str = "") -> None:
    """Assert `actual` matches `expected` in shape and values (NaNs must match too)."""
    a, e = to_numpy64(actual), to_numpy64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {list(a.shape)} != expected {list(e.shape)}")
    r, t = TOLERANCES.get(dtype, (1e-5, 1e-6))
    r = r if rtol is None else rtol
    t = t if atol is None else atol
    if not np.allclose(a, e, rtol=r, atol=t, equal_nan=True):
        err = np.abs(a - e)
        err = np.where(np.isnan(err), np.inf, err)
        i = np.unravel_index(np.argmax(err - r * np.abs(e)), err.shape) if err.size else ()
        raise AssertionError(
            f"{what}: mismatch (rtol={r}, atol={t}): max abs error {np.nanmax(err) if err.size else 0:.3g}; "
            f"at {tuple(int(v) for v in i)}: got {a[i]!r}, expected {e[i]!r}"
        )

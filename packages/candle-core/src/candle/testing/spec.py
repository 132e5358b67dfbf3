"""How a conformance case is written: inputs (`In`) and the op under test (`OpCase`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FLOATS = ("f32", "f64", "f16", "bf16")
INTS = ("i64", "u8", "u32")
ALL = FLOATS + INTS


@dataclass(frozen=True)
class In:
    """One random input.

    kind: "float" (normal), "pos" (0.5..2), "unit" (-0.9..0.9), "distinct" (no ties), "int" (small
    integers in the case dtype), "index" (int64 in [0, high)), "perm" (int64, a permutation of
    range(high) along `dim`, truncated to the shape: no duplicates), "mask" (uint8 0/1), "away"
    (|x| >= 0.5, away from zero).
    dtype: fixes the dtype instead of following the case's (e.g. "i64" for an index).
    grad: whether a float input requires grad in the backward test.
    """

    shape: tuple[int, ...]
    kind: str = "float"
    high: int = 0
    dim: int = 0
    dtype: str | None = None
    grad: bool = True


@dataclass(frozen=True)
class OpCase:
    """An op under test: `fn(m, *inputs)` with `m` the module (candle or torch).

    Write `fn` with the names both libraries share (`x.sum(1)`, `m.cat([a, b], 0)`...). Outputs
    (a tensor or a tuple of tensors) are compared as values; comparison results (bool in torch,
    uint8 in candle) compare as integers.
    """

    name: str
    fn: Callable[..., Any]
    inputs: tuple[In, ...] = ()
    dtypes: tuple[str, ...] = FLOATS
    grad: bool = True
    fused: bool = False
    tol: dict[str, tuple[float, float]] = field(default_factory=dict)
    grad_tol: dict[str, tuple[float, float]] = field(default_factory=dict)
    check_dtype: bool = True
    gradcheck: bool = True

"""The conformance kit: the op suite any backend runs against itself, and comparison helpers.

A backend package tests itself with one line in a test module::

    TestMyDevice = candle.testing.conformance_suite("mydev")

Every case runs forward and backward against PyTorch (a test-only dependency) for each dtype the
device supports, fused kernels also against their composition, and in float64 gradients are
also checked against finite differences.
"""

from __future__ import annotations

from .compare import assert_close, to_numpy64
from .runner import composed_only, gradcheck, run_backward, run_forward, run_gradcheck
from .spec import In, OpCase


def conformance_suite(device: str, cases: list[OpCase] | None = None, dtypes: tuple[str, ...] | None = None) -> type:
    """A pytest test class running the op suite on `device` (see `candle.testing.suite`)."""
    from .suite import conformance_suite as _suite

    return _suite(device, cases, dtypes)


def all_cases() -> list[OpCase]:
    """Every case of the op suite."""
    from .cases import CASES

    return list(CASES)


__all__ = ["In", "OpCase", "all_cases", "assert_close", "composed_only", "conformance_suite", "gradcheck",
           "run_backward", "run_forward", "run_gradcheck", "to_numpy64"]

"""Turn the op suite into a pytest class for one device."""

from __future__ import annotations

from .spec import FLOATS, OpCase


def _supported(device: str, dtypes: tuple[str, ...]) -> tuple[str, ...]:
    import candle

    backend = candle.Device(device).backend
    return tuple(d for d in dtypes if backend.supports_dtype(candle.dtype.as_dtype(d)))


def conformance_suite(device: str, cases: list[OpCase] | None = None, dtypes: tuple[str, ...] | None = None) -> type:
    """A pytest class with forward, backward and finite-difference tests of every case on `device`.

    Only dtypes the device supports are generated; `dtypes` narrows them further.
    """
    import pytest

    from .cases import CASES
    from .runner import run_backward, run_forward, run_gradcheck

    cases = list(CASES if cases is None else cases)
    allowed = _supported(device, dtypes or ("f32", "f64", "f16", "bf16", "i64", "u8", "u32"))
    fwd = [pytest.param(c, d, id=f"{c.name}-{d}") for c in cases for d in c.dtypes if d in allowed]
    bwd = [pytest.param(c, d, id=f"{c.name}-{d}") for c in cases if c.grad for d in c.dtypes
           if d in allowed and d in FLOATS]
    fd = [pytest.param(c, id=c.name) for c in cases if c.grad and c.gradcheck and "f64" in c.dtypes
          and "f64" in allowed]

    class Suite:
        """The candle conformance suite."""

        @pytest.mark.parametrize("case,dtype", fwd)
        def test_forward(self, case: OpCase, dtype: str) -> None:
            pytest.importorskip("torch")
            run_forward(case, dtype, device)

        @pytest.mark.parametrize("case,dtype", bwd)
        def test_backward(self, case: OpCase, dtype: str) -> None:
            pytest.importorskip("torch")
            run_backward(case, dtype, device)

        @pytest.mark.parametrize("case", fd)
        def test_finite_differences(self, case: OpCase) -> None:
            run_gradcheck(case, device)

    Suite.__name__ = Suite.__qualname__ = f"Conformance_{device.replace(':', '_')}"
    return Suite

"""Entry point of the CPU backend (group `candle.backends`, name `cpu`); imports nothing heavy."""

from __future__ import annotations

from ..plugin import BackendSpec, hookimpl


def _make(index: int):  # noqa: ANN202
    from .backend import NumpyBackend

    return NumpyBackend()


@hookimpl
def candle_backends() -> list[BackendSpec]:
    return [BackendSpec(name="cpu", factory=_make, probe=lambda: 1, priority=0,
                        description="numpy (OpenBLAS) on the host CPU")]

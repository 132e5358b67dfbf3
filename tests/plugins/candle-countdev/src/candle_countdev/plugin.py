"""Entry point of the `countdev` backend (group `candle.backends`). Light: no numpy, no backend import."""

from __future__ import annotations

from candle.plugin import BackendSpec, hookimpl


def _make(index: int):  # noqa: ANN202 - the heavy import happens here, on first use of the device
    from .backend import CountingBackend

    return CountingBackend(index)


def _probe() -> int:
    from . import DEVICES

    return DEVICES


@hookimpl
def candle_backends() -> list[BackendSpec]:
    return [BackendSpec(name="countdev", factory=_make, probe=_probe, priority=-10,
                        description="test plugin: numpy kernels that count their calls")]

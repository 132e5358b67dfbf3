"""Entry point `broken_probe`: the hook works, but the backend's probe raises an exception that is not
a `candle.CandleError` (a crashing driver). The registry must mark it failed, not raise."""

from __future__ import annotations

from candle.plugin import BackendSpec, hookimpl

from . import PROBE_ERROR


def _probe() -> int:
    raise RuntimeError(PROBE_ERROR)


def _make(index: int):  # noqa: ANN202
    raise AssertionError("the factory of broken_probe must never run: its probe failed")


@hookimpl
def candle_backends() -> list[BackendSpec]:
    return [BackendSpec(name="broken_probe", factory=_make, probe=_probe, priority=-20,
                        description="test plugin whose probe crashes")]

"""Test-run policy: a backend named in $CANDLE_TEST_BACKENDS that did not load fails the run."""

from __future__ import annotations

import os
import warnings

import pytest

import candle


def requested_backends() -> list[str]:
    raw = os.environ.get("CANDLE_TEST_BACKENDS", "")
    return [b.strip() for b in raw.split(",") if b.strip()]


def pytest_sessionstart(session: pytest.Session) -> None:
    with warnings.catch_warnings():  # the deliberately broken test plugins warn; test_registry checks that
        warnings.simplefilter("ignore")
        infos = {i.name: i for i in candle.backends()}
    missing = []
    for name in requested_backends():
        info = infos.get(name)
        if info is None or info.state != "available":
            why = "not installed" if info is None else f"{info.state}: {info.reason}"
            missing.append(f"{name} ({why})")
            continue
        try:
            _ = candle.Device(name).backend  # builds it: a factory that raises fails the run
        except candle.CandleError as e:
            missing.append(f"{name} (its backend failed to start: {e})")
    if missing:
        raise pytest.UsageError("backends requested in $CANDLE_TEST_BACKENDS did not load: " + "; ".join(missing))


def available_devices() -> list[str]:
    """Every available backend's first device (the conformance kit runs on each)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [i.name for i in candle.backends() if i.state == "available"]

"""The conformance kit on every installed and available backend (cpu, the countdev test plugin,
opencl/cuda where present): one test class per device."""

import pytest

import candle.testing
from conftest import available_devices


def _broken_suite(device: str, error: Exception) -> type:
    class Broken:
        def test_backend_starts(self) -> None:
            pytest.fail(f"backend {device} is available but its conformance suite could not be built: {error}")

    return Broken


for _device in available_devices():
    try:
        _suite = candle.testing.conformance_suite(_device)
    except candle.CandleError as _e:
        _suite = _broken_suite(_device, _e)
    globals()[f"TestConformance_{_device}"] = _suite

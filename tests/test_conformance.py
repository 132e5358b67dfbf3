"""The conformance kit on every installed and available backend (cpu, the countdev test plugin,
opencl/cuda where present): one test class per device."""

import candle.testing
from conftest import available_devices

for _device in available_devices():
    globals()[f"TestConformance_{_device}"] = candle.testing.conformance_suite(_device)

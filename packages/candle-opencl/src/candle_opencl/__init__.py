"""candle-opencl: the OpenCL backend of candle, on PyOpenCL with candle's own OpenCL C kernels.

Devices are `opencl:N` (see `candle_opencl.plugin` for the platform/device selection by environment
variable). Importing this package is light: PyOpenCL is imported by the probe and the backend only.

`stats()` / `reset_stats()` count host<->device transfers, kernel launches and program builds, e.g.
to check that a model's forward pass never leaves the device.
"""

from __future__ import annotations

from ._stats import reset_stats, stats

__version__ = "0.2.0"
__all__ = ["reset_stats", "stats"]

"""candle-cuda: the CUDA backend of candle, on CuPy. 0.1.0 is a skeleton: it registers the `cuda`
device type and probes for devices; the kernels land with the CUDA backend issue.

Importing this package is light: CuPy is imported only by the probe and the backend.
"""

from __future__ import annotations

__version__ = "0.1.0"

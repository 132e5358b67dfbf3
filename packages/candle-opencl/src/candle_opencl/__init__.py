"""candle-opencl: the OpenCL backend of candle, on PyOpenCL. 0.1.0 is a skeleton: it registers the
`opencl` device type and probes for devices; the kernels land with the OpenCL backend issue.

Importing this package is light: PyOpenCL is imported only by the probe and the backend.
"""

from __future__ import annotations

__version__ = "0.1.0"

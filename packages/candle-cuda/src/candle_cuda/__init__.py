"""candle-cuda: the CUDA backend of candle, on CuPy (cuBLAS for matrix products, candle's own CUDA C
kernels in `kernels/*.cu` for the fused ops and the quantized matmuls).

Importing this package is light: CuPy is imported by the plugin's probe and the backend.
"""

from __future__ import annotations

__version__ = "0.2.0"

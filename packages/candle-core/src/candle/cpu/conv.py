"""Convolution, pooling and upsampling kernels of the numpy backend (fused kernels of the interface)."""

from __future__ import annotations


class ConvKernels:
    """Mixed into `NumpyBackend`."""

"""Fused normalisation kernels of the numpy backend (rms_norm, layer_norm, silu_mul)."""

from __future__ import annotations


class NormKernels:
    """Mixed into `NumpyBackend`."""

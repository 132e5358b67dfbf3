"""Fused attention kernels of the numpy backend (rope, sdpa)."""

from __future__ import annotations


class AttentionKernels:
    """Mixed into `NumpyBackend`."""

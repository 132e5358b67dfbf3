"""Convolutions, pooling and nearest upsampling."""

from __future__ import annotations

__all__: list[str] = []

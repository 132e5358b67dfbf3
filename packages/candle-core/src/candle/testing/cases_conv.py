"""Conformance cases of convolutions, pooling and upsampling."""

from __future__ import annotations

from .spec import OpCase

CONV_CASES: list[OpCase] = []

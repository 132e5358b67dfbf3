"""candle-models: device-agnostic model architectures, generation and the `candle` command line."""

from __future__ import annotations

__version__ = "0.1.0"

"""candle.utils: data loading (`candle.utils.data`)."""

from . import data

__all__ = ["data"]

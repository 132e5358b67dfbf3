"""candle.nn: modules, layers and functional ops, device-agnostic (they only call core ops)."""

from .module import Module
from .parameter import Parameter

__all__ = ["Module", "Parameter"]

"""The exception hierarchy: every error candle raises derives from `CandleError`.

Each class also derives from the built-in exception a Python user would expect
(`ValueError` for shapes, `TypeError` for dtypes, ...), so ordinary `except` clauses work.
"""

from __future__ import annotations


class CandleError(Exception):
    """Base class of every error raised by candle."""


class ShapeError(CandleError, ValueError):
    """Shapes that do not fit an op, e.g. `shape mismatch in matmul: lhs [2, 3], rhs [4, 5]`."""


class DimError(CandleError, IndexError):
    """A dimension or index out of range."""


class DTypeError(CandleError, TypeError):
    """A dtype an op does not accept, or two dtypes that do not combine."""


class DeviceError(CandleError, RuntimeError):
    """Tensors on different devices, or a malformed device string."""


class BackendUnavailableError(DeviceError):
    """A device was asked for by name and its backend cannot run here; the message says why."""


class UnsupportedError(CandleError, NotImplementedError):
    """An op or dtype a backend does not implement."""


class GradError(CandleError, RuntimeError):
    """Misuse of autograd (backward on a tensor without a graph, grad of an integer tensor...)."""


class FileFormatError(CandleError, ValueError):
    """A corrupt, truncated or hostile file; raised before any large allocation."""


def fmt_shape(shape: tuple[int, ...]) -> str:
    """Format a shape the way error messages print it: `[2, 3]`."""
    return "[" + ", ".join(str(s) for s in shape) + "]"

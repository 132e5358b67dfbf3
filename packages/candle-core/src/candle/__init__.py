"""candle: a minimalist tensor library with PyTorch's feel, autograd, and pluggable backends.

`import candle` loads no backend: the numpy CPU backend and every plugin found through the
`candle.backends` entry points are imported on first use of their device.
"""

from __future__ import annotations

from . import autograd, dtype, errors, ops
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .device import Device, default_device, set_default_device
from .dtype import (
    DType,
    bfloat16,
    float16,
    float32,
    float64,
    get_default_dtype,
    int64,
    set_default_dtype,
    uint8,
    uint32,
)
from .errors import (
    BackendUnavailableError,
    CandleError,
    DeviceError,
    DimError,
    DTypeError,
    FileFormatError,
    GradError,
    ShapeError,
    UnsupportedError,
)
from .ops import *  # noqa: F403
from .random import Generator, manual_seed, seed
from .registry import BackendInfo
from .tensor import Tensor

__version__ = "0.1.0"

f16, bf16, f32, f64, i64, u8, u32 = float16, bfloat16, float32, float64, int64, uint8, uint32
half, float, double, long = float16, float32, float64, int64  # noqa: A001


def backends() -> list[BackendInfo]:
    """Every backend plugin found, with its state (`available`, `unavailable`, `failed`,
    `excluded`) and the reason when it cannot run. Probing may import a plugin's library."""
    from .registry import backends as _backends

    return _backends()


def get_num_threads() -> int:
    """Threads the CPU backend's matmuls use (numpy's BLAS), like `torch.get_num_threads`."""
    from .cpu.threads import blas_threads

    return blas_threads()


def set_num_threads(n: int) -> None:
    """Set the threads of the CPU backend's matmuls (numpy's BLAS), like `torch.set_num_threads`.
    Needs the optional package threadpoolctl; without it, set `OPENBLAS_NUM_THREADS` before starting Python."""
    from .cpu.threads import set_blas_threads

    if not set_blas_threads(n):
        raise UnsupportedError("set_num_threads: changing numpy's BLAS threads at run time needs threadpoolctl "
                               "(pip install threadpoolctl), or set OPENBLAS_NUM_THREADS before starting Python")


def __getattr__(name: str):  # noqa: ANN202
    """Submodules with heavier imports load on first access (`candle.io`, `candle.testing`)."""
    if name in ("io", "testing", "nn", "optim", "utils", "checkpoint", "registry", "plugin", "backend", "cpu"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    if name in ("load_safetensors", "save_safetensors", "load_npz", "save_npz", "load_npy", "save_npy",
                "safe_open"):
        from . import io

        return getattr(io, name)
    if name in ("save_checkpoint", "load_checkpoint"):
        from . import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'candle' has no attribute {name!r}")

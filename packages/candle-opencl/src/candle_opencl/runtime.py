"""The OpenCL runtime of one device: context, in-order queue, memory pool, the program cache, and
`CLArray`, the backend's native array (a buffer plus its own layout).

Programs are built from the `.cl` files in `kernels/` (package data), one per (file, dtype), with
`kernels/common.h.cl` in front and the dtype given by defines. Each is built once per context and
kept; pyopencl also caches the binaries on disk, so a new process does not compile again. Kernel
objects are created once and carry their scalar argument types, so a launch is one pyopencl call.
"""

from __future__ import annotations

import math
import os
import re
import threading
from collections.abc import Sequence
from importlib import resources
from typing import Any

import numpy as np
import pyopencl as cl
import pyopencl.tools  # noqa: F401 - MemoryPool, ImmediateAllocator

from candle.dtype import DType
from candle.errors import DTypeError
from candle.strides import dense_strides

from . import _stats

Shape = tuple[int, ...]
MAXD = 6  # dims of the geometry structs (kernels/common.h.cl); more collapse or go through copies
LS = 64  # work-group size of the 1-d kernels
CH = 16  # elements per work-item of the elementwise kernels
VCH = 64  # elements per work-item of the vector kernels (kernels/vector.cl)
SCH = 64  # elements of the innermost dim per work-item of the strided kernels (kernels/common.h.cl)

I64 = np.int64
I32 = np.int32
U32 = np.uint32
F32 = np.float32

# per dtype: storage type, compute type, load/store macros, raw copy type, flags, numpy compute type
_TYPES: dict[str, dict[str, Any]] = {
    "f32": dict(T="float", CT="float", LD="LD_plain", ST="ST_plain", RT="uint", F=1, S=1, ct=np.float32),
    "f64": dict(T="double", CT="double", LD="LD_plain", ST="ST_plain", RT="ulong", F=1, S=1, ct=np.float64),
    "f16": dict(T="half", CT="float", LD="LD_half", ST="ST_half", RT="ushort", F=1, S=1, ct=np.float32),
    "bf16": dict(T="ushort", CT="float", LD="LD_bf16", ST="ST_bf16", RT="ushort", F=1, S=1, ct=np.float32),
    "i64": dict(T="long", CT="long", LD="LD_plain", ST="ST_plain", RT="ulong", F=0, S=1, ct=np.int64),
    "u32": dict(T="uint", CT="uint", LD="LD_plain", ST="ST_plain", RT="uint", F=0, S=0, ct=np.uint32),
    "u8": dict(T="uchar", CT="uchar", LD="LD_plain", ST="ST_plain", RT="uchar", F=0, S=0, ct=np.uint8),
}


def compute_type(dtype: DType) -> Any:
    """The numpy type of a dtype's compute type (the type of kernels' scalar arguments)."""
    return _TYPES[dtype.short]["ct"]


def type_defines(dtype: DType, prefix: str = "") -> list[str]:
    """Build-line defines that make a program's T/CT/LD/ST (or S_T... with prefix "S_") one dtype."""
    t = _TYPES[dtype.short]
    p = prefix
    out = [f"-D{p}T={t['T']}", f"-D{p}CT={t['CT']}", f"-D{p}LD={t['LD']}", f"-D{p}ST={t['ST']}",
           f"-D{p}RT={t['RT']}", f"-D{p}IS_FLOAT={t['F']}", f"-D{p}IS_SIGNED={t['S']}",
           f"-D{p}IS_F64={int(dtype.short == 'f64')}", f"-D{p}DT_F32={int(dtype.short == 'f32')}"]
    if t["F"] and dtype.short != "f64":  # 8-wide vector access (kernels/common.h.cl); PoCL 3.0 fails to
        kind = t["LD"].removeprefix("LD_")  # build some double8 programs, so float64 stays scalar
        out += [f"-D{p}VT=float8", f"-D{p}VLD=VLD_{kind}", f"-D{p}VST=VST_{kind}"]
    return out


def _source(name: str) -> str:
    return resources.files("candle_opencl").joinpath("kernels", name).read_text(encoding="utf-8")


def _with_includes(text: str) -> str:
    """The kernel text with each line `// @include NAME` replaced by kernels/NAME (one level)."""
    return re.sub(r"^// @include (\S+)$", lambda m: _source(m.group(1)), text, flags=re.M)


class CLArray:
    """A tensor's storage on the device: a buffer and a layout (element strides, element offset).

    Views (reshape, permute, slice, expand, flip) share `buf` and change only the layout.
    """

    __slots__ = ("buf", "shape", "strides", "offset", "dtype")

    def __init__(self, buf: Any, shape: Shape, strides: Shape, offset: int, dtype: DType) -> None:
        self.buf = buf
        self.shape = shape
        self.strides = strides
        self.offset = offset
        self.dtype = dtype

    def view(self, shape: Shape, strides: Shape, offset: int | None = None) -> CLArray:
        return CLArray(self.buf, shape, strides, self.offset if offset is None else offset, self.dtype)

    @property
    def contiguous(self) -> bool:
        return self.strides == dense_strides(self.shape) or is_dense(self.shape, self.strides)

    def __repr__(self) -> str:
        return f"CLArray({self.dtype.short}, shape={self.shape}, strides={self.strides}, offset={self.offset})"




def is_dense(shape: Shape, strides: Shape) -> bool:
    """Row-major dense, ignoring the strides of size-1 dims."""
    acc = 1
    for i in range(len(shape) - 1, -1, -1):
        n = shape[i]
        if n != 1:
            if strides[i] != acc:
                return False
            acc *= n
    return True


def collapse(shape: Shape, strides: Sequence[Shape]) -> tuple[list[int], list[list[int]]]:
    """Drop size-1 dims and merge neighbours that are contiguous for every operand.

    Returns the collapsed shape (at least one dim) and each operand's strides for it.
    """
    dims: list[int] = []
    sts: list[list[int]] = [[] for _ in strides]
    for i, n in enumerate(shape):
        if n == 1:
            continue
        if dims and all(st[-1] == s[i] * n for st, s in zip(sts, strides)):
            dims[-1] *= n
            for st, s in zip(sts, strides):
                st[-1] = s[i]
            continue
        dims.append(n)
        for st, s in zip(sts, strides):
            st.append(s[i])
    if not dims:
        return [1], [[0] for _ in strides]
    return dims, sts


def broadcast_strides(a: CLArray, shape: Shape) -> Shape:
    """a's strides viewed as `shape` (numpy broadcasting: stride 0 along expanded dims)."""
    if a.shape == shape:
        return a.strides
    lead = len(shape) - len(a.shape)
    out = [0] * len(shape)
    for i, (n, s) in enumerate(zip(a.shape, a.strides)):
        out[lead + i] = 0 if n == 1 and shape[lead + i] != 1 else s
    return tuple(out)


def geometry(shape: Shape, ops: Sequence[tuple[Shape, int]]) -> tuple[np.ndarray, int]:
    """The `geom_t` of a strided map (operands: (strides, offset), slot 0 the output) and its global size."""
    dims, sts = collapse(shape, [s for s, _ in ops])
    if len(dims) > MAXD:
        raise _too_many_dims(shape)
    nd = len(dims)
    nch = -(-dims[-1] // SCH)
    outer = math.prod(dims[:-1])
    g = np.zeros(7 + MAXD * 5, dtype=np.int64)
    g[0], g[1], g[2] = nd, nch, outer
    for k, (_, off) in enumerate(ops):
        g[3 + k] = off
    g[7:7 + nd] = dims
    for k, st in enumerate(sts):
        base = 7 + MAXD * (1 + k)
        g[base:base + nd] = st
    return g, outer * nch


def _too_many_dims(shape: Shape) -> Exception:
    from candle.errors import UnsupportedError

    return UnsupportedError(f"opencl: a strided layout of shape {list(shape)} does not collapse to {MAXD} dims; "
                            f"make the tensor contiguous first")


def round_up(n: int, m: int = LS) -> int:
    return max(m, -(-n // m) * m)


class Runtime:
    """Context, queue, pool and compiled programs of one OpenCL device."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.ctx = cl.Context([device])
        self.queue = cl.CommandQueue(self.ctx)
        self.pool = cl.tools.MemoryPool(cl.tools.ImmediateAllocator(self.queue))
        self.fp64 = bool(getattr(device, "double_fp_config", 0)) or "cl_khr_fp64" in device.extensions
        self._programs: dict[tuple[str, ...], Any] = {}
        self._kernels: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()
        self._common = _source("common.h.cl")
        self.name = f"{device.platform.name.strip()} / {device.name.strip()}"

    # --- memory ---------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> Any:
        """A pooled buffer of at least `nbytes` (never empty: OpenCL has no zero-size buffers)."""
        return self.pool.allocate(max(int(nbytes), 8))

    def empty(self, shape: Shape, dtype: DType) -> CLArray:
        n = math.prod(shape)
        return CLArray(self.alloc(n * dtype.itemsize), shape, dense_strides(shape), 0, dtype)

    def upload(self, array: np.ndarray, dtype: DType) -> CLArray:
        """Host -> device (the only way data enters the device)."""
        shape = tuple(array.shape)
        a = array if array.flags.c_contiguous else np.ascontiguousarray(array)  # (which makes 0-d arrays 1-d)
        buf = self.alloc(a.nbytes)
        if a.nbytes:
            cl.enqueue_copy(self.queue, buf, a, is_blocking=False)  # pyopencl keeps `a` alive until done
        _stats.record("from_numpy", a.nbytes)
        return CLArray(buf, shape, dense_strides(shape), 0, dtype)

    def download(self, x: CLArray, host_dtype: Any) -> np.ndarray:
        """Device -> host of a dense array (the only way data leaves the device)."""
        out = np.empty(x.shape, dtype=host_dtype)
        if out.nbytes:
            cl.enqueue_copy(self.queue, out, x.buf, src_offset=x.offset * x.dtype.itemsize, is_blocking=True)
        _stats.record("to_numpy", out.nbytes)
        return out

    # --- programs and kernels -------------------------------------------------------------------
    def program(self, file: str, dtype: DType, src: DType | None = None) -> Any:
        """The program of `file` built for `dtype` (for casts: from `src` to `dtype`), built once."""
        key = (file, dtype.short, src.short if src is not None else "")
        prg = self._programs.get(key)
        if prg is None:
            with self._lock:
                prg = self._programs.get(key)
                if prg is None:
                    prg = self._build(file, dtype, src)
                    self._programs[key] = prg
        return prg

    def _build(self, file: str, dtype: DType, src: DType | None) -> Any:
        if (dtype.short == "f64" or (src is not None and src.short == "f64")) and not self.fp64:
            raise DTypeError(f"dtype float64 is not supported on OpenCL device {self.name} (no cl_khr_fp64)")
        sfx = dtype.short if src is None else f"{src.short}_{dtype.short}"
        opts = type_defines(dtype) + [f"-DSFX={sfx}"]
        if src is not None:
            opts += type_defines(src, "S_")
        text = self._common + "\n" + _with_includes(_source(f"{file}.cl"))
        _stats.record("build", 0)
        import warnings

        from candle.errors import UnsupportedError

        try:
            with warnings.catch_warnings():  # PoCL prints notes (e.g. about the vector ABI) as build output
                warnings.simplefilter("ignore")
                prg = cl.Program(self.ctx, text).build(options=opts)
        except cl.Error as e:
            raise UnsupportedError(f"opencl: building kernels/{file}.cl for {sfx} failed on {self.name}: {e}") from e
        if not prg.kernel_names:  # PoCL 3.0 can fail without an error
            raise UnsupportedError(f"opencl: building kernels/{file}.cl for {sfx} on {self.name} gave no kernels")
        return prg

    def kernel(self, file: str, name: str, dtype: DType, arg_types: Sequence[Any], src: DType | None = None) -> Any:
        """Kernel `<name>_<dtype>` of `file` with its scalar argument types (None: a buffer or struct)."""
        sfx = dtype.short if src is None else f"{src.short}_{dtype.short}"
        key = (file, name, sfx)
        k = self._kernels.get(key)
        if k is None:
            k = cl.Kernel(self.program(file, dtype, src), f"{name}_{sfx}")
            k.set_scalar_arg_dtypes(list(arg_types))
            self._kernels[key] = k
        return k

    def raw_kernel(self, file: str, name: str, dtype: DType, arg_types: Sequence[Any]) -> Any:
        """A kernel whose full name is `name` (it already ends with its dtype) in the program of `dtype`."""
        key = (file, name, "")
        k = self._kernels.get(key)
        if k is None:
            k = cl.Kernel(self.program(file, dtype), name)
            k.set_scalar_arg_dtypes(list(arg_types))
            self._kernels[key] = k
        return k

    def launch(self, k: Any, gsize: tuple[int, ...], lsize: tuple[int, ...] | None, *args: Any) -> None:
        """Enqueue kernel `k` with `args` (`set_args` + the bare enqueue: the same work as calling the kernel
        object, about 1 us less per launch on PoCL here; a decode step launches ~360 kernels)."""
        _stats.record("kernel", 0)
        k.set_args(*args)
        cl.enqueue_nd_range_kernel(self.queue, k, gsize, lsize)

    def finish(self) -> None:
        self.queue.finish()


_RUNTIMES: dict[int, Runtime] = {}


def runtime(index: int) -> Runtime:
    """The runtime of device `opencl:index` (created once per process)."""
    rt = _RUNTIMES.get(index)
    if rt is None:
        from .plugin import select_device

        rt = _RUNTIMES[index] = Runtime(select_device(index))
    return rt


def cache_dir() -> str | None:
    """Where pyopencl keeps compiled binaries (None when its cache is off)."""
    if os.environ.get("PYOPENCL_NO_CACHE"):
        return None
    try:
        from pyopencl.cache import get_cache_dir  # type: ignore[attr-defined]

        return str(get_cache_dir())
    except Exception:  # noqa: BLE001 - informational only
        return None

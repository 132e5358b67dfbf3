"""The op-kernel interface: what a backend implements so candle runs on its device.

Core validates arguments, computes result shapes and dtypes, records autograd, and then calls
one of these methods with *native arrays*: opaque handles the backend defines (a numpy array for
the CPU backend, a buffer plus layout for OpenCL...). Core never looks inside a native array; it
keeps each tensor's shape and dtype itself and passes them where a kernel needs them.

Conventions:
- `shape` arguments are tuples of ints, `dims` are non-negative and already validated.
- Elementwise kernels get inputs of one dtype (core casts first) whose shapes broadcast to the
  result (numpy rules); they return a new native array of the result shape.
- Views (`reshape`, `permute`, `slice`, `expand`) must not copy when the layout allows it,
  so that model code can narrow and transpose freely.
- Fused kernels are optional: core calls `backend.<name>` when the attribute exists and runs its
  own composition of primitives otherwise. `FUSED_KERNELS` lists their names and signatures; the
  composition in core is the reference each fused kernel is tested against.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from .device import Device
    from .dtype import DType

Native = Any
Shape = tuple[int, ...]

UNARY_OPS = (
    "neg", "abs", "sqr", "sqrt", "rsqrt", "recip", "exp", "expm1", "log", "log1p", "sin", "cos",
    "tan", "tanh", "erf", "gelu", "gelu_erf", "relu", "silu", "sigmoid", "floor", "ceil", "round",
    "sign", "trunc",
)  # fmt: skip
BINARY_OPS = ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "floor_divide", "remainder")
CMP_OPS = ("eq", "ne", "lt", "le", "gt", "ge")
REDUCE_OPS = ("sum", "max", "min", "prod")
ARG_REDUCE_OPS = ("argmax", "argmin")

FUSED_KERNELS: dict[str, str] = {
    "softmax_last_dim": "(x, dtype) -> softmax over the last dim",
    "log_softmax_last_dim": "(x, dtype) -> log_softmax over the last dim",
    "cumsum": "(x, dim, dtype) -> inclusive cumulative sum along dim",
    # convolutions and pooling: contiguous NCHW inputs; stride, padding, dilation, kernel, output_padding
    # are (h, w) pairs of ints; no bias (core adds it); core validated every size
    "conv2d": "(x, w, shape_x, shape_w, stride, padding, dilation, groups, dtype) -> [N, O, Ho, Wo] "
              "cross-correlation of x [N, C, H, W] (zero padding) with w [O, C/groups, kh, kw]",
    "conv_transpose2d": "(x, w, shape_x, shape_w, stride, padding, output_padding, dilation, groups, dtype) -> "
                        "[N, O, Ho, Wo], the adjoint of conv2d, w [C, O/groups, kh, kw], "
                        "Ho = (H-1)*stride - 2*padding + dilation*(kh-1) + output_padding + 1",
    "max_pool2d": "(x, shape, kernel, stride, padding, dilation, dtype) -> (values, int64 indices into the "
                  "flattened H*W plane): per window the first maximum in scan order (the last NaN if any), "
                  "padding never wins, a window of only the dtype's lowest value gives its first input element",
    "avg_pool2d": "(x, shape, kernel, stride, padding, count_include_pad, dtype) -> window sums (zero padding) "
                  "divided by kh*kw, or by the number of input elements when count_include_pad is False",
    "upsample_nearest2d": "(x, shape, out_h, out_w, dtype) -> x[:, :, ih][:, :, :, iw] with PyTorch's nearest "
                          "rule: src = min(floor(dst * float32(in / out)), in - 1)",
    # attention: see candle.ops.attention for the exact conventions
    "rope": "(x, cos, sin, shape_x, shape_cs, interleaved, dtype) -> [B, H, S, D] rotary embedding of x "
            "[B, H, S, D] (any strides) with cos/sin [Bc, S, D/2] contiguous, Bc in {1, B}; pair (a, b) = "
            "(x[i], x[i + D/2]), or (x[2i], x[2i+1]) if interleaved, becomes (a*cos - b*sin, b*cos + a*sin); "
            "with the keyword out= (a native array of x's shape and dtype, any strides, possibly x itself) the "
            "result is written there instead",
    "sdpa": "(q, k, v, mask, shape_q, shape_k, shape_v, shape_mask, mask_kind, scale, causal_offset, dtype) -> "
            "[B, Hq, L, Ev] softmax(q k^T * scale + mask) v for q [B, Hq, L, E], k [B, Hk, S, E], v [B, Hk, S, Ev] "
            "(any strides; Hk divides Hq, query head h uses kv head h // (Hq/Hk)); mask None or 4-d broadcastable "
            "to [B, Hq, L, S], mask_kind 'bool' (uint8, non-zero = attend) or 'add' (dtype, added); "
            "causal_offset None or n: query i sees keys j <= i + n; rows that see no key give zeros",
    # normalisation: x (and a, b) contiguous arrays of `shape`; w, b vectors [shape[-1]] or None;
    # float16/bfloat16 are expected to compute in float32 and round once
    "rms_norm": "(x, w, shape, eps, dtype) -> x * rsqrt(mean(x * x over the last dim) + eps) * w",
    "layer_norm": "(x, w, b, shape, eps, dtype) -> (x - mean) * rsqrt(var + eps) * w + b over the last dim "
                  "(biased variance)",
    "silu_mul": "(a, b, shape, dtype) -> silu(a) * b, the SwiGLU gate (a and b both of `shape`)",
    # quantized weights (GGML blocks): see candle.quantized.ops and /work/notes/QUANT_INTERFACE.md; qtype is the
    # GGML type name ("Q4_K"...), shape / shape_w the weight's (N, K), raw the host uint8 (N, row_nbytes)
    "qstore": "(raw, qtype, shape) -> qnative, the backend's resident form (default: the raw bytes as uint8)",
    "qraw": "(qnative, qtype, shape) -> host uint8 numpy array (N, row_nbytes): the GGML bytes back",
    "qdequantize": "(qnative, qtype, shape, dtype) -> [N, K] float; float32 bit-identical to "
                   "candle.io.ggml_quants.dequantize, other dtypes that value rounded once",
    "qmatmul": "(x, qnative, qtype, shape_x, shape_w, dtype) -> [..., N] = x @ dequantize(W)^T for a contiguous x "
               "[..., K] of float dtype (within float32 matmul tolerance of the composition)",
    "qembedding": "(qnative, qtype, shape_w, ids, n_ids, dtype) -> [n_ids, K]: rows `ids` (int64 vector) of W "
                  "dequantized (bit-identical to qdequantize's rows)",
}


class Backend(ABC):
    """One device's storage and kernels. Subclasses implement every abstract method."""

    name: str = "?"
    device: Device

    # --- capabilities -------------------------------------------------------------------------
    def supports_dtype(self, dtype: DType) -> bool:
        """Whether tensors of `dtype` can live on this device (all seven by default)."""
        return True

    # --- transfer -----------------------------------------------------------------------------
    @abstractmethod
    def from_numpy(self, array: np.ndarray, dtype: DType) -> Native:
        """Copy a host array (already of `dtype`'s numpy dtype) to the device."""

    @abstractmethod
    def to_numpy(self, x: Native, shape: Shape, dtype: DType) -> np.ndarray:
        """A host copy (the CPU backend returns its own array, sharing memory like PyTorch)."""

    def strides(self, x: Native, shape: Shape, dtype: DType) -> Shape:
        """Element strides of `x` (contiguous strides unless the backend keeps its own layout)."""
        st, acc = [], 1
        for s in reversed(shape):
            st.append(acc)
            acc *= s
        return tuple(reversed(st))

    def dlpack_device(self) -> tuple[int, int]:
        """The DLPack (device type, index) of this device (optional)."""
        from .errors import UnsupportedError

        raise UnsupportedError(f"backend {self.name} does not export DLPack")

    def to_dlpack(self, x: Native, shape: Shape, dtype: DType, stream: Any = None) -> Any:
        """A DLPack capsule of `x` (optional)."""
        from .errors import UnsupportedError

        raise UnsupportedError(f"backend {self.name} does not export DLPack")

    def from_dlpack(self, obj: Any) -> tuple[Native, Shape, DType]:
        """Import a DLPack-capable object living on this device (optional)."""
        from .errors import UnsupportedError

        raise UnsupportedError(f"backend {self.name} does not import DLPack")

    # --- creation -----------------------------------------------------------------------------
    @abstractmethod
    def full(self, shape: Shape, value: float | int, dtype: DType) -> Native: ...

    @abstractmethod
    def arange(self, start: float | int, step: float | int, n: int, dtype: DType) -> Native:
        """`start + i * step` for i in 0..n-1."""

    @abstractmethod
    def rand_uniform(self, shape: Shape, low: float, high: float, dtype: DType, seed: int) -> Native: ...

    @abstractmethod
    def rand_normal(self, shape: Shape, mean: float, std: float, dtype: DType, seed: int) -> Native: ...

    # --- views and copies ---------------------------------------------------------------------
    @abstractmethod
    def reshape(self, x: Native, shape: Shape, new_shape: Shape) -> Native:
        """A view with `new_shape` when the layout allows it, else a contiguous copy."""

    @abstractmethod
    def permute(self, x: Native, shape: Shape, dims: Sequence[int]) -> Native:
        """A view with axes reordered."""

    @abstractmethod
    def slice(self, x: Native, shape: Shape, specs: Sequence[tuple[int, int, int]]) -> Native:
        """A view taking `range(start, stop, step)` (step > 0) along every dim."""

    @abstractmethod
    def expand(self, x: Native, shape: Shape, new_shape: Shape) -> Native:
        """A broadcast view (stride 0 along expanded dims); `new_shape` has the same ndim."""

    @abstractmethod
    def contiguous(self, x: Native, shape: Shape) -> Native:
        """`x` itself if already contiguous, else a contiguous copy."""

    @abstractmethod
    def is_contiguous(self, x: Native, shape: Shape) -> bool: ...

    @abstractmethod
    def copy_(self, dst: Native, src: Native, shape: Shape) -> None:
        """Write `src` (broadcastable to `shape`, same dtype) into the view `dst`, in place."""

    @abstractmethod
    def cast(self, x: Native, shape: Shape, src: DType, dst: DType) -> Native:
        """Convert to `dst` (floats to ints truncate toward zero, like PyTorch)."""

    @abstractmethod
    def flip(self, x: Native, shape: Shape, dims: Sequence[int]) -> Native:
        """Reverse the order of elements along `dims` (a copy or a view)."""

    # --- elementwise --------------------------------------------------------------------------
    @abstractmethod
    def unary(self, op: str, x: Native, shape: Shape, dtype: DType) -> Native:
        """One of `UNARY_OPS`."""

    @abstractmethod
    def affine(self, x: Native, shape: Shape, mul: float | int, add: float | int, dtype: DType) -> Native:
        """`x * mul + add`."""

    @abstractmethod
    def powf(self, x: Native, shape: Shape, exponent: float, dtype: DType) -> Native: ...

    @abstractmethod
    def elu(self, x: Native, shape: Shape, alpha: float, dtype: DType) -> Native: ...

    @abstractmethod
    def clamp(self, x: Native, shape: Shape, low: float | int | None, high: float | int | None,
              dtype: DType) -> Native: ...

    @abstractmethod
    def binary(self, op: str, a: Native, b: Native, shape: Shape, dtype: DType) -> Native:
        """One of `BINARY_OPS`; `shape` is the broadcast result shape."""

    @abstractmethod
    def cmp(self, op: str, a: Native, b: Native, shape: Shape, dtype: DType) -> Native:
        """One of `CMP_OPS`; the result is uint8 (1 where true)."""

    @abstractmethod
    def where(self, cond: Native, a: Native, b: Native, shape: Shape, dtype: DType) -> Native:
        """`a` where the uint8 `cond` is non-zero, else `b`; `dtype` is that of a and b."""

    # --- reductions ---------------------------------------------------------------------------
    @abstractmethod
    def reduce(self, op: str, x: Native, shape: Shape, dims: Sequence[int], keepdim: bool,
               dtype: DType) -> Native:
        """One of `REDUCE_OPS` over `dims` (non-empty); sums accumulate in at least float32."""

    @abstractmethod
    def arg_reduce(self, op: str, x: Native, shape: Shape, dim: int, keepdim: bool, dtype: DType) -> Native:
        """argmax/argmin along `dim` as int64; ties go to the first index."""

    # --- linear algebra -----------------------------------------------------------------------
    @abstractmethod
    def matmul(self, a: Native, b: Native, shape_a: Shape, shape_b: Shape, dtype: DType) -> Native:
        """`a @ b` for ndim >= 2 with batch dims that broadcast (core validated the shapes)."""

    # --- indexing -----------------------------------------------------------------------------
    @abstractmethod
    def index_select(self, x: Native, shape: Shape, index: Native, n_index: int, dim: int,
                     dtype: DType) -> Native:
        """Rows `index` (1-d int64, in range) of `x` along `dim`."""

    @abstractmethod
    def gather(self, x: Native, shape: Shape, dim: int, index: Native, index_shape: Shape,
               dtype: DType) -> Native:
        """`out[i][j][k] = x[i][index[i][j][k]][k]` for dim 1 (PyTorch's gather)."""

    @abstractmethod
    def scatter(self, x: Native, shape: Shape, dim: int, index: Native, index_shape: Shape,
                src: Native, reduce: str | None, dtype: DType) -> Native:
        """A copy of `x` with `src` values written (reduce=None) or added (reduce="add") at `index`."""

    @abstractmethod
    def index_add(self, x: Native, shape: Shape, dim: int, index: Native, n_index: int, src: Native,
                  dtype: DType) -> Native:
        """A copy of `x` with slices of `src` added at positions `index` along `dim`."""

    @abstractmethod
    def cat(self, xs: Sequence[Native], shapes: Sequence[Shape], dim: int, dtype: DType) -> Native: ...

    @abstractmethod
    def sort(self, x: Native, shape: Shape, dim: int, descending: bool, dtype: DType) -> tuple[Native, Native]:
        """Stable sort along `dim`: (values, int64 indices)."""

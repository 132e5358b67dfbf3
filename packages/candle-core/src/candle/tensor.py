"""The `Tensor` class: a native array on a device, its shape and dtype, and its autograd node.

Methods are thin: each delegates to a function in `candle.ops`, where the checks, the shape and
dtype rules and the gradient rule of the op live.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import autograd as _ag
from .device import Device
from .dtype import DType, as_dtype
from .errors import CandleError, DTypeError, GradError, ShapeError, fmt_shape

if TYPE_CHECKING:
    import numpy as np

    from .backend import Backend

Dims = int | Sequence[int] | None


class Tensor:
    """An n-dimensional array on a device, with PyTorch's API and autograd."""

    __slots__ = ("_data", "_backend", "_device", "_dtype", "_shape", "_requires_grad", "_node", "grad",
                 "_retains_grad", "__weakref__")

    _data: Any
    _backend: Backend
    _device: Device
    _dtype: DType
    _shape: tuple[int, ...]
    _requires_grad: bool
    _node: _ag.Node | None
    grad: Tensor | None
    _retains_grad: bool

    def __init__(self, data: Any, dtype: DType | str | None = None, device: Device | str | None = None,
                 requires_grad: bool = False):
        t = _ops.tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)
        for k in Tensor.__slots__[:-1]:
            object.__setattr__(self, k, getattr(t, k))

    @staticmethod
    def _make(data: Any, shape: tuple[int, ...], dtype: DType, device: Device, backend: Backend) -> Tensor:
        t = object.__new__(Tensor)
        t._data = data
        t._backend = backend
        t._device = device
        t._dtype = dtype
        t._shape = shape
        t._requires_grad = False
        t._node = None
        t.grad = None
        t._retains_grad = False
        return t

    @staticmethod
    def _full_like(t: Tensor, value: float | int) -> Tensor:
        b = t._backend
        return Tensor._make(b.full(t._shape, value, t._dtype), t._shape, t._dtype, t._device, b)

    # --- attributes ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def dtype(self) -> DType:
        return self._dtype

    @property
    def device(self) -> Device:
        return self._device

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def dim(self) -> int:
        return len(self._shape)

    def size(self, dim: int | None = None) -> Any:
        if dim is None:
            return self._shape
        return self._shape[_ops.norm_dim(dim, len(self._shape), "size")]

    def numel(self) -> int:
        n = 1
        for s in self._shape:
            n *= s
        return n

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of a 0-d tensor")
        return self._shape[0]

    def element_size(self) -> int:
        return self._dtype.itemsize

    def stride(self, dim: int | None = None) -> Any:
        st = self._backend.strides(self._data, self._shape, self._dtype)
        return st if dim is None else st[_ops.norm_dim(dim, len(self._shape), "stride")]

    def is_contiguous(self) -> bool:
        return self._backend.is_contiguous(self._data, self._shape)

    def is_floating_point(self) -> bool:
        return self._dtype.is_floating_point

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    def requires_grad_(self, value: bool = True) -> Tensor:
        if value and not self._dtype.is_floating_point:
            raise GradError(f"only float tensors can require grad, got dtype {self._dtype.name}")
        if not value and self._node is not None:
            raise GradError("requires_grad_(False) on a non-leaf tensor; use detach()")
        self._requires_grad = bool(value)
        return self

    @property
    def is_leaf(self) -> bool:
        return self._node is None

    @property
    def grad_fn(self) -> _ag.Node | None:
        return self._node

    def retain_grad(self) -> None:
        """Keep `.grad` of this non-leaf tensor after backward."""
        if not self._requires_grad:
            raise GradError("retain_grad on a tensor that does not require grad")
        self._retains_grad = True

    def backward(self, gradient: Tensor | None = None) -> None:
        """Accumulate gradients of this tensor into the `.grad` of the leaves that require grad."""
        _ag.backward(self, gradient)

    def detach(self) -> Tensor:
        """The same data without the autograd graph (shares storage)."""
        return Tensor._make(self._data, self._shape, self._dtype, self._device, self._backend)

    @property
    def data(self) -> Tensor:
        return self.detach()

    # --- conversion ----------------------------------------------------------------------------
    def to(self, *args: Any, device: Device | str | None = None, dtype: DType | str | None = None,
           copy: bool = False) -> Tensor:
        """`t.to(device)`, `t.to(dtype)`, `t.to(device, dtype)`, `t.to(other)`."""
        for a in args:
            if isinstance(a, Tensor):
                device, dtype = a._device, a._dtype
            elif isinstance(a, DType):
                dtype = a
            elif isinstance(a, str) and _looks_like_dtype(a):
                dtype = a
            else:
                device = a
        return _ops.to(self, device=device, dtype=dtype, copy=copy)

    def cpu(self) -> Tensor:
        return self.to(device="cpu")

    def cuda(self, index: int = 0) -> Tensor:
        return self.to(device=Device("cuda", index))

    def float(self) -> Tensor:
        return self.to(dtype="float32")

    def double(self) -> Tensor:
        return self.to(dtype="float64")

    def half(self) -> Tensor:
        return self.to(dtype="float16")

    def bfloat16(self) -> Tensor:
        return self.to(dtype="bfloat16")

    def long(self) -> Tensor:
        return self.to(dtype="int64")

    def type_as(self, other: Tensor) -> Tensor:
        return self.to(dtype=other._dtype)

    def numpy(self) -> np.ndarray:
        """A host numpy array (a copy on accelerators; on the CPU it may share memory)."""
        return self._backend.to_numpy(self._data, self._shape, self._dtype)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        a = self.numpy()
        if dtype is not None:
            a = a.astype(dtype)
        return a.copy() if copy else a

    def __dlpack__(self, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: bool | None = None) -> Any:
        return self._backend.to_dlpack(self._data, self._shape, self._dtype, stream)

    def __dlpack_device__(self) -> tuple[int, int]:
        return _ops.dlpack_device(self)

    def item(self) -> float | int:
        if self.numel() != 1:
            raise ShapeError(f"item(): expected one element, got shape {fmt_shape(self._shape)}")
        return self.numpy().reshape(()).item()

    def tolist(self) -> Any:
        a = self.numpy()
        if self._dtype.short in ("bf16", "f16"):
            a = a.astype("float32")
        return a.tolist()

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._dtype.is_floating_point:
            raise DTypeError(f"only integer tensors can be used as an index, got {self._dtype.name}")
        return int(self.item())

    def __bool__(self) -> bool:
        if self.numel() != 1:
            raise ShapeError(f"the truth value of a tensor of shape {fmt_shape(self._shape)} is ambiguous")
        return bool(self.item())

    def __iter__(self) -> Iterator[Tensor]:
        if not self._shape:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self._shape[0]):
            yield self[i]

    def __repr__(self) -> str:
        return _ops.format_tensor(self)

    __hash__ = object.__hash__

    def __reduce__(self) -> Any:
        raise CandleError("candle tensors are not picklable; save them with candle.save_safetensors")

    # --- arithmetic ----------------------------------------------------------------------------
    def __add__(self, o: Any) -> Tensor:
        return _ops.add(self, o)

    def __radd__(self, o: Any) -> Tensor:
        return _ops.add(o, self)

    def __sub__(self, o: Any) -> Tensor:
        return _ops.sub(self, o)

    def __rsub__(self, o: Any) -> Tensor:
        return _ops.sub(o, self)

    def __mul__(self, o: Any) -> Tensor:
        return _ops.mul(self, o)

    def __rmul__(self, o: Any) -> Tensor:
        return _ops.mul(o, self)

    def __truediv__(self, o: Any) -> Tensor:
        return _ops.div(self, o)

    def __rtruediv__(self, o: Any) -> Tensor:
        return _ops.div(o, self)

    def __floordiv__(self, o: Any) -> Tensor:
        return _ops.floor_divide(self, o)

    def __rfloordiv__(self, o: Any) -> Tensor:
        return _ops.floor_divide(o, self)

    def __mod__(self, o: Any) -> Tensor:
        return _ops.remainder(self, o)

    def __rmod__(self, o: Any) -> Tensor:
        return _ops.remainder(o, self)

    def __pow__(self, o: Any) -> Tensor:
        return _ops.pow(self, o)

    def __rpow__(self, o: Any) -> Tensor:
        return _ops.pow(o, self)

    def __matmul__(self, o: Tensor) -> Tensor:
        return _ops.matmul(self, o)

    def __rmatmul__(self, o: Tensor) -> Tensor:
        return _ops.matmul(o, self)

    def __neg__(self) -> Tensor:
        return _ops.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _ops.abs(self)

    def __eq__(self, o: Any) -> Tensor:  # type: ignore[override]
        return _ops.eq(self, o)

    def __ne__(self, o: Any) -> Tensor:  # type: ignore[override]
        return _ops.ne(self, o)

    def __lt__(self, o: Any) -> Tensor:
        return _ops.lt(self, o)

    def __le__(self, o: Any) -> Tensor:
        return _ops.le(self, o)

    def __gt__(self, o: Any) -> Tensor:
        return _ops.gt(self, o)

    def __ge__(self, o: Any) -> Tensor:
        return _ops.ge(self, o)

    def __and__(self, o: Any) -> Tensor:
        return _ops.logical_and(self, o)

    def __or__(self, o: Any) -> Tensor:
        return _ops.logical_or(self, o)

    def __xor__(self, o: Any) -> Tensor:
        return _ops.logical_xor(self, o)

    def __invert__(self) -> Tensor:
        return _ops.logical_not(self)

    def __getitem__(self, index: Any) -> Tensor:
        return _ops.getitem(self, index)

    def __setitem__(self, index: Any, value: Any) -> None:
        _ops.setitem(self, index, value)

    # --- in-place (never recorded by autograd) ---------------------------------------------------
    def copy_(self, src: Any) -> Tensor:
        """Write `src` (a tensor or scalar broadcastable to this shape) into this tensor."""
        return _ops.copy_(self, src)

    def fill_(self, value: float | int) -> Tensor:
        return _ops.copy_(self, value)

    def zero_(self) -> Tensor:
        return _ops.copy_(self, 0)

    def add_(self, o: Any, alpha: float | None = None) -> Tensor:
        return _ops.copy_(self, self + (o if alpha is None else o * alpha))

    def sub_(self, o: Any, alpha: float | None = None) -> Tensor:
        return _ops.copy_(self, self - (o if alpha is None else o * alpha))

    def mul_(self, o: Any) -> Tensor:
        return _ops.copy_(self, self * o)

    def div_(self, o: Any) -> Tensor:
        return _ops.copy_(self, self / o)

    def clamp_(self, min: float | None = None, max: float | None = None) -> Tensor:
        return _ops.copy_(self, _ops.clamp(self, min, max))

    # --- elementwise ---------------------------------------------------------------------------
    def add(self, o: Any, alpha: float | None = None) -> Tensor:
        return _ops.add(self, o if alpha is None else o * alpha)

    def sub(self, o: Any, alpha: float | None = None) -> Tensor:
        return _ops.sub(self, o if alpha is None else o * alpha)

    def mul(self, o: Any) -> Tensor:
        return _ops.mul(self, o)

    def div(self, o: Any) -> Tensor:
        return _ops.div(self, o)

    def pow(self, o: Any) -> Tensor:
        return _ops.pow(self, o)

    def maximum(self, o: Any) -> Tensor:
        return _ops.maximum(self, o)

    def minimum(self, o: Any) -> Tensor:
        return _ops.minimum(self, o)

    def neg(self) -> Tensor:
        return _ops.neg(self)

    def abs(self) -> Tensor:
        return _ops.abs(self)

    def sqr(self) -> Tensor:
        return _ops.sqr(self)

    def square(self) -> Tensor:
        return _ops.sqr(self)

    def sqrt(self) -> Tensor:
        return _ops.sqrt(self)

    def rsqrt(self) -> Tensor:
        return _ops.rsqrt(self)

    def reciprocal(self) -> Tensor:
        return _ops.recip(self)

    def exp(self) -> Tensor:
        return _ops.exp(self)

    def expm1(self) -> Tensor:
        return _ops.expm1(self)

    def log(self) -> Tensor:
        return _ops.log(self)

    def log1p(self) -> Tensor:
        return _ops.log1p(self)

    def sin(self) -> Tensor:
        return _ops.sin(self)

    def cos(self) -> Tensor:
        return _ops.cos(self)

    def tan(self) -> Tensor:
        return _ops.tan(self)

    def tanh(self) -> Tensor:
        return _ops.tanh(self)

    def erf(self) -> Tensor:
        return _ops.erf(self)

    def relu(self) -> Tensor:
        return _ops.relu(self)

    def gelu(self, approximate: str = "none") -> Tensor:
        return _ops.gelu(self, approximate)

    def silu(self) -> Tensor:
        return _ops.silu(self)

    def sigmoid(self) -> Tensor:
        return _ops.sigmoid(self)

    def floor(self) -> Tensor:
        return _ops.floor(self)

    def ceil(self) -> Tensor:
        return _ops.ceil(self)

    def round(self) -> Tensor:
        return _ops.round(self)

    def trunc(self) -> Tensor:
        return _ops.trunc(self)

    def sign(self) -> Tensor:
        return _ops.sign(self)

    def affine(self, mul: float, add: float) -> Tensor:
        return _ops.affine(self, mul, add)

    def powf(self, exponent: float) -> Tensor:
        return _ops.powf(self, exponent)

    def elu(self, alpha: float = 1.0) -> Tensor:
        return _ops.elu(self, alpha)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:
        return _ops.clamp(self, min, max)

    clip = clamp

    def eq(self, o: Any) -> Tensor:
        return _ops.eq(self, o)

    def ne(self, o: Any) -> Tensor:
        return _ops.ne(self, o)

    def lt(self, o: Any) -> Tensor:
        return _ops.lt(self, o)

    def le(self, o: Any) -> Tensor:
        return _ops.le(self, o)

    def gt(self, o: Any) -> Tensor:
        return _ops.gt(self, o)

    def ge(self, o: Any) -> Tensor:
        return _ops.ge(self, o)

    def where(self, cond: Tensor, other: Any) -> Tensor:
        return _ops.where(cond, self, other)

    def masked_fill(self, mask: Tensor, value: float | int) -> Tensor:
        return _ops.masked_fill(self, mask, value)

    # --- reductions ----------------------------------------------------------------------------
    def sum(self, dim: Dims = None, keepdim: bool = False, dtype: DType | None = None) -> Tensor:
        return _ops.sum(self, dim, keepdim, dtype=dtype)

    def mean(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        return _ops.mean(self, dim, keepdim)

    def prod(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        return _ops.prod(self, dim, keepdim)

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        return _ops.max(self, dim, keepdim)

    def min(self, dim: int | None = None, keepdim: bool = False) -> Any:
        return _ops.min(self, dim, keepdim)

    def amax(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        return _ops.amax(self, dim, keepdim)

    def amin(self, dim: Dims = None, keepdim: bool = False) -> Tensor:
        return _ops.amin(self, dim, keepdim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _ops.argmax(self, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return _ops.argmin(self, dim, keepdim)

    def var(self, dim: Dims = None, keepdim: bool = False, correction: int = 1) -> Tensor:
        return _ops.var(self, dim, keepdim, correction=correction)

    def std(self, dim: Dims = None, keepdim: bool = False, correction: int = 1) -> Tensor:
        return _ops.std(self, dim, keepdim, correction=correction)

    def logsumexp(self, dim: Dims, keepdim: bool = False) -> Tensor:
        return _ops.logsumexp(self, dim, keepdim)

    def cumsum(self, dim: int, dtype: DType | None = None) -> Tensor:
        return _ops.cumsum(self, dim, dtype=dtype)

    def softmax(self, dim: int, dtype: DType | None = None) -> Tensor:
        return _ops.softmax(self, dim, dtype=dtype)

    def log_softmax(self, dim: int, dtype: DType | None = None) -> Tensor:
        return _ops.log_softmax(self, dim, dtype=dtype)

    def all(self) -> Tensor:
        return _ops.all(self)

    def any(self) -> Tensor:
        return _ops.any(self)

    # --- linear algebra ------------------------------------------------------------------------
    def matmul(self, o: Tensor) -> Tensor:
        return _ops.matmul(self, o)

    # --- views and shape -----------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        return _ops.reshape(self, *shape)

    def view(self, *shape: Any) -> Tensor:
        return _ops.view(self, *shape)

    def view_as(self, other: Tensor) -> Tensor:
        return _ops.view(self, other._shape)

    def reshape_as(self, other: Tensor) -> Tensor:
        return _ops.reshape(self, other._shape)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return _ops.transpose(self, dim0, dim1)

    def t(self) -> Tensor:
        return _ops.t(self)

    @property
    def T(self) -> Tensor:  # noqa: N802
        return _ops.permute(self, tuple(reversed(range(len(self._shape)))))

    @property
    def mT(self) -> Tensor:  # noqa: N802
        return _ops.transpose(self, -2, -1)

    def permute(self, *dims: Any) -> Tensor:
        return _ops.permute(self, *dims)

    def movedim(self, source: int, destination: int) -> Tensor:
        return _ops.movedim(self, source, destination)

    def narrow(self, dim: int, start: int, length: int) -> Tensor:
        return _ops.narrow(self, dim, start, length)

    def squeeze(self, dim: Dims = None) -> Tensor:
        return _ops.squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return _ops.unsqueeze(self, dim)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return _ops.flatten(self, start_dim, end_dim)

    def unflatten(self, dim: int, sizes: Sequence[int]) -> Tensor:
        return _ops.unflatten(self, dim, sizes)

    def expand(self, *shape: Any) -> Tensor:
        return _ops.expand(self, *shape)

    def expand_as(self, other: Tensor) -> Tensor:
        return _ops.expand(self, other._shape)

    def broadcast_to(self, shape: Sequence[int]) -> Tensor:
        return _ops.broadcast_to(self, shape)

    def chunk(self, chunks: int, dim: int = 0) -> list[Tensor]:
        return _ops.chunk(self, chunks, dim)

    def split(self, split_size_or_sections: int | Sequence[int], dim: int = 0) -> list[Tensor]:
        return _ops.split(self, split_size_or_sections, dim)

    def unbind(self, dim: int = 0) -> list[Tensor]:
        return _ops.unbind(self, dim)

    def flip(self, dims: int | Sequence[int]) -> Tensor:
        return _ops.flip(self, dims)

    def contiguous(self) -> Tensor:
        return _ops.contiguous(self)

    def clone(self) -> Tensor:
        return _ops.clone(self)

    def repeat(self, *sizes: Any) -> Tensor:
        return _ops.repeat(self, *sizes)

    # --- indexing ------------------------------------------------------------------------------
    def index_select(self, dim: int, index: Tensor) -> Tensor:
        return _ops.index_select(self, dim, index)

    def gather(self, dim: int, index: Tensor) -> Tensor:
        return _ops.gather(self, dim, index)

    def scatter(self, dim: int, index: Tensor, src: Any) -> Tensor:
        return _ops.scatter(self, dim, index, src)

    def scatter_add(self, dim: int, index: Tensor, src: Tensor) -> Tensor:
        return _ops.scatter_add(self, dim, index, src)

    def index_add(self, dim: int, index: Tensor, source: Tensor, alpha: float = 1) -> Tensor:
        return _ops.index_add(self, dim, index, source, alpha=alpha)

    def tril(self, diagonal: int = 0) -> Tensor:
        return _ops.tril(self, diagonal)

    def triu(self, diagonal: int = 0) -> Tensor:
        return _ops.triu(self, diagonal)

    def sort(self, dim: int = -1, descending: bool = False) -> Any:
        return _ops.sort(self, dim, descending)

    def argsort(self, dim: int = -1, descending: bool = False) -> Tensor:
        return _ops.argsort(self, dim, descending)

    def topk(self, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> Any:
        return _ops.topk(self, k, dim, largest, sorted)


def _looks_like_dtype(s: str) -> bool:
    try:
        as_dtype(s)
        return True
    except DTypeError:
        return False


from . import ops as _ops  # noqa: E402  (ops import Tensor; bound here to break the cycle)

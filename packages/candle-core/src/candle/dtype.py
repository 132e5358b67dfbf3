"""Element types: the seven dtypes of Candle, their names, and PyTorch-style type promotion."""

from __future__ import annotations

from typing import Any

from .errors import DTypeError


class DType:
    """An element type. Instances are singletons: compare with `is` or `==`."""

    __slots__ = ("name", "short", "itemsize", "is_floating_point", "is_signed", "_numpy")

    def __init__(self, name: str, short: str, itemsize: int, is_float: bool, is_signed: bool):
        self.name = name
        self.short = short
        self.itemsize = itemsize
        self.is_floating_point = is_float
        self.is_signed = is_signed
        self._numpy: Any = None

    @property
    def numpy(self) -> Any:
        """The matching numpy dtype (bfloat16 comes from `ml_dtypes`)."""
        if self._numpy is None:
            import numpy as np

            if self.short == "bf16":
                import ml_dtypes

                self._numpy = np.dtype(ml_dtypes.bfloat16)
            else:
                self._numpy = np.dtype(self.name)
        return self._numpy

    def __repr__(self) -> str:
        return f"candle.{self.name}"

    def __reduce__(self) -> str:
        return self.name


uint8 = DType("uint8", "u8", 1, False, False)
uint32 = DType("uint32", "u32", 4, False, False)
int64 = DType("int64", "i64", 8, False, True)
float16 = DType("float16", "f16", 2, True, True)
bfloat16 = DType("bfloat16", "bf16", 2, True, True)
float32 = DType("float32", "f32", 4, True, True)
float64 = DType("float64", "f64", 8, True, True)

ALL: tuple[DType, ...] = (uint8, uint32, int64, float16, bfloat16, float32, float64)
FLOATS: tuple[DType, ...] = (float16, bfloat16, float32, float64)
INTS: tuple[DType, ...] = (uint8, uint32, int64)

_BY_NAME: dict[str, DType] = {}
for _d in ALL:
    _BY_NAME[_d.name] = _d
    _BY_NAME[_d.short] = _d
_BY_NAME.update(half=float16, float=float32, double=float64, long=int64, bool=uint8)

_default_float: DType = float32


def get_default_dtype() -> DType:
    """The float dtype of tensors built from Python floats (float32 unless changed)."""
    return _default_float


def set_default_dtype(dtype: DType | str) -> None:
    """Set the float dtype used for Python floats and float creation ops."""
    global _default_float
    d = as_dtype(dtype)
    if not d.is_floating_point:
        raise DTypeError(f"set_default_dtype: expected a float dtype, got {d.name}")
    _default_float = d


def as_dtype(value: Any) -> DType:
    """Turn a `DType`, a name (`"f32"`, `"float32"`), a numpy dtype or a torch dtype into a `DType`."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str):
        d = _BY_NAME.get(value.removeprefix("torch.").removeprefix("candle."))
        if d is not None:
            return d
        raise DTypeError(f"unknown dtype {value!r}; expected one of {', '.join(x.short for x in ALL)}")
    name = getattr(value, "name", None)
    if name is None and value in (float, int, bool):
        return {float: _default_float, int: int64, bool: uint8}[value]
    if name is None:
        name = str(value)
    if str(value).startswith("torch."):
        name = str(value)[6:]
    d = _BY_NAME.get(name)
    if d is None:
        raise DTypeError(f"dtype {value!r} has no candle equivalent; supported: {', '.join(x.name for x in ALL)}")
    return d


def from_numpy_dtype(np_dtype: Any) -> DType:
    """The candle dtype of a numpy dtype; bool maps to uint8."""
    name = np_dtype.name
    if name == "bool":
        return uint8
    d = _BY_NAME.get(name)
    if d is None:
        raise DTypeError(f"numpy dtype {name} has no candle equivalent; supported: {', '.join(x.name for x in ALL)}")
    return d


_INT_RANK = {uint8: 0, uint32: 1, int64: 2}
_FLOAT_RANK = {float16: 0, bfloat16: 0, float32: 1, float64: 2}


def promote(a: DType, b: DType) -> DType:
    """The result dtype of a binary op on tensors of dtypes `a` and `b` (PyTorch's rules)."""
    if a is b:
        return a
    if a.is_floating_point and b.is_floating_point:
        ra, rb = _FLOAT_RANK[a], _FLOAT_RANK[b]
        if ra == rb:  # float16 with bfloat16
            return float32
        return a if ra > rb else b
    if a.is_floating_point:
        return a
    if b.is_floating_point:
        return b
    return a if _INT_RANK[a] > _INT_RANK[b] else b


def scalar_result(dtype: DType, scalar: Any) -> DType:
    """The result dtype of a tensor of `dtype` combined with a Python scalar (the tensor wins
    unless a float scalar meets an integer tensor, which gives the default float)."""
    if isinstance(scalar, float) and not dtype.is_floating_point:
        return _default_float
    return dtype

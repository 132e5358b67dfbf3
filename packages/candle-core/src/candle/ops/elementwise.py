"""Elementwise ops: unary maps, affine/powf/clamp/elu, binary ops with broadcasting and Python
scalars, comparisons, `where` and casts, each with its gradient rule."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..autograd import state as _ag_state
from ..dtype import DType, as_dtype, get_default_dtype, promote, scalar_result, uint8
from ..errors import DTypeError
from ..tensor import Tensor
from ._base import broadcast_shapes, like, make, needs_grad, record, same_device, scalar_tensor, unbroadcast

Scalar = int | float


def cast(x: Tensor, dtype: DType) -> Tensor:
    """`x` converted to `dtype` (x itself when it already has it)."""
    if x._dtype is dtype:
        return x
    out = like(x, x._backend.cast(x._data, x._shape, x._dtype, dtype), x._shape, dtype)
    if dtype.is_floating_point and needs_grad(x):
        src = x._dtype
        record(out, "cast", (x,), lambda g: (cast(g, src),))
    return out


def _float_input(x: Tensor, op: str) -> Tensor:
    """Ops defined on floats take integer inputs as the default float dtype (PyTorch's rule)."""
    return x if x._dtype.is_floating_point else cast(x, get_default_dtype())


# --- unary ------------------------------------------------------------------------------------
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _grad_gelu_tanh(x: Tensor, g: Tensor) -> Tensor:
    x2 = x * x
    inner = (x + 0.044715 * x2 * x) * _SQRT_2_OVER_PI
    t = tanh(inner)
    d_inner = (1.0 + 0.134145 * x2) * _SQRT_2_OVER_PI
    return g * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * d_inner)


def _grad_gelu_erf(x: Tensor, g: Tensor) -> Tensor:
    cdf = 0.5 * (1.0 + erf(x * _INV_SQRT_2))
    pdf = exp(-0.5 * x * x) * _INV_SQRT_2PI
    return g * (cdf + x * pdf)


def _grad_silu(x: Tensor, g: Tensor) -> Tensor:
    s = sigmoid(x)
    return g * s * (1.0 + x * (1.0 - s))


# op -> (works on integers?, grad(x, y, g))
_UNARY: dict[str, tuple[bool, Callable[[Tensor, Tensor, Tensor], Tensor] | None]] = {
    "neg": (True, lambda x, y, g: -g),
    "abs": (True, lambda x, y, g: g * sign(x)),
    "sqr": (True, lambda x, y, g: g * x * 2.0),
    "sqrt": (False, lambda x, y, g: g / (y * 2.0)),
    "rsqrt": (False, lambda x, y, g: g * y * y * y * -0.5),
    "recip": (False, lambda x, y, g: -g * y * y),
    "exp": (False, lambda x, y, g: g * y),
    "expm1": (False, lambda x, y, g: g * (y + 1.0)),
    "log": (False, lambda x, y, g: g / x),
    "log1p": (False, lambda x, y, g: g / (x + 1.0)),
    "sin": (False, lambda x, y, g: g * cos(x)),
    "cos": (False, lambda x, y, g: -g * sin(x)),
    "tan": (False, lambda x, y, g: g * (1.0 + y * y)),
    "tanh": (False, lambda x, y, g: g * (1.0 - y * y)),
    "erf": (False, lambda x, y, g: g * exp(-x * x) * (2.0 / math.sqrt(math.pi))),
    "gelu": (False, lambda x, y, g: _grad_gelu_tanh(x, g)),
    "gelu_erf": (False, lambda x, y, g: _grad_gelu_erf(x, g)),
    "relu": (True, lambda x, y, g: g * cast(gt(x, 0), x._dtype)),
    "silu": (False, lambda x, y, g: _grad_silu(x, g)),
    "sigmoid": (False, lambda x, y, g: g * y * (1.0 - y)),
    "floor": (True, lambda x, y, g: g * 0.0),
    "ceil": (True, lambda x, y, g: g * 0.0),
    "round": (True, lambda x, y, g: g * 0.0),
    "trunc": (True, lambda x, y, g: g * 0.0),
    "sign": (True, lambda x, y, g: g * 0.0),
}


def unary(op: str, x: Tensor) -> Tensor:
    """Apply one of the backend's unary ops, with its gradient rule."""
    if not isinstance(x, Tensor):
        raise DTypeError(f"{op}: expected a Tensor, got {type(x).__name__}")
    int_ok, grad = _UNARY[op]
    if not int_ok:
        x = _float_input(x, op)
    out = make(x._backend.unary(op, x._data, x._shape, x._dtype), x._shape, x._dtype, x._device, x._backend)
    if _ag_state.enabled and x._requires_grad:
        y = out.detach()
        record(out, op, (x,), lambda g: (grad(x, y, g),))  # type: ignore[misc]
    return out


def _unary_fn(op: str) -> Callable[[Tensor], Tensor]:
    def fn(x: Tensor) -> Tensor:
        return unary(op, x)

    fn.__name__ = fn.__qualname__ = op
    fn.__doc__ = f"Elementwise {op}."
    return fn


neg = _unary_fn("neg")
abs = _unary_fn("abs")  # noqa: A001
sqr = _unary_fn("sqr")
square = sqr
sqrt = _unary_fn("sqrt")
rsqrt = _unary_fn("rsqrt")
recip = _unary_fn("recip")
reciprocal = recip
exp = _unary_fn("exp")
expm1 = _unary_fn("expm1")
log = _unary_fn("log")
log1p = _unary_fn("log1p")
sin = _unary_fn("sin")
cos = _unary_fn("cos")
tan = _unary_fn("tan")
tanh = _unary_fn("tanh")
erf = _unary_fn("erf")
relu = _unary_fn("relu")
silu = _unary_fn("silu")
sigmoid = _unary_fn("sigmoid")
floor = _unary_fn("floor")
ceil = _unary_fn("ceil")
round = _unary_fn("round")  # noqa: A001
trunc = _unary_fn("trunc")
sign = _unary_fn("sign")


def gelu(x: Tensor, approximate: str = "none") -> Tensor:
    """GELU: exact (erf) by default like PyTorch, or `approximate="tanh"`."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return unary("gelu" if approximate == "tanh" else "gelu_erf", x)


def affine(x: Tensor, mul: Scalar, add: Scalar) -> Tensor:
    """`x * mul + add` in one kernel."""
    out = like(x, x._backend.affine(x._data, x._shape, mul, add, x._dtype), x._shape)
    if needs_grad(x):
        record(out, "affine", (x,), lambda g: (g * mul,))
    return out


def powf(x: Tensor, exponent: float) -> Tensor:
    """`x ** exponent` for a float exponent."""
    x = _float_input(x, "powf")
    out = like(x, x._backend.powf(x._data, x._shape, float(exponent), x._dtype), x._shape)
    if needs_grad(x):
        record(out, "powf", (x,), lambda g: (g * powf(x, exponent - 1.0) * exponent,))
    return out


def elu(x: Tensor, alpha: float = 1.0) -> Tensor:
    x = _float_input(x, "elu")
    out = like(x, x._backend.elu(x._data, x._shape, float(alpha), x._dtype), x._shape)
    if needs_grad(x):
        y = out.detach()
        record(out, "elu", (x,), lambda g: (g * where(gt(x, 0), 1.0, y + alpha),))
    return out


def clamp(x: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    """Clip to [min, max] (either may be None, a scalar, or a tensor)."""
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        out = x
        if min is not None:
            out = maximum(out, min)
        if max is not None:
            out = minimum(out, max)
        return out
    for v in (min, max):
        if isinstance(v, float) and not x._dtype.is_floating_point:
            x = cast(x, get_default_dtype())
    out = like(x, x._backend.clamp(x._data, x._shape, min, max, x._dtype), x._shape)
    if needs_grad(x):
        def grad(g: Tensor) -> tuple[Tensor]:
            keep = ge(x, min) if min is not None else None
            if max is not None:
                hi = le(x, max)
                keep = hi if keep is None else keep * hi
            return (g * cast(keep, g._dtype),)  # type: ignore[arg-type]

        record(out, "clamp", (x,), grad)
    return out


clip = clamp


# --- binary -----------------------------------------------------------------------------------
def _pow_grad(a: Tensor, b: Tensor, y: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    ga = g * b * pow(a, b - 1.0)
    gb = g * y * log(where(gt(a, 0), a, 1.0))  # PyTorch gives 0 where a <= 0 (for finite y)
    return ga, gb


def _max_grad(a: Tensor, b: Tensor, y: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    wa = cast(gt(a, b), g._dtype) + cast(eq(a, b), g._dtype) * 0.5
    return g * wa, g * (1.0 - wa)


def _min_grad(a: Tensor, b: Tensor, y: Tensor, g: Tensor) -> tuple[Tensor, Tensor]:
    wa = cast(lt(a, b), g._dtype) + cast(eq(a, b), g._dtype) * 0.5
    return g * wa, g * (1.0 - wa)


_BINARY_GRAD: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor | None, Tensor | None]] | None] = {
    "add": lambda a, b, y, g: (g, g),
    "sub": lambda a, b, y, g: (g, -g),
    "mul": lambda a, b, y, g: (g * b, g * a),
    "div": lambda a, b, y, g: (g / b, -g * a / (b * b)),
    "pow": _pow_grad,
    "maximum": _max_grad,
    "minimum": _min_grad,
    "floor_divide": lambda a, b, y, g: (g * 0.0, g * 0.0),
    "remainder": lambda a, b, y, g: (g, -g * floor_divide(a, b)),
}


def _as_operands(op: str, a: Any, b: Any) -> tuple[Tensor, Tensor, DType]:
    """Both operands as tensors of one result dtype on one device (scalars become 0-d tensors)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        same_device(op, a, b)
        dtype = a._dtype if a._dtype is b._dtype else promote(a._dtype, b._dtype)
    elif isinstance(a, Tensor):
        _check_scalar(op, b)
        dtype = scalar_result(a._dtype, b)
        b = scalar_tensor(a, b, dtype)
    elif isinstance(b, Tensor):
        _check_scalar(op, a)
        dtype = scalar_result(b._dtype, a)
        a = scalar_tensor(b, a, dtype)
    else:
        raise DTypeError(f"{op}: expected at least one Tensor, got {type(a).__name__} and {type(b).__name__}")
    return cast(a, dtype), cast(b, dtype), dtype


def _check_scalar(op: str, v: Any) -> None:
    if not isinstance(v, (int, float)):
        raise DTypeError(f"{op}: cannot combine a Tensor with {type(v).__name__}")


def binary(op: str, a: Any, b: Any) -> Tensor:
    """A broadcasting binary op between tensors and/or Python scalars."""
    if (type(a) is Tensor and type(b) is Tensor and a._dtype is b._dtype and a._device is b._device
            and (op != "div" or a._dtype.is_floating_point)):
        dtype = a._dtype  # the common case: nothing to cast
    else:
        a, b, dtype = _as_operands(op, a, b)
        if op == "div" and not dtype.is_floating_point:  # true division, like PyTorch
            dtype = get_default_dtype()
            a, b = cast(a, dtype), cast(b, dtype)
    shape = a._shape if a._shape == b._shape else broadcast_shapes(a._shape, b._shape, op)
    out = make(a._backend.binary(op, a._data, b._data, shape, dtype), shape, dtype, a._device, a._backend)
    if _ag_state.enabled and (a._requires_grad or b._requires_grad):
        rule = _BINARY_GRAD[op]
        y = out.detach()  # not `out`: the closure must not keep its own output alive (a reference cycle)

        def grad(g: Tensor) -> tuple[Tensor | None, Tensor | None]:
            ga, gb = rule(a, b, y, g)  # type: ignore[misc]
            return (unbroadcast(ga, a._shape) if ga is not None else None,
                    unbroadcast(gb, b._shape) if gb is not None else None)

        record(out, op, (a, b), grad)
    return out


def add(a: Any, b: Any) -> Tensor:
    if type(a) is Tensor and type(b) is Tensor:
        return binary("add", a, b)
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and scalar_result(a._dtype, b) is a._dtype:
        return affine(a, 1, b)
    if isinstance(b, Tensor) and isinstance(a, (int, float)) and scalar_result(b._dtype, a) is b._dtype:
        return affine(b, 1, a)
    return binary("add", a, b)


def sub(a: Any, b: Any) -> Tensor:
    if type(a) is Tensor and type(b) is Tensor:
        return binary("sub", a, b)
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and scalar_result(a._dtype, b) is a._dtype:
        return affine(a, 1, -b)
    if isinstance(b, Tensor) and isinstance(a, (int, float)) and scalar_result(b._dtype, a) is b._dtype \
            and b._dtype.is_signed:
        return affine(b, -1, a)
    return binary("sub", a, b)


def mul(a: Any, b: Any) -> Tensor:
    if type(a) is Tensor and type(b) is Tensor:
        return binary("mul", a, b)
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and scalar_result(a._dtype, b) is a._dtype:
        return affine(a, b, 0)
    if isinstance(b, Tensor) and isinstance(a, (int, float)) and scalar_result(b._dtype, a) is b._dtype:
        return affine(b, a, 0)
    return binary("mul", a, b)


def div(a: Any, b: Any) -> Tensor:
    return binary("div", a, b)


def pow(a: Any, b: Any) -> Tensor:  # noqa: A001
    if isinstance(a, Tensor) and isinstance(b, (int, float)) and a._dtype.is_floating_point:
        if b == 2:
            return sqr(a)
        if b == 1:
            return a
        return powf(a, b)
    return binary("pow", a, b)


def maximum(a: Any, b: Any) -> Tensor:
    return binary("maximum", a, b)


def minimum(a: Any, b: Any) -> Tensor:
    return binary("minimum", a, b)


def floor_divide(a: Any, b: Any) -> Tensor:
    """Division rounded toward minus infinity (Python's `//`)."""
    return binary("floor_divide", a, b)


def remainder(a: Any, b: Any) -> Tensor:
    """Python's `%`: the result has the sign of the divisor."""
    return binary("remainder", a, b)


# --- comparisons and masks -------------------------------------------------------------------
def cmp(op: str, a: Any, b: Any) -> Tensor:
    """Elementwise comparison; the result is a uint8 mask (PyTorch returns bool)."""
    a, b, dtype = _as_operands(op, a, b)
    shape = a._shape if a._shape == b._shape else broadcast_shapes(a._shape, b._shape, op)
    return like(a, a._backend.cmp(op, a._data, b._data, shape, dtype), shape, uint8)


def eq(a: Any, b: Any) -> Tensor:
    return cmp("eq", a, b)


def ne(a: Any, b: Any) -> Tensor:
    return cmp("ne", a, b)


def lt(a: Any, b: Any) -> Tensor:
    return cmp("lt", a, b)


def le(a: Any, b: Any) -> Tensor:
    return cmp("le", a, b)


def gt(a: Any, b: Any) -> Tensor:
    return cmp("gt", a, b)


def ge(a: Any, b: Any) -> Tensor:
    return cmp("ge", a, b)


def _mask(x: Any) -> Any:
    return ne(x, 0) if isinstance(x, Tensor) else int(bool(x))


def logical_and(a: Any, b: Any) -> Tensor:
    return minimum(_mask(a), _mask(b))


def logical_or(a: Any, b: Any) -> Tensor:
    return maximum(_mask(a), _mask(b))


def logical_xor(a: Any, b: Any) -> Tensor:
    return ne(_mask(a), _mask(b))


def logical_not(a: Tensor) -> Tensor:
    return eq(a, 0)


def where(cond: Tensor, a: Any, b: Any) -> Tensor:
    """`a` where `cond` is non-zero, else `b`; a and b may be tensors or scalars; all broadcast."""
    if not isinstance(cond, Tensor):
        raise DTypeError(f"where: condition must be a Tensor, got {type(cond).__name__}")
    if cond._dtype is not uint8:
        cond = ne(cond, 0)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        dt = get_default_dtype() if isinstance(a, float) or isinstance(b, float) else as_dtype(int)
        a = scalar_tensor(cond, a, dt)
    a, b, dtype = _as_operands("where", a, b)
    same_device("where", cond, a)
    shape = broadcast_shapes(broadcast_shapes(cond._shape, a._shape, "where"), b._shape, "where")
    out = like(a, a._backend.where(cond._data, a._data, b._data, shape, dtype), shape, dtype)
    if needs_grad(a, b):
        def grad(g: Tensor) -> tuple[Tensor, Tensor]:
            z = make(g._backend.full((), 0, g._dtype), (), g._dtype, g._device, g._backend)
            return (unbroadcast(where(cond, g, z), a._shape), unbroadcast(where(cond, z, g), b._shape))

        record(out, "where", (a, b), grad)
    return out


def masked_fill(x: Tensor, mask: Tensor, value: Any) -> Tensor:
    """`value` where `mask` is non-zero, else `x` (the mask broadcasts to x's shape)."""
    shape = broadcast_shapes(x._shape, mask._shape, "masked_fill")
    if shape != x._shape:
        from ..errors import ShapeError, fmt_shape

        raise ShapeError(f"shape mismatch in masked_fill: mask {fmt_shape(mask._shape)} does not broadcast to "
                         f"{fmt_shape(x._shape)}")
    if isinstance(value, Tensor):
        value = cast(value, x._dtype)
    elif isinstance(value, float) and not x._dtype.is_floating_point:
        raise DTypeError(f"masked_fill: float value {value} for an integer tensor of dtype {x._dtype.name}")
    else:
        value = scalar_tensor(x, value, x._dtype)
    return where(mask, value, x)

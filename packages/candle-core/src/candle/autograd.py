"""Reverse-mode autograd: a graph of `Node`s recorded by ops, walked by `backward`.

An op records a node only when grad mode is on and one of its inputs requires grad, so inference
pays one boolean test per op. Backward rules are written with tensor ops (device-agnostic) and
run with grad mode off: higher-order gradients are not supported.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .errors import GradError, fmt_shape

if TYPE_CHECKING:
    from .tensor import Tensor

BackwardFn = Callable[["Tensor"], Sequence["Tensor | None"]]


class _State:
    enabled = True


state = _State()


class Node:
    """One recorded op: its inputs and the function mapping the output's grad to theirs."""

    __slots__ = ("name", "inputs", "backward")

    def __init__(self, name: str, inputs: tuple[Tensor, ...], backward: BackwardFn):
        self.name = name
        self.inputs = inputs
        self.backward = backward

    def __repr__(self) -> str:
        return f"<{self.name}Backward>"


def record(out: Tensor, name: str, inputs: tuple[Tensor, ...], backward: BackwardFn) -> Tensor:
    """Attach a node to `out` (callers check that grad mode is on and an input requires grad)."""
    out._node = Node(name, inputs, backward)
    out._requires_grad = True
    return out


def needs_grad(*ts: Any) -> bool:
    """Whether an op on `ts` must be recorded."""
    if not state.enabled:
        return False
    for t in ts:
        if getattr(t, "_requires_grad", False):
            return True
    return False


class _GradMode:
    """Context manager and decorator that sets grad mode."""

    def __init__(self, enabled: bool):
        self._mode = enabled
        self._prev: list[bool] = []

    def __enter__(self) -> None:
        self._prev.append(state.enabled)
        state.enabled = self._mode

    def __exit__(self, *exc: object) -> None:
        state.enabled = self._prev.pop()

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(self._mode):
                return fn(*args, **kwargs)

        return wrapper


def no_grad() -> _GradMode:
    """Disable recording: `with candle.no_grad(): ...` or `@candle.no_grad()`."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Re-enable recording inside a `no_grad` block."""
    return _GradMode(True)


def set_grad_enabled(mode: bool) -> _GradMode:
    """Set grad mode; usable as a context manager too."""
    gm = _GradMode(mode)
    state.enabled = bool(mode)
    return gm


def is_grad_enabled() -> bool:
    return state.enabled


def _topo_order(root: Tensor) -> list[Tensor]:
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        node = t._node
        if node is not None:
            for inp in node.inputs:
                if inp._requires_grad and id(inp) not in seen:
                    stack.append((inp, False))
    return order


def backward(root: Tensor, grad: Tensor | None = None) -> None:
    """Accumulate d(root)/d(leaf) into `leaf.grad` for every leaf that requires grad."""
    from .tensor import Tensor

    if not root._requires_grad:
        raise GradError("backward: the tensor does not require grad and has no graph")
    if grad is None:
        if root.numel() != 1:
            raise GradError(f"backward: grad can be implicit only for one element, got shape {fmt_shape(root.shape)}")
        grad = Tensor._full_like(root, 1.0)
    elif not isinstance(grad, Tensor):
        raise GradError(f"backward: grad must be a Tensor, got {type(grad).__name__}")
    elif grad.shape != root.shape:
        raise GradError(f"backward: grad shape {fmt_shape(grad.shape)} != tensor shape {fmt_shape(root.shape)}")
    order = _topo_order(root)
    grads: dict[int, Tensor] = {id(root): grad.detach()}
    prev = state.enabled
    state.enabled = False
    try:
        for t in reversed(order):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            node = t._node
            if node is None or t._retains_grad:
                t.grad = g if t.grad is None else t.grad + g
            if node is None:
                continue
            in_grads = node.backward(g)
            for inp, ig in zip(node.inputs, in_grads):
                if ig is None or not inp._requires_grad:
                    continue
                if ig.shape != inp.shape:
                    raise GradError(
                        f"internal: {node.name} backward gave grad {fmt_shape(ig.shape)} "
                        f"for input {fmt_shape(inp.shape)}"
                    )
                if ig.dtype is not inp.dtype:
                    ig = ig.to(dtype=inp.dtype)
                k = id(inp)
                old = grads.get(k)
                grads[k] = ig if old is None else old + ig
    finally:
        state.enabled = prev

"""Running one `OpCase` on a device: random inputs, candle vs PyTorch forward and backward,
the fused kernel vs its composition, and finite-difference gradient checks."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import candle

from ..ops._base import fused_state
from .compare import GRAD_TOLERANCES, TOLERANCES, assert_close, to_numpy64
from .spec import In, OpCase

_TORCH_DTYPES = {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16", "i64": "int64",
                 "u8": "uint8", "u32": "int64"}  # torch's uint32 lacks most ops: its reference runs in int64


@contextlib.contextmanager
def composed_only() -> Iterator[None]:
    """Run every op through core's composition, ignoring backends' fused kernels."""
    prev = fused_state.enabled
    fused_state.enabled = False
    try:
        yield
    finally:
        fused_state.enabled = prev


@contextlib.contextmanager
def _on(device: str) -> Iterator[None]:
    """New tensors (creation ops in a case) land on `device`."""
    from .. import device as _dev

    prev = _dev._default
    _dev.set_default_device(device)
    try:
        yield
    finally:
        _dev._default = prev


def _run(case: OpCase, device: str, inputs: list[Any]) -> list[Any]:
    with _on(device):
        return _flat(case.fn(candle, *inputs))


def _rng(case: OpCase, dtype: str, salt: str = "") -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(f"{case.name}/{dtype}/{salt}".encode()))


def make_input(spec: In, dtype: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random numpy array for `spec` and the candle dtype it should have."""
    dt = spec.dtype or dtype
    shape, kind = spec.shape, spec.kind
    n = int(np.prod(shape)) if shape else 1
    is_int = dt in ("i64", "u8", "u32")
    if is_int and kind in ("float", "unit", "away", "pos"):
        kind = "int"
    if kind == "distinct" and is_int:
        a = rng.permutation(n).reshape(shape)
        return np.asarray(a if dt != "i64" else a - n // 2), dt
    if kind == "float":
        a = rng.standard_normal(shape)
    elif kind == "pos":
        a = rng.uniform(0.5, 2.0, shape)
    elif kind == "unit":
        a = rng.uniform(-0.9, 0.9, shape)
    elif kind == "away":
        a = rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
    elif kind == "distinct":
        a = (rng.permutation(n) - n // 2).reshape(shape) / 4.0
    elif kind == "int":
        lo = 0 if dt in ("u8", "u32") else -8
        a = rng.integers(lo, 9, shape)
        if dt in ("f32", "f64", "f16", "bf16"):
            a = a.astype(np.float64)
    elif kind == "index":
        a, dt = rng.integers(0, spec.high, shape), spec.dtype or "i64"
    elif kind == "perm":
        full = list(shape)
        full[spec.dim] = spec.high
        keys = rng.random(full)
        perm = np.argsort(keys, axis=spec.dim)
        a = perm[tuple(slice(0, s) for s in shape)]
        dt = spec.dtype or "i64"
    elif kind == "mask":
        a, dt = rng.integers(0, 2, shape), "u8"
    else:
        raise ValueError(f"unknown input kind {kind!r}")
    return np.asarray(a), dt


def to_candle(a: np.ndarray, dtype: str, device: str, grad: bool) -> candle.Tensor:
    t = candle.tensor(a, dtype=dtype, device=device)
    return t.requires_grad_(True) if grad else t


def to_torch(a: np.ndarray, dtype: str, grad: bool) -> Any:
    import torch

    t = torch.from_numpy(np.array(a, copy=True)).to(getattr(torch, _TORCH_DTYPES[dtype]))
    return t.requires_grad_(True) if grad else t


def _inputs(case: OpCase, dtype: str, device: str, grad: bool) -> tuple[list[Any], list[Any], list[str]]:
    rng = _rng(case, dtype)
    cs, ts, dts = [], [], []
    for spec in case.inputs:
        a, dt = make_input(spec, dtype, rng)
        g = grad and spec.grad and dt in ("f32", "f64", "f16", "bf16")
        cs.append(to_candle(a, dt, device, g))
        ts.append(to_torch(a, dt, g))
        dts.append(dt)
    return cs, ts, dts


def _flat(out: Any) -> list[Any]:
    if isinstance(out, (tuple, list)):
        return [o for item in out for o in _flat(item)]
    return [out]


def _dtype_name(t: Any) -> str:
    if isinstance(t, candle.Tensor):
        return t.dtype.short
    name = str(t.dtype).removeprefix("torch.")
    return {"bool": "u8", "float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
            "int64": "i64", "uint8": "u8", "int32": "i32"}.get(name, name)


def run_forward(case: OpCase, dtype: str, device: str) -> None:
    """Forward on `device` against PyTorch on the CPU."""
    import torch

    cs, ts, dts = _inputs(case, dtype, device, grad=False)
    with torch.no_grad():
        ref = _flat(case.fn(torch, *ts))
    out = _run(case, device, cs)
    _compare(case, dtype, out, ref, dts, "forward", device)
    if case.fused:
        with composed_only():
            composed = _run(case, device, cs)
        _compare(case, dtype, composed, ref, dts, "forward (composed)", device)
        for f, c in zip(out, composed):
            r, a = case.tol.get(dtype, TOLERANCES[dtype])
            assert_close(f, c, r, a, dtype, f"{case.name}[{dtype}] fused vs composition")


def _compare(case: OpCase, dtype: str, out: list[Any], ref: list[Any], dts: list[str], what: str,
             device: str) -> None:
    label = f"{case.name}[{dtype}] {what}"
    if len(out) != len(ref):
        raise AssertionError(f"{label}: {len(out)} outputs, expected {len(ref)}")
    r, a = case.tol.get(dtype, TOLERANCES.get(dtype, (1e-5, 1e-6)))
    for i, (o, e) in enumerate(zip(out, ref)):
        if isinstance(o, candle.Tensor):
            if o.device != candle.Device(device):
                raise AssertionError(f"{label}: output {i} is on {o.device}, expected {device}")
            if case.check_dtype and "u32" not in dts and _dtype_name(o) != _dtype_name(e):
                raise AssertionError(f"{label}: output {i} has dtype {_dtype_name(o)}, torch gives {_dtype_name(e)}")
            o = o.to(dtype="float64") if o.dtype.short in ("f16", "bf16") else o
        assert_close(o, e, r, a, dtype, f"{label} output {i}")


def _loss_weights(case: OpCase, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    return _rng(case, dtype, "w").standard_normal(shape)


def run_backward(case: OpCase, dtype: str, device: str) -> None:
    """Gradients of sum(out * w) for random w, against PyTorch."""
    cs, ts, dts = _inputs(case, dtype, device, grad=True)
    ref = _flat(case.fn(__import__("torch"), *ts))[0]
    w = _loss_weights(case, dtype, tuple(ref.shape))
    (ref * to_torch(w, dtype, False)).sum().backward()
    out = _run(case, device, cs)[0]
    (out * to_candle(w, dtype, device, False)).sum().backward()
    r, a = case.grad_tol.get(dtype, GRAD_TOLERANCES[dtype])
    for i, (c, t) in enumerate(zip(cs, ts)):
        if not getattr(t, "requires_grad", False):
            continue
        label = f"{case.name}[{dtype}] grad of input {i}"
        if t.grad is None:
            if c.grad is not None and np.abs(to_numpy64(c.grad)).max(initial=0) > 0:
                raise AssertionError(f"{label}: torch gives no grad, candle gives a non-zero one")
            continue
        if c.grad is None:
            raise AssertionError(f"{label}: candle computed no grad")
        if c.grad.device != candle.Device(device):
            raise AssertionError(f"{label}: grad is on {c.grad.device}, expected {device}")
        assert_close(c.grad, t.grad, r, a, dtype, label)


def gradcheck(fn: Callable[..., candle.Tensor], inputs: list[candle.Tensor], eps: float = 1e-6,
              rtol: float = 1e-5, atol: float = 1e-7, seed: int = 0) -> None:
    """Check autograd of `fn` against central finite differences (use float64 inputs).

    Checks the directional gradient of sum(fn(*inputs) * w) for a random w, element by element.
    """
    host = [t.detach().numpy().astype(np.float64).copy() for t in inputs]
    dev = inputs[0].device
    dts = [t.dtype for t in inputs]

    def build(arrays: list[np.ndarray], grad: bool) -> list[candle.Tensor]:
        return [candle.tensor(a, dtype=d, device=dev).requires_grad_(grad and d.is_floating_point and t.requires_grad)
                for a, d, t in zip(arrays, dts, inputs)]

    xs = build(host, True)
    out = _flat(fn(*xs))[0]
    w_np = np.random.default_rng(seed).standard_normal(out.shape)
    w = candle.tensor(w_np, dtype=out.dtype, device=dev)
    (out * w).sum().backward()

    def loss(arrays: list[np.ndarray]) -> float:
        with candle.no_grad():
            o = _flat(fn(*build(arrays, False)))[0]
            return float((to_numpy64(o) * w_np).sum())

    for k, x in enumerate(xs):
        if not x.requires_grad:
            continue
        analytic = to_numpy64(x.grad) if x.grad is not None else np.zeros(x.shape)
        numeric = np.zeros(x.shape)
        flat = host[k].reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            plus = loss(host)
            flat[i] = old - eps
            minus = loss(host)
            flat[i] = old
            numeric.reshape(-1)[i] = (plus - minus) / (2 * eps)
        assert_close(analytic, numeric, rtol, atol, "f64", f"gradcheck of input {k}")


def run_gradcheck(case: OpCase, device: str) -> None:
    """Finite differences in float64 for a differentiable case."""
    rng = _rng(case, "f64", "fd")
    xs = []
    for spec in case.inputs:
        a, dt = make_input(spec, "f64", rng)
        xs.append(to_candle(a, dt, device, spec.grad and dt == "f64"))
    gradcheck(lambda *t: case.fn(candle, *t), xs, rtol=1e-5, atol=1e-6)

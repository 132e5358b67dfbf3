"""Autograd semantics: leaves, accumulation, no_grad, detach, retain_grad, errors, and that inference
records nothing."""

from __future__ import annotations

import numpy as np
import pytest

import candle
from candle.testing import gradcheck


def test_grads_accumulate_across_backward_calls() -> None:
    x = candle.tensor([1.0, 2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    assert x.grad.tolist() == [5.0, 7.0, 9.0]


def test_shared_subexpression_and_diamond_graph() -> None:
    x = candle.tensor([0.5, -1.0], dtype="f64", requires_grad=True)
    y = x.exp()
    z = (y * y + y.sin()).sum()
    z.backward()
    xv = np.array([0.5, -1.0])
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(2 * xv) + np.cos(np.exp(xv)) * np.exp(xv), rtol=1e-12)


def test_no_grad_records_nothing_and_costs_nothing() -> None:
    w = candle.ones(3, requires_grad=True)
    with candle.no_grad():
        y = w * 2 + 1
    assert not y.requires_grad and y.grad_fn is None
    z = candle.ones(3) * 2  # no input requires grad: no node either
    assert z.grad_fn is None and not z.requires_grad

    @candle.no_grad()
    def f(t: candle.Tensor) -> candle.Tensor:
        return t * 2

    assert f(w).grad_fn is None
    with candle.no_grad():
        with candle.enable_grad():
            assert (w * 2).requires_grad
    assert candle.is_grad_enabled()


def test_detach_and_leaf_rules() -> None:
    w = candle.ones(2, requires_grad=True)
    y = w * 3
    assert w.is_leaf and not y.is_leaf and y.grad_fn is not None
    d = y.detach()
    assert d.is_leaf and not d.requires_grad
    (y.detach() * w).sum().backward()
    assert w.grad.tolist() == [3.0, 3.0]
    with pytest.raises(candle.GradError, match="detach"):
        y.requires_grad_(False)


def test_retain_grad_and_non_leaf_grads() -> None:
    x = candle.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    y.retain_grad()
    z = x * 5
    (y * z).sum().backward()
    assert y.grad.tolist() == [5.0, 10.0]
    assert z.grad is None


def test_backward_errors() -> None:
    with pytest.raises(candle.GradError, match="does not require grad"):
        candle.ones(2).sum().backward()
    x = candle.ones(2, requires_grad=True)
    with pytest.raises(candle.GradError, match="implicit only for one element"):
        (x * 2).backward()
    with pytest.raises(candle.GradError, match="grad shape"):
        (x * 2).backward(candle.ones(3))
    (x * 2).backward(candle.tensor([1.0, 0.5]))
    assert x.grad.tolist() == [2.0, 1.0]
    with pytest.raises(candle.GradError, match="only float tensors"):
        candle.arange(3).requires_grad_()


def test_grad_flows_through_dtype_and_index_ops() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 5))
    idx = [3, 0, 3]
    x = candle.tensor(a, dtype="f32", requires_grad=True)
    t = torch.tensor(a, dtype=torch.float32, requires_grad=True)
    (x.half().float()[candle.tensor(idx)].softmax(-1) * candle.arange(5.0)).sum().backward()
    (t.half().float()[torch.tensor(idx)].softmax(-1) * torch.arange(5.0)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), t.grad.numpy(), rtol=1e-3, atol=1e-4)


def test_gradcheck_detects_a_wrong_rule() -> None:
    x = candle.tensor([0.3, 0.7], dtype="f64", requires_grad=True)
    gradcheck(lambda t: t.sin() * t, [x])

    def wrong(t: candle.Tensor) -> candle.Tensor:
        return t.sin() + (t.detach() * 0.1 * t.detach()).sum() * 0 + t.detach() * 0.5

    with pytest.raises(AssertionError, match="gradcheck"):
        gradcheck(wrong, [candle.tensor([0.3, 0.7], dtype="f64", requires_grad=True)])


def test_long_chain_backward_is_iterative() -> None:
    x = candle.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):  # deeper than Python's recursion limit
        y = y * 1.0
    y.sum().backward()
    assert x.grad.tolist() == [1.0]

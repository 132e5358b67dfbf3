"""Broadcasting and shape errors, property-tested with hypothesis against numpy's rules and torch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import candle

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)


@settings(max_examples=200, deadline=None)
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4))
def test_binary_broadcasts_like_numpy(shapes_: hnp.BroadcastableShapes) -> None:
    sa, sb = shapes_.input_shapes
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    for op in (np.add, np.multiply, np.maximum):
        name = {np.add: "add", np.multiply: "mul", np.maximum: "maximum"}[op]
        out = getattr(candle, name)(candle.tensor(a), candle.tensor(b))
        expect = op(a, b)
        assert out.shape == expect.shape
        np.testing.assert_allclose(out.numpy(), expect.astype(np.float32), rtol=1e-6)


@settings(max_examples=200, deadline=None)
@given(shapes, shapes)
def test_incompatible_shapes_raise_shape_error(sa: tuple[int, ...], sb: tuple[int, ...]) -> None:
    try:
        expect = np.broadcast_shapes(sa, sb)
    except ValueError:
        expect = None
    a, b = candle.zeros(sa), candle.ones(sb)
    if expect is None:
        with pytest.raises(candle.ShapeError, match=r"shape mismatch in add: lhs \[.*\], rhs \[.*\]"):
            _ = a + b
    else:
        assert (a + b).shape == tuple(expect)


@settings(max_examples=100, deadline=None)
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3, max_side=3))
def test_broadcast_gradients_match_torch(shapes_: hnp.BroadcastableShapes) -> None:
    torch = pytest.importorskip("torch")
    sa, sb = shapes_.input_shapes
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    ca, cb = candle.tensor(a, requires_grad=True), candle.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (ca * cb + ca).sum().backward()
    (ta * tb + ta).sum().backward()
    np.testing.assert_allclose(ca.grad.numpy(), ta.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cb.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-6)


@settings(max_examples=150, deadline=None)
@given(st.tuples(st.integers(1, 4), st.integers(1, 4)), st.tuples(st.integers(1, 4), st.integers(1, 4)),
       st.lists(st.integers(1, 3), max_size=2))
def test_matmul_shape_rule(sa: tuple[int, int], sb: tuple[int, int], batch: list[int]) -> None:
    a, b = candle.zeros((*batch, *sa)), candle.zeros(sb)
    if sa[1] == sb[0]:
        assert (a @ b).shape == (*batch, sa[0], sb[1])
    else:
        with pytest.raises(candle.ShapeError, match=r"shape mismatch in matmul: lhs \[.*\], rhs \[.*\]"):
            _ = a @ b


@settings(max_examples=150, deadline=None)
@given(shapes, st.lists(st.integers(-1, 6), min_size=1, max_size=4))
def test_reshape_accepts_exactly_numpys_shapes(shape: tuple[int, ...], target: list[int]) -> None:
    x = candle.arange(int(np.prod(shape))).reshape(shape)
    try:
        expect = np.arange(int(np.prod(shape))).reshape(shape).reshape(target)
    except ValueError:
        with pytest.raises(candle.ShapeError, match="reshape"):
            x.reshape(target)
        return
    np.testing.assert_array_equal(x.reshape(target).numpy(), expect)


@settings(max_examples=150, deadline=None)
@given(shapes, st.integers(-5, 5))
def test_dim_errors_name_the_op(shape: tuple[int, ...], dim: int) -> None:
    x = candle.zeros(shape)
    nd = len(shape)
    ok = -max(nd, 1) <= dim < max(nd, 1)
    if ok:
        assert x.sum(dim).ndim == max(nd - 1, 0)
    else:
        with pytest.raises(candle.DimError, match=r"dim -?\d+ out of range in sum"):
            x.sum(dim)


def test_error_messages_are_readable() -> None:
    with pytest.raises(candle.ShapeError, match=r"^shape mismatch in matmul: lhs \[2, 3\], rhs \[4, 5\]$"):
        candle.zeros(2, 3) @ candle.zeros(4, 5)
    with pytest.raises(candle.ShapeError, match=r"shape mismatch in cat along dim 0: \[2, 3\], \[2, 4\]"):
        candle.cat([candle.zeros(2, 3), candle.zeros(2, 4)])
    with pytest.raises(candle.DTypeError, match="index_select: index must be an integer tensor, got dtype float32"):
        candle.zeros(3).index_select(0, candle.zeros(2))
    with pytest.raises(candle.DimError, match="index_select: index 5 is out of range"):
        candle.zeros(3).index_select(0, candle.tensor([5]))
    with pytest.raises(candle.DimError, match=r"index 3 is out of range for dim 0 of size 3"):
        candle.zeros(3)[3]
    with pytest.raises(candle.ShapeError, match=r"cannot reshape \[2, 3\] \(6 elements\) into \[4, -1\]"):
        candle.zeros(2, 3).reshape(4, -1)
    with pytest.raises(candle.ShapeError, match="view: shape .* not compatible with the strides"):
        candle.zeros(2, 3).t().view(6)
    with pytest.raises(candle.DTypeError, match="mean: expected a float tensor, got dtype int64"):
        candle.arange(3).mean()

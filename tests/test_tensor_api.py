"""Tensor API beyond the op suite: dtypes and promotion, conversion, interop, printing, random."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import candle

torch = pytest.importorskip("torch")

DTYPES = ["uint8", "uint32", "int64", "float16", "bfloat16", "float32", "float64"]


@pytest.mark.parametrize("a,b", list(itertools.product(DTYPES, DTYPES)))
def test_promotion_matches_torch(a: str, b: str) -> None:
    if "uint32" in (a, b):  # torch's uint32 lacks add; check our rule: u32 ranks between u8 and i64
        got = candle.promote(candle.dtype.as_dtype(a), candle.dtype.as_dtype(b)) if hasattr(candle, "promote") else None
        out = candle.ones(2, dtype=a) + candle.ones(2, dtype=b)
        expect = {"uint8": "uint32", "uint32": "uint32", "int64": "int64"}.get(a if b == "uint32" else b, None)
        if expect is None:  # the other operand is a float
            expect = a if b == "uint32" else b
        assert out.dtype.name == expect, (a, b, got)
        return
    expect = (torch.ones(2, dtype=getattr(torch, a)) + torch.ones(2, dtype=getattr(torch, b))).dtype
    out = candle.ones(2, dtype=a) + candle.ones(2, dtype=b)
    assert out.dtype.name == str(expect).removeprefix("torch.")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scalar", [2, 2.5])
def test_scalar_promotion_matches_torch(dtype: str, scalar: float) -> None:
    out = candle.ones(2, dtype=dtype) * scalar
    if dtype == "uint32":
        assert out.dtype.name == ("uint32" if isinstance(scalar, int) else "float32")
        return
    expect = (torch.ones(2, dtype=getattr(torch, dtype)) * scalar).dtype
    assert out.dtype.name == str(expect).removeprefix("torch.")


def test_tensor_constructor_infers_dtypes_like_torch() -> None:
    assert candle.tensor([1.0, 2.0]).dtype is candle.float32
    assert candle.tensor([1, 2]).dtype is candle.int64
    assert candle.tensor([True, False]).dtype is candle.uint8
    assert candle.tensor(np.zeros(2, np.float64)).dtype is candle.float64
    assert candle.tensor(np.zeros(2, np.int32)).dtype is candle.int64
    assert candle.tensor(3.5).shape == ()
    assert candle.tensor([[1, 2], [3, 4]], dtype="f16").dtype is candle.f16
    with pytest.raises(candle.DTypeError, match="ragged"):
        candle.tensor([[1, 2], [3]])
    with pytest.raises(candle.DTypeError, match="unknown dtype"):
        candle.zeros(2, dtype="float8")


def test_from_numpy_shares_memory_and_numpy_roundtrip() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = candle.from_numpy(a)
    a[0, 0] = 42
    assert t[0, 0].item() == 42
    assert np.shares_memory(t.numpy(), a)
    assert np.asarray(t).shape == (2, 3)
    np.testing.assert_array_equal(np.array(t.T), a.T)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "uint8"])
def test_dlpack_both_ways_with_torch_and_numpy(dtype: str) -> None:
    t = torch.arange(6).reshape(2, 3).to(getattr(torch, dtype))
    c = candle.from_dlpack(t)
    assert c.dtype.name == dtype and c.shape == (2, 3)
    t[0, 0] = 5  # zero-copy
    assert c[0, 0].item() == 5
    back = torch.from_dlpack(c)
    np.testing.assert_array_equal(back.numpy(), t.numpy())
    n = np.from_dlpack(candle.arange(4, dtype=dtype))
    np.testing.assert_array_equal(n, np.arange(4))


def test_dlpack_bfloat16_is_a_clear_error() -> None:
    with pytest.raises(candle.UnsupportedError, match="bfloat16"):
        torch.from_dlpack(candle.ones(2, dtype="bf16"))


def test_item_tolist_repr_and_python_conversions() -> None:
    x = candle.tensor([[1.5, 2.0], [3.0, 4.0]])
    assert x.tolist() == [[1.5, 2.0], [3.0, 4.0]]
    assert x[1, 0].item() == 3.0 and float(x[0, 0]) == 1.5 and int(x[1, 1]) == 4
    assert candle.tensor([1, 2]).tolist() == [1, 2]
    assert candle.ones(2, dtype="bf16").tolist() == [1.0, 1.0]
    r = repr(x)
    assert r.startswith("tensor([[1.5, 2. ],") and "dtype=float32" in r
    assert "requires_grad=True" in repr(candle.ones(1, requires_grad=True))
    assert "grad_fn=<" in repr(candle.ones(1, requires_grad=True) * 2)
    with pytest.raises(candle.ShapeError, match="item"):
        x.item()
    with pytest.raises(candle.ShapeError, match="ambiguous"):
        bool(x)
    assert [r.tolist() for r in x] == x.tolist()
    assert len(x) == 2 and x.numel() == 4 and x.ndim == 2 and x.size(-1) == 2 and x.size() == (2, 2)
    with pytest.raises(candle.CandleError, match="picklable"):
        import pickle

        pickle.dumps(x)


def test_to_dtype_device_and_copy_semantics() -> None:
    x = candle.arange(4, dtype="f32")
    assert x.to("cpu") is x and x.to(dtype="f32") is x
    assert x.to("f16").dtype is candle.f16 and x.to(candle.f64).dtype is candle.f64
    assert x.to(candle.zeros(1, dtype="i64")).dtype is candle.i64
    y = x.to("cpu", copy=True)
    y[0] = 7
    assert x[0].item() == 0
    assert x.half().float().double().long().dtype is candle.i64
    np.testing.assert_array_equal((candle.tensor([-1.7, 1.7, 2.5]).long()).numpy(), [-1, 1, 2])


def test_views_share_storage_and_setitem() -> None:
    x = candle.zeros(3, 4)
    v = x[1:, ::2]
    x[1:, ::2] = 5.0
    assert v.tolist() == [[5.0, 5.0], [5.0, 5.0]]
    x[0] = candle.arange(4, dtype="f32")
    x[..., -1] = candle.tensor([9.0, 8.0, 7.0])
    t = torch.zeros(3, 4)
    t[1:, ::2] = 5.0
    t[0] = torch.arange(4, dtype=torch.float32)
    t[..., -1] = torch.tensor([9.0, 8.0, 7.0])
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    idx = candle.tensor([0, 2])
    x[idx, 1] = -1.0
    t[torch.tensor([0, 2]), 1] = -1.0
    x[x > 8] = 0.5
    t[t > 8] = 0.5
    np.testing.assert_array_equal(x.numpy(), t.numpy())
    assert x.transpose(0, 1).is_contiguous() is False and x.is_contiguous()
    assert x.stride() == (4, 1) and x.t().stride() == (1, 4)


def test_inplace_ops_refuse_tensors_that_require_grad() -> None:
    w = candle.ones(3, requires_grad=True)
    with pytest.raises(candle.GradError, match="in-place"):
        w.add_(1.0)
    with candle.no_grad():
        w.sub_(candle.full((3,), 0.5))
        w.mul_(4).div_(2)
    assert w.tolist() == [1.0, 1.0, 1.0] and w.requires_grad
    z = candle.arange(6.0).reshape(2, 3)
    z.zero_()
    assert z.sum().item() == 0
    z.fill_(2).clamp_(max=1.5)
    assert z.sum().item() == 9.0


def test_random_is_seedable_and_has_the_right_statistics() -> None:
    candle.manual_seed(123)
    a = candle.randn(1000, 100)
    candle.manual_seed(123)
    b = candle.randn(1000, 100)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    g1, g2 = candle.Generator(7), candle.Generator(7)
    np.testing.assert_array_equal(candle.rand(50, generator=g1).numpy(), candle.rand(50, generator=g2).numpy())
    assert abs(a.mean().item()) < 0.01 and abs(a.std().item() - 1) < 0.01
    u = candle.rand(100_000, dtype="f64")
    assert 0 <= u.min().item() and u.max().item() < 1 and abs(u.mean().item() - 0.5) < 0.01
    h = candle.rand(100_000, dtype="bf16")
    assert h.max().item() < 1
    r = candle.randint(3, 9, (10_000,))
    assert r.dtype is candle.i64 and r.min().item() == 3 and r.max().item() == 8
    p = candle.randperm(20)
    assert sorted(p.tolist()) == list(range(20))
    with pytest.raises(candle.DTypeError, match="float dtype"):
        candle.rand(3, dtype="i64")


def test_creation_ops_match_torch() -> None:
    np.testing.assert_allclose(candle.linspace(0, 1, 11).numpy(), torch.linspace(0, 1, 11).numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(candle.linspace(-3, 7, 50, dtype="f64").numpy(),
                               torch.linspace(-3, 7, 50, dtype=torch.float64).numpy(), rtol=1e-14)
    np.testing.assert_array_equal(candle.arange(0, 1, 0.1).numpy(), torch.arange(0, 1, 0.1).numpy())
    np.testing.assert_array_equal(candle.arange(10, 0, -3).numpy(), torch.arange(10, 0, -3).numpy())
    np.testing.assert_array_equal(candle.eye(3).numpy(), torch.eye(3).numpy())
    assert candle.empty(2, 3).shape == (2, 3) and candle.full((2,), 3).dtype is candle.i64
    assert candle.zeros(0, 3).numel() == 0 and candle.zeros(0, 3).sum(0).tolist() == [0.0, 0.0, 0.0]


def test_default_dtype() -> None:
    candle.set_default_dtype("float64")
    try:
        assert candle.tensor([1.0]).dtype is candle.f64 and candle.zeros(1).dtype is candle.f64
        assert (candle.arange(3) / 2).dtype is candle.f64
    finally:
        candle.set_default_dtype("float32")
    with pytest.raises(candle.DTypeError):
        candle.set_default_dtype("int64")


def test_device_mismatch_is_a_clear_error() -> None:
    pytest.importorskip("candle_countdev")
    a, b = candle.ones(2), candle.ones(2, device="countdev")
    with pytest.raises(candle.DeviceError, match=r"device mismatch in add: tensors on cpu, countdev:0"):
        _ = a + b
    assert (a + b.to("cpu")).device == "cpu"
    assert b.to("cpu").to("countdev").device == candle.Device("countdev:0")

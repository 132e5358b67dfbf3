"""candle-cuda's Python layer on the emulated CUDA runtime (numpy in place of CuPy), without a GPU.

`candle_cuda.emulate.emulated_backend()` runs every primitive of `CudaBackend`, its bfloat16-as-uint16
storage, the array-module fused kernels (conv2d by im2col + GEMM, conv_transpose2d, pooling, upsampling,
cumsum) and its error handling on numpy. The conformance kit runs on the same code with modelled CUDA
kernels in tests/test_cuda_kernel_models.py; this module checks storage, views, errors and DLPack. The
CUDA C kernels and cuBLAS do not run here: tests/test_cuda.py checks them on a GPU. Passing here proves
the Python layer only, never GPU behaviour.
"""

from __future__ import annotations

import numpy as np
import pytest

import candle

pytest.importorskip("candle_cuda")

from candle_cuda.emulate import emulated_backend  # noqa: E402

DEV = "cudaemu"
BACKEND = emulated_backend(DEV)



def _t(a: np.ndarray, **kw: object) -> candle.Tensor:
    return candle.tensor(a, device=DEV, **kw)


def test_bf16_is_stored_as_uint16_words() -> None:
    a = np.array([1.0, -3.25, 1e30, np.inf, -0.0], dtype=np.float32)
    x = _t(a, dtype="bf16")
    assert x._data.dtype == np.uint16
    want = a.astype(candle.bfloat16.numpy)
    np.testing.assert_array_equal(x._data, want.view(np.uint16))
    np.testing.assert_array_equal(x.numpy().astype(np.float32), want.astype(np.float32))


def test_bf16_rounding_matches_ml_dtypes() -> None:
    from candle_cuda import bf16

    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32)
    f = bits.view(np.float32)
    got = bf16.from_f32(np, f)
    with np.errstate(invalid="ignore"):
        want = f.astype(candle.bfloat16.numpy).view(np.uint16)
    finite = np.isfinite(f)
    np.testing.assert_array_equal(got[finite], want[finite])
    assert np.isnan(bf16.to_f32(np, got[~np.isfinite(f) & np.isnan(f)])).all()
    np.testing.assert_array_equal(bf16.to_f32(np, want), want.view(candle.bfloat16.numpy).astype(np.float32))


def test_views_do_not_copy() -> None:
    a = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    x = _t(a)
    for v, ref in ((x.transpose(1, 3), a.transpose(0, 3, 2, 1)), (x.narrow(2, 1, 2), a[:, :, 1:3]),
                   (x.flip((1, 3)), a[:, ::-1, :, ::-1]), (x[:, :1].expand(2, 6, 4, 5), None)):
        assert np.shares_memory(v._data, x._data)
        if ref is not None:
            np.testing.assert_array_equal(v.numpy(), ref)


def test_copy_into_an_overlapping_view() -> None:
    a = np.arange(10, dtype=np.float32)
    x = _t(a)
    x[0:6] = x[2:8]  # source and destination overlap (a cache moving its keys to the front)
    want = a.copy()
    want[0:6] = a[2:8].copy()
    np.testing.assert_array_equal(x.numpy(), want)


def test_out_of_memory_becomes_a_candle_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from candle_cuda.errors import CudaOutOfMemoryError

    class FakeOOM(MemoryError):
        pass

    def boom(*a: object, **k: object) -> None:
        raise FakeOOM("Out of memory allocating 17,179,869,184 bytes (allocated so far: 1,024 bytes).")

    monkeypatch.setattr(BACKEND.rt, "oom_types", (FakeOOM,))
    monkeypatch.setattr(BACKEND.xp, "full", boom)
    with pytest.raises(CudaOutOfMemoryError, match=r"could not allocate 17,179,869,184 bytes \(16.00 GiB\)") as e:
        candle.zeros(4, device=DEV)
    assert isinstance(e.value, candle.CandleError) and e.value.requested == 17_179_869_184
    assert "full" in str(e.value) and DEV in str(e.value)


def test_index_errors_are_clear() -> None:
    x = _t(np.zeros((3, 4), np.float32))
    with pytest.raises(candle.DimError, match="index 7 is out of range"):
        x.index_select(0, _t(np.array([0, 7])))


def test_dlpack_round_trip_shares_memory() -> None:
    a = np.arange(6, dtype=np.float32)
    x = _t(a)
    back = np.from_dlpack(x._data)
    assert np.shares_memory(back, x._data)
    with pytest.raises(candle.UnsupportedError, match="bfloat16"):
        BACKEND.to_dlpack(_t(a, dtype="bf16")._data, (6,), candle.bfloat16)


def test_conv_and_pool_kernels_against_torch() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 7)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    got = candle.nn.functional.conv2d(_t(x), _t(w), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), stride=(2, 1), padding=(1, 2),
                                      dilation=(1, 2), groups=2)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
    wt = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    got = candle.nn.functional.conv_transpose2d(_t(x), _t(wt), stride=2, padding=1, output_padding=1, groups=2)
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(wt), stride=2, padding=1,
                                                output_padding=1, groups=2)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)

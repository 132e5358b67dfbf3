"""The OpenCL backend's quantized kernels (kernels/quant.cl), called directly through the backend object.

References: candle.io.ggml_quants.dequantize (bit-exact to ggml and gguf-py) for `qdequantize` and
`qembedding` (bit for bit in float32, the value rounded once in other dtypes), and dequantize + a
float64 numpy matmul for `qmatmul` (float32 matmul tolerance). Blocks come from real model files
(SmolLM2 Q4_1 GGUF: Q4_1, Q8_0; Gemma-3 Q4_K_M GGUF: Q5_0, Q4_K, Q6_K, Q8_0) when installed, from
gguf-py's quantizer on random data (Q4_0...Q8_0), and from random bytes with finite random scales plus
rows of special scales (zero, -0, subnormal, inf, NaN) for every type.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import pytest

import candle
from candle.io.ggml_quants import GGML_BLOCK_SIZES, GGMLType, dequantize
from conftest import available_devices

pytestmark = pytest.mark.skipif("opencl" not in available_devices(), reason="no OpenCL device (candle-opencl)")

BLOCK_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"]
GGUF_PY_TYPES = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}  # gguf.quants.quantize supports these
# byte offsets of each block's float16 scales (d, and dmin/m where the type has one); Q8_K: float32 d at 0
F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "Q2_K": [80, 82],
              "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
SPECIAL_F16 = np.array([0.0, -0.0, 6e-8, -3e-5, 1e-7, np.inf, -np.inf, np.nan, 65504.0], np.float16)


@pytest.fixture(scope="module")
def be() -> Any:
    return candle.Device("opencl").backend


def _random_blocks(qtype: str, n: int, k: int, rng: np.random.Generator, special: bool = False) -> np.ndarray:
    """(n, row_bytes) raw blocks: random bytes with random finite scales (or special scales)."""
    bs, ts = GGML_BLOCK_SIZES[GGMLType[qtype]]
    nb = k // bs
    raw = rng.integers(0, 256, (n, nb, ts), dtype=np.uint8)
    if qtype == "Q8_K":
        d = rng.uniform(-0.1, 0.1, (n, nb)).astype(np.float32)
        if special:
            d.flat[: 6] = [0.0, -0.0, 1e-40, np.inf, np.nan, -1e-3]
        raw[..., 0:4] = d.view(np.uint8).reshape(n, nb, 4)
        return raw.reshape(n, nb * ts)
    for at in F16_FIELDS[qtype]:
        d = rng.uniform(-0.05, 0.05, (n, nb)).astype(np.float16)
        if special:
            d.flat[: len(SPECIAL_F16)] = SPECIAL_F16
        raw[..., at:at + 2] = d.view(np.uint8).reshape(n, nb, 2)
    return raw.reshape(n, nb * ts)


def _gguf_py_blocks(qtype: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    return gq.quantize(rng.standard_normal((n, k)).astype(np.float32), GGMLQuantizationType[qtype])


def _model_blocks() -> list[tuple[str, str, np.ndarray, tuple[int, int]]]:
    """(file tag, qtype, raw rows, shape) of a few tensors of each type of the installed model files."""
    from candle.io.gguf import GGUFReader
    from candle_models import model_files

    out = []
    for tag, locate in (("smollm2", model_files.smollm2_gguf_path), ("gemma3", model_files.gemma3_gguf_path)):
        try:
            path = locate()
        except Exception:  # noqa: BLE001 - model not installed: these cases are skipped
            continue
        with GGUFReader(path) as r:
            seen: set[str] = set()
            for info in r.tensors:
                t = GGMLType(info.ggml_type) if not isinstance(info.ggml_type, str) else GGMLType[info.ggml_type]
                if t.name not in BLOCK_TYPES or t.name in seen or len(info.shape) != 2:
                    continue
                seen.add(t.name)
                n, k = info.shape
                rows = min(n, 96)
                raw = np.array(r.raw(info.name)).reshape(n, -1)[:rows]
                out.append((tag, t.name, raw, (rows, k)))
    return out


def _deq(be: Any, raw: np.ndarray, qtype: str, shape: tuple[int, int], dtype: Any = candle.float32) -> np.ndarray:
    q = be.from_numpy(np.ascontiguousarray(raw), candle.uint8)
    return be.to_numpy(be.qdequantize(q, qtype, shape, dtype), shape, dtype)


def _assert_bits_equal(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Bit-for-bit equality (NaNs compare equal to NaNs, whatever their payload)."""
    same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
    assert same.all(), f"{what}: {int((~same).sum())} of {got.size} values differ, first at " \
                       f"{np.argwhere(~same)[0].tolist()}: {got[~same][:4]} vs {want[~same][:4]}"


# --- qdequantize -------------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", BLOCK_TYPES)
def test_qdequantize_random_blocks_bit_exact(be: Any, qtype: str) -> None:
    rng = np.random.default_rng(list(GGMLType.__members__).index(qtype))
    k = 512
    cases = [("random bytes", _random_blocks(qtype, 13, k, rng)),
             ("special scales", _random_blocks(qtype, 3, k, rng, special=True))]
    if qtype in GGUF_PY_TYPES:
        cases.append(("gguf-py quantized", _gguf_py_blocks(qtype, 9, k, rng)))
    for what, raw in cases:
        want = dequantize(raw, qtype)
        _assert_bits_equal(_deq(be, raw, qtype, (raw.shape[0], k)), want, f"{qtype} {what}")


def test_qdequantize_model_blocks_bit_exact(be: Any) -> None:
    blocks = _model_blocks()
    if not blocks:
        pytest.skip("neither SmolLM2 nor Gemma-3 GGUF is installed")
    for tag, qtype, raw, shape in blocks:
        _assert_bits_equal(_deq(be, raw, qtype, shape), dequantize(raw, qtype), f"{tag} {qtype}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_qdequantize_other_dtypes_round_once(be: Any, dtype: str) -> None:
    dt = getattr(candle, dtype)
    if not be.supports_dtype(dt):
        pytest.skip(f"{dtype} is not supported on this device")
    rng = np.random.default_rng(5)
    for qtype in ("Q4_1", "Q6_K"):
        raw = _random_blocks(qtype, 7, 256, rng)
        want = dequantize(raw, qtype).astype(dt.numpy)
        got = _deq(be, raw, qtype, (7, 256), dt)
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64), err_msg=f"{qtype} {dtype}")


@pytest.mark.parametrize("qtype,dtype", [("F32", np.float32), ("F16", np.float16), ("BF16", None)])
def test_plain_types_are_views_of_the_bytes(be: Any, qtype: str, dtype: Any) -> None:
    rng = np.random.default_rng(6)
    vals = rng.standard_normal((5, 24)).astype(np.float32)
    if dtype is None:  # bfloat16: the high halves of float32 bits
        raw = (vals.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(5, -1)
    else:
        raw = vals.astype(dtype).view(np.uint8).reshape(5, -1)
    want = dequantize(raw, qtype)
    _assert_bits_equal(_deq(be, raw, qtype, (5, 24)), want, qtype)
    x = rng.standard_normal((3, 24)).astype(np.float32)
    got = _qmm(be, x, raw, qtype, (5, 24))
    np.testing.assert_allclose(got, x.astype(np.float64) @ want.T.astype(np.float64), rtol=1e-5, atol=1e-5)


# --- qmatmul -----------------------------------------------------------------------------------------
def _qmm(be: Any, x: np.ndarray, raw: np.ndarray, qtype: str, shape_w: tuple[int, int],
         dtype: Any = candle.float32) -> np.ndarray:
    q = be.from_numpy(np.ascontiguousarray(raw), candle.uint8)
    xd = be.from_numpy(x, dtype)
    out_shape = x.shape[:-1] + (shape_w[0],)
    return be.to_numpy(be.qmatmul(xd, q, qtype, x.shape, shape_w, dtype), out_shape, dtype)


def _check_qmm(got: np.ndarray, x: np.ndarray, w: np.ndarray, what: str, rtol: float = 1e-5) -> None:
    want = x.astype(np.float64) @ w.astype(np.float64).T
    # float32 sums of K products: the error scales with sum |x| |w|, not with the (cancelling) result
    bound = rtol * (np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64).T) + 1e-6
    err = np.abs(got.astype(np.float64) - want)
    assert (err <= bound).all(), f"{what}: max error {err.max():.3g}, bound there {bound.flat[err.argmax()]:.3g}"


@pytest.mark.parametrize("qtype", BLOCK_TYPES)
@pytest.mark.parametrize("m", [1, 2, 3, 33])  # qmv1, qmv2 (and with a missing 2nd row), dequantize + matmul
def test_qmatmul_matches_dequantize_matmul(be: Any, qtype: str, m: int) -> None:
    rng = np.random.default_rng(m * 100 + len(qtype))
    n, k = 70, 512
    raw = _gguf_py_blocks(qtype, n, k, rng) if qtype in GGUF_PY_TYPES else _random_blocks(qtype, n, k, rng)
    x = rng.standard_normal((m, k)).astype(np.float32)
    _check_qmm(_qmm(be, x, raw, qtype, (n, k)), x, dequantize(raw, qtype), f"{qtype} m={m}")


def test_qmatmul_model_blocks_and_batch_dims(be: Any) -> None:
    blocks = _model_blocks()
    if not blocks:
        pytest.skip("neither SmolLM2 nor Gemma-3 GGUF is installed")
    rng = np.random.default_rng(7)
    for tag, qtype, raw, shape in blocks:
        w = dequantize(raw, qtype)
        for lead in ((1,), (2, 3)):
            x = rng.standard_normal((*lead, shape[1])).astype(np.float32)
            got = _qmm(be, x, raw, qtype, shape)
            assert got.shape == (*lead, shape[0])
            _check_qmm(got.reshape(-1, shape[0]), x.reshape(-1, shape[1]), w, f"{tag} {qtype} {lead}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_qmatmul_other_dtypes(be: Any, dtype: str) -> None:
    dt = getattr(candle, dtype)
    if not be.supports_dtype(dt):
        pytest.skip(f"{dtype} is not supported on this device")
    rng = np.random.default_rng(8)
    raw = _random_blocks("Q4_K", 20, 256, rng)
    w = dequantize(raw, "Q4_K")
    x = rng.standard_normal((2, 256)).astype(dt.numpy)
    got = _qmm(be, x, raw, "Q4_K", (20, 256), dt).astype(np.float64)
    x64 = x.astype(np.float64)
    if dtype == "float64":
        np.testing.assert_allclose(got, x64 @ w.astype(np.float64).T, rtol=1e-10, atol=1e-10)
    else:  # computed in float32, rounded once to the half type
        want = (x64 @ w.astype(np.float64).T).astype(np.float32).astype(dt.numpy).astype(np.float64)
        tol = 2.0 ** -7 if dtype == "bfloat16" else 2.0 ** -10
        np.testing.assert_allclose(got, want, rtol=2 * tol, atol=1e-2)


def test_qmatmul_never_leaves_the_device(be: Any) -> None:
    import candle_opencl

    rng = np.random.default_rng(9)
    raw = _random_blocks("Q4_1", 64, 256, rng)
    q = be.from_numpy(raw, candle.uint8)
    for m in (1, 5, 40):
        x = be.from_numpy(rng.standard_normal((m, 256)).astype(np.float32), candle.float32)
        be.qmatmul(x, q, "Q4_1", (m, 256), (64, 256), candle.float32)  # builds the programs
        candle_opencl.reset_stats()
        be.qmatmul(x, q, "Q4_1", (m, 256), (64, 256), candle.float32)
        s = candle_opencl.stats()
        assert "from_numpy" not in s and "to_numpy" not in s and "build" not in s, (m, s)
        assert 1 <= s["kernel"] <= 4, (m, s)


# --- qembedding --------------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_1", "Q6_K", "F16"])
def test_qembedding_rows(be: Any, qtype: str) -> None:
    rng = np.random.default_rng(10)
    n, k = 50, 256
    if qtype == "F16":
        raw = rng.standard_normal((n, k)).astype(np.float16).view(np.uint8).reshape(n, -1)
    else:
        raw = _random_blocks(qtype, n, k, rng)
    ids = np.array([3, 0, 49, 3, 17], np.int64)
    q = be.from_numpy(raw, candle.uint8)
    for dt in (candle.float32, candle.float16):
        got = be.to_numpy(be.qembedding(q, qtype, (n, k), be.from_numpy(ids, candle.int64), len(ids), dt),
                          (len(ids), k), dt)
        want = dequantize(raw, qtype)[ids].astype(dt.numpy)
        _assert_bits_equal(got.astype(np.float32), want.astype(np.float32), f"{qtype} {dt.name}")


# --- errors ------------------------------------------------------------------------------------------
def test_unsupported_qtype_names_type_and_device(be: Any) -> None:
    q = be.from_numpy(np.zeros((2, 66), np.uint8), candle.uint8)
    for name in ("IQ2_XXS", "Q8_1", "TQ1_0"):
        with pytest.raises(candle.UnsupportedError, match=rf"{name}.*OpenCL device"):
            be.qdequantize(q, name, (2, 256), candle.float32)
        x = be.from_numpy(np.zeros((1, 256), np.float32), candle.float32)
        with pytest.raises(candle.UnsupportedError, match=name):
            be.qmatmul(x, q, name, (1, 256), (2, 256), candle.float32)


def test_bad_shapes_are_clear_errors(be: Any) -> None:
    raw = _random_blocks("Q4_0", 4, 64, np.random.default_rng(11))
    q = be.from_numpy(raw, candle.uint8)
    with pytest.raises(candle.ShapeError, match="block size 32"):
        be.qdequantize(q, "Q4_0", (4, 48), candle.float32)
    with pytest.raises(candle.ShapeError, match=r"needs 4 x 18 bytes, got a uint8 array of shape \[4, 36\]"):
        be.qdequantize(q, "Q4_0", (4, 32), candle.float32)
    x = be.from_numpy(np.zeros((2, 32), np.float32), candle.float32)
    with pytest.raises(candle.ShapeError, match="K=64"):
        be.qmatmul(x, q, "Q4_0", (2, 32), (4, 64), candle.float32)


def test_qtype_list_matches_the_reference(be: Any) -> None:
    from candle_opencl.quant import QBLOCKS

    for name, (bs, ts) in QBLOCKS.items():
        assert GGML_BLOCK_SIZES[GGMLType[name]] == (bs, ts), name
    assert os.path.exists(os.path.join(os.path.dirname(__import__("candle_opencl").__file__), "kernels", "quant.cl"))


def test_portable_half_conversion_is_exact(be: Any) -> None:
    """quant.cl's integer float16 decoding (devices without x86 F16C: GPUs) on every special value."""
    import pyopencl as cl

    from candle_opencl import runtime as rtm

    rt = be.rt
    src = rt._common + "\n" + rtm._source("quant.cl")
    opts = rtm.type_defines(candle.float32) + ["-DSFX=f32", "-DCANDLE_PORTABLE_HALF"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PoCL's notes about the vector ABI
        prg = cl.Program(rt.ctx, src).build(options=opts)
    rng = np.random.default_rng(12)
    every_half = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)  # all 65536 float16 bit patterns
    for qtype in ("Q4_1", "Q6_K"):
        bs, ts = GGML_BLOCK_SIZES[GGMLType[qtype]]
        n, k = 256, 256 * bs  # 65536 blocks: each field takes every bit pattern once
        raw = _random_blocks(qtype, n, k, rng).reshape(-1, ts)
        for at in F16_FIELDS[qtype]:
            raw[:, at:at + 2] = rng.permutation(every_half).view(np.uint8).reshape(-1, 2)
        raw = raw.reshape(n, -1)
        w = cl.Buffer(rt.ctx, cl.mem_flags.READ_ONLY | cl.mem_flags.COPY_HOST_PTR, hostbuf=raw)
        out = np.empty((n, k), np.float32)
        ob = cl.Buffer(rt.ctx, cl.mem_flags.WRITE_ONLY, out.nbytes)
        kern = getattr(prg, f"qdeq_{qtype.lower()}_f32")
        total = n * k // 32
        kern(rt.queue, (total,), None, np.int64(total), np.int64(k // 32), np.int64(raw.shape[1]), np.int64(n), ob,
             w, np.int64(0), w, np.int64(0), np.int32(0))
        cl.enqueue_copy(rt.queue, out, ob)
        _assert_bits_equal(out, dequantize(raw, qtype), f"{qtype} portable half")

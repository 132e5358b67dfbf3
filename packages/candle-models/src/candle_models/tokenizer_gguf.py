"""Rebuild a Hugging Face `tokenizers.Tokenizer` from the tokenizer a GGUF file describes in its metadata.

A GGUF carries no tokenizer.json: llama.cpp stores the vocabulary (`tokenizer.ggml.tokens`), a kind
(`tokenizer.ggml.model`), merges or scores, token types and special ids. Two kinds are rebuilt here:

- `gpt2`: byte-level BPE with the file's merges. The pre-tokenizer (how text is cut before merging)
  is not in the file, only its name (`tokenizer.ggml.pre`), mapped through `PRE_TOKENIZERS`.
- `llama`: SentencePiece-style BPE with byte fallback. The merges are not stored either: every way to
  cut a token into two tokens is a merge, ranked by the token's score (by its position in the file for
  the Gemma family, whose scores do not follow the merge order) -- the same merges Hugging Face's
  converters derive, so ids match transformers' tokenizer for these files exactly.

Control tokens (type 3) become special added tokens and user-defined ones (type 4) plain added tokens,
so both match whole inside raw text. `build_from_gguf(metadata)` returns the backend and the settings
(special tokens, add_bos/add_eos, chat template) that `candle_models.tokenizer.Tokenizer` wraps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from candle.errors import FileFormatError, UnsupportedError

if TYPE_CHECKING:
    import tokenizers

__all__ = ["GGUFTokenizerSettings", "PRE_TOKENIZERS", "build_from_gguf", "derive_merges"]

# llama.cpp's token types (tokenizer.ggml.token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_SPIECE_SPACE = "\u2581"  # "▁": how SentencePiece writes a space

# The split regexes of the byte-level vocabularies (as in the tokenizer.json files of these models).
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_O200K_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> how a byte-level vocabulary splits text: "gpt2" (ByteLevel's own regex),
# "digits+gpt2" (every digit alone first, then ByteLevel's regex) or a split regex.
PRE_TOKENIZERS: dict[str, str] = {
    "default": "gpt2", "gpt2": "gpt2", "gpt-2": "gpt2",
    "smollm": "digits+gpt2", "starcoder": "digits+gpt2", "refact": "digits+gpt2",
    "llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "llama-v3": _LLAMA3_SPLIT, "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT, "falcon3": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT, "deepseek-r1-qwen": _QWEN2_SPLIT,
    "gpt-4o": _O200K_SPLIT, "llama4": _O200K_SPLIT,
}

# architectures whose SentencePiece vocabulary is ranked by file position and spells space runs as spaces
_GEMMA_FAMILY = frozenset({"gemma", "gemma2", "gemma3", "gemma3n"})


@dataclass
class GGUFTokenizerSettings:
    """What a GGUF says about its tokenizer beyond the backend itself."""

    bos_token: str | None = None
    eos_token: str | None = None
    pad_token: str | None = None
    unk_token: str | None = None
    add_bos_token: bool = False
    add_eos_token: bool = False
    chat_template: str | None = None
    named_chat_templates: dict[str, str] = field(default_factory=dict)
    model: str = ""
    pre: str = ""


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as one printable character (printable Latin-1 as itself,
    the rest shifted past U+0100)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return table


def _array(meta: Mapping[str, Any], key: str, n: int) -> np.ndarray | None:
    v = meta.get(key)
    if v is None:
        return None
    arr = np.asarray(v)
    if arr.ndim != 1 or len(arr) != n:
        raise FileFormatError(f"GGUF metadata {key!r} has {arr.size} entries, the vocabulary {n}")
    return arr


def _token(tokens: Sequence[str], meta: Mapping[str, Any], key: str) -> str | None:
    i = meta.get(f"tokenizer.ggml.{key}")
    if i is None:
        return None
    i = int(i)
    if not 0 <= i < len(tokens):
        raise FileFormatError(f"GGUF metadata tokenizer.ggml.{key} = {i} is outside the vocabulary of {len(tokens)}")
    return tokens[i]


def build_from_gguf(meta: Mapping[str, Any]) -> tuple[tokenizers.Tokenizer, GGUFTokenizerSettings]:
    """The `tokenizers.Tokenizer` (without post-processor) and settings described by GGUF metadata."""
    kind = meta.get("tokenizer.ggml.model")
    tokens = meta.get("tokenizer.ggml.tokens")
    if kind is None or tokens is None:
        raise FileFormatError("the GGUF file has no tokenizer (no tokenizer.ggml.model / tokenizer.ggml.tokens)")
    tokens = list(tokens)
    types = _array(meta, "tokenizer.ggml.token_type", len(tokens))
    if types is None:
        types = np.full(len(tokens), NORMAL, np.int32)
    arch = str(meta.get("general.architecture", ""))
    s = GGUFTokenizerSettings(model=str(kind), pre=str(meta.get("tokenizer.ggml.pre", "")))
    s.bos_token, s.eos_token = _token(tokens, meta, "bos_token_id"), _token(tokens, meta, "eos_token_id")
    s.pad_token, s.unk_token = _token(tokens, meta, "padding_token_id"), _token(tokens, meta, "unknown_token_id")
    # llama.cpp adds BOS to a SentencePiece vocabulary unless the file says otherwise
    s.add_bos_token = bool(meta.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    s.add_eos_token = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    tmpl = meta.get("tokenizer.chat_template")
    s.chat_template = tmpl if isinstance(tmpl, str) else None
    prefix = "tokenizer.chat_template."
    s.named_chat_templates = {k[len(prefix):]: v for k, v in meta.items()
                              if k.startswith(prefix) and isinstance(v, str)}

    if kind == "gpt2":
        backend, added = _byte_level(tokens, types, meta, s)
    elif kind == "llama":
        backend, added = _sentencepiece(tokens, types, meta, arch, s)
    else:
        raise UnsupportedError(f"cannot rebuild a GGUF tokenizer of kind tokenizer.ggml.model={kind!r} "
                               "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece BPE)")
    _add_tokens(backend, tokens, types, added, s)
    return backend, s


def _add_tokens(backend: tokenizers.Tokenizer, tokens: Sequence[str], types: np.ndarray,
                user_ok: Callable[[str], bool], s: GGUFTokenizerSettings) -> None:
    """Control tokens (and the named special tokens) as special added tokens, user-defined tokens that
    `user_ok(token)` accepts as plain added tokens: both then match whole inside raw text."""
    from tokenizers import AddedToken

    special = [tokens[i] for i in np.flatnonzero(types == CONTROL)]
    seen = set(special)
    for t in (s.bos_token, s.eos_token, s.unk_token, s.pad_token):
        if t is not None and t not in seen and not (t.startswith("<0x") and len(t) == 6):
            special.append(t)
            seen.add(t)
    user = [tokens[i] for i in np.flatnonzero(types == USER_DEFINED)]
    user = [t for t in user if t not in seen and user_ok(t)]
    if special:
        backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    if user:
        backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])


# --- byte-level BPE (tokenizer.ggml.model == "gpt2") ------------------------------------------------
def _byte_level(tokens: list[str], types: np.ndarray, meta: Mapping[str, Any],
                s: GGUFTokenizerSettings) -> tuple[tokenizers.Tokenizer, Callable[[str], bool]]:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pre = s.pre or "default"
    split = PRE_TOKENIZERS.get(pre)
    if split is None:
        raise UnsupportedError(f"unknown GGUF pre-tokenizer tokenizer.ggml.pre={pre!r} for a byte-level vocabulary "
                               f"(known: {', '.join(sorted(PRE_TOKENIZERS))}); its split rules are not in the file")
    merges = meta.get("tokenizer.ggml.merges")
    if merges is None:
        raise FileFormatError("the GGUF byte-level tokenizer has no tokenizer.ggml.merges")
    to_uni = byte_to_unicode()
    alphabet = frozenset(to_uni.values())
    # ordinary tokens are spelled in the byte alphabet; respell any that are not (control and
    # user-defined tokens keep their text: they are matched as added tokens, not by the model)
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        if not alphabet.issuperset(t) and types[i] not in (CONTROL, USER_DEFINED):
            t = "".join(to_uni[b] for b in t.encode("utf-8", "surrogateescape"))
        vocab[t] = i
    pairs = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise FileFormatError(f"malformed GGUF merge {m!r} (expected two tokens separated by a space)")
        pairs.append((a, b))
    backend = Tokenizer(models.BPE(vocab=vocab, merges=pairs, unk_token=s.unk_token if s.unk_token in vocab else None,
                                   fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split == "gpt2":
        backend.pre_tokenizer = byte_level
    elif split == "digits+gpt2":
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    backend.decoder = decoders.ByteLevel()

    def user_ok(t: str) -> bool:  # only tokens whose byte-level spelling is their text (e.g. "<think>")
        return alphabet.issuperset(t) and all(to_uni.get(ord(c)) == c for c in t)

    return backend, user_ok


# --- SentencePiece BPE (tokenizer.ggml.model == "llama") ---------------------------------------------
def _sentencepiece(tokens: list[str], types: np.ndarray, meta: Mapping[str, Any], arch: str,
                   s: GGUFTokenizerSettings) -> tuple[tokenizers.Tokenizer, Callable[[str], bool]]:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    gemma = arch in _GEMMA_FAMILY
    if gemma:
        # Gemma stores runs of spaces as real spaces; its model looks them up as "▁▁..."
        tokens = [_SPIECE_SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
        order = -np.arange(len(tokens), dtype=np.float64)  # merge rank = position in the file
    else:
        scores = meta.get("tokenizer.ggml.scores")
        if scores is None:
            raise FileFormatError("the GGUF SentencePiece tokenizer has no tokenizer.ggml.scores to rank merges by")
        order = np.asarray(_array(meta, "tokenizer.ggml.scores", len(tokens)), np.float64)
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = derive_merges(tokens, vocab, order)
    unk = s.unk_token if s.unk_token in vocab else None
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    steps = [decoders.Replace(_SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if gemma:  # no prefix space: spaces become "▁" and nothing else changes
        backend.normalizer = normalizers.Replace(" ", _SPIECE_SPACE)
        backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    elif arch == "phi3":  # the prefix space comes from a normalizer
        backend.normalizer = normalizers.Sequence([normalizers.Prepend(_SPIECE_SPACE),
                                                   normalizers.Replace(" ", _SPIECE_SPACE)])
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    else:
        prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
        backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_SPIECE_SPACE,
                                                         prepend_scheme="first" if prefix else "never", split=False)
        if prefix:
            steps.append(decoders.Strip(content=" ", left=1, right=0))
    backend.decoder = decoders.Sequence(steps)
    return backend, vocab.__contains__


def derive_merges(tokens: Sequence[str], vocab: Mapping[str, int], rank: np.ndarray) -> list[tuple[str, str]]:
    """Every `(left, right)` pair of vocabulary entries that concatenates to a vocabulary entry, best first:
    by `rank` of the joined token (higher first), then longer left piece, then file order. `vocab` maps
    each token to its id (the last of duplicate spellings).

    Vectorised: polynomial hashes (mod 2**64) of every prefix and suffix of every token are looked up
    among the hashes of whole tokens, and each hit is then confirmed by comparing the code points.
    """
    n = len(tokens)
    if n == 0:
        return []
    lens = np.fromiter(map(len, tokens), np.int64, n)
    ends = np.cumsum(lens)
    starts = ends - lens
    cps = np.frombuffer("".join(tokens).encode("utf-32-le", "surrogatepass"), np.uint32)
    total = len(cps)
    if total != int(ends[-1]):
        raise FileFormatError("GGUF vocabulary tokens do not re-encode consistently")
    base = np.uint64(0x9E3779B97F4A7C15)  # odd, so invertible mod 2**64
    inv = np.uint64(pow(int(base), -1, 1 << 64))
    with np.errstate(over="ignore"):
        pw = np.full(total + 1, base, np.uint64)
        pw[0] = 1
        pw = np.cumprod(pw, dtype=np.uint64)
        ipw = np.full(total + 1, inv, np.uint64)
        ipw[0] = 1
        ipw = np.cumprod(ipw, dtype=np.uint64)
        acc = np.zeros(total + 1, np.uint64)
        np.cumsum(cps * pw[:total], out=acc[1:])

        def span_hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # hash of the text [a, b), wherever it is
            h = (acc[b] - acc[a]) * ipw[a]
            h ^= h >> np.uint64(31)  # a bijective finalizer (splitmix64's) spreads short texts over the top bits
            h *= np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(29)
            return h

        table = _HashTable(span_hash(starts, ends), np.arange(n))  # hash of a whole token -> its id
        cuts = np.maximum(lens - 1, 0)
        owner = np.repeat(np.arange(n), cuts)
        k = np.arange(int(cuts.sum()), dtype=np.int64) - np.repeat(np.cumsum(cuts) - cuts, cuts) + 1  # left length
        at = starts[owner] + k
        jl = table.lookup(span_hash(starts[owner], at))
        keep = jl >= 0
        owner, k, at, jl = owner[keep], k[keep], at[keep], jl[keep]
        jr = table.lookup(span_hash(at, ends[owner]))
    keep = jr >= 0
    owner, k, at, jl, jr = owner[keep], k[keep], at[keep], jl[keep], jr[keep]
    # confirm the hash hits: same length, same code points
    keep = (lens[jl] == k) & (lens[jr] == lens[owner] - k)
    owner, k, at, jl, jr = owner[keep], k[keep], at[keep], jl[keep], jr[keep]
    keep = _same(cps, starts[owner], starts[jl], k) & _same(cps, at, starts[jr], lens[owner] - k)
    owner, k = owner[keep], k[keep]
    # best first: higher rank, longer left piece, longer right piece, then file order
    order = np.lexsort((owner, k - lens[owner], -k, -rank[owner]))
    owner, k = owner[order].tolist(), k[order].tolist()
    if len(vocab) != n:  # duplicate spellings: only the vocabulary's entry of each takes part
        pairs = [(j, c) for j, c in zip(owner, k) if vocab.get(tokens[j]) == j]
        owner, k = [j for j, _ in pairs], [c for _, c in pairs]
    return [(t[:c], t[c:]) for t, c in zip(map(tokens.__getitem__, owner), k)]


class _HashTable:
    """An open-addressing table (linear probing) from uint64 hashes to ids, built and probed with numpy."""

    def __init__(self, keys: np.ndarray, ids: np.ndarray):
        bits = max(4, int(len(keys)).bit_length() + 2)  # load factor <= 1/4
        self.mask = (1 << bits) - 1
        self.shift = np.uint64(64 - bits)
        self.keys = np.zeros(self.mask + 1, np.uint64)
        self.ids = np.full(self.mask + 1, -1, np.int64)
        pending = np.arange(len(keys))
        pos = (keys >> self.shift).astype(np.int64)
        while pending.size:
            p = pos[pending]
            free = self.ids[p] < 0
            slot, first = np.unique(p[free], return_index=True)
            won = pending[free][first]
            self.keys[slot] = keys[won]
            self.ids[slot] = ids[won]
            pending = pending[self.ids[pos[pending]] != ids[pending]]  # not placed yet: probe on
            pos[pending] = (pos[pending] + 1) & self.mask

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """The id stored under each hash of `h`, or -1."""
        out = np.full(len(h), -1, np.int64)
        todo = np.arange(len(h))
        pos = (h >> self.shift).astype(np.int64)
        while todo.size:
            p = pos[todo]
            ids, found = self.ids[p], self.keys[p] == h[todo]
            hit = found & (ids >= 0)
            out[todo[hit]] = ids[hit]
            more = ~found & (ids >= 0)  # occupied by another key: try the next slot
            todo = todo[more]
            pos[todo] = (p[more] + 1) & self.mask
        return out


def _same(cps: np.ndarray, a: np.ndarray, b: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Whether cps[a[i]:a[i]+length[i]] == cps[b[i]:b[i]+length[i]] for each i (every length >= 1)."""
    if len(a) == 0:
        return np.zeros(0, bool)
    seg = np.cumsum(length) - length
    step = np.arange(int(length.sum()), dtype=np.int64) - np.repeat(seg, length)
    eq = cps[np.repeat(a, length) + step] == cps[np.repeat(b, length) + step]
    return np.logical_and.reduceat(eq, seg)

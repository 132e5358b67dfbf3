"""Token sampling: the generation settings, the logits processors and a seeded `Sampler`.

The sampled id has to come to the host anyway, so the processors run there, in numpy, on the one
row of logits (shape `(V,)`) the model returns for the last position: one device-to-host transfer
of V floats per token and nothing else. Each processor is a small pure function (a new array out,
the input untouched) with the semantics of the matching `transformers` processor, applied in
transformers' order:

    repetition penalty -> [sampling only:] temperature -> top-k -> top-p -> min-p

so results can be compared with `transformers.generation.logits_process` on the same logits.
Greedy decoding (temperature 0) applies the repetition penalty and takes the argmax; the sampling
filters do not apply then (as in transformers with `do_sample=False`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "GenerationConfig",
    "Sampler",
    "apply_min_p",
    "apply_repetition_penalty",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    "softmax",
]

_NEG_INF = -np.inf
_BLOCK = 64  # tokens per block (top-k's bound, the draw's block sums)


@dataclass
class GenerationConfig:
    """What `generate` does: how many tokens, how they are picked, and what stops it.

    `temperature == 0` is greedy decoding (`do_sample` is False); `top_k=0`, `top_p=1.0`,
    `min_p=0.0` and `repetition_penalty=1.0` switch those processors off. The penalty follows
    transformers (CTRL): over the distinct tokens of prompt + output (the last
    `repetition_window` of them when set), positive logits are divided by it, negative ones
    multiplied. `seed=None` draws fresh entropy; a fixed seed gives the same tokens every run.
    Generation stops at any of `stop_token_ids` or the tokenizer's EOS ids (unless `ignore_eos`),
    neither of which is part of the output, and at the first occurrence of any `stop_strings`,
    the text being cut just before it.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    repetition_window: int | None = None
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    stop_strings: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        # accept any iterable (a list, a set, a single string) for the stop collections
        if isinstance(self.stop_strings, str):
            self.stop_strings = (self.stop_strings,)
        self.stop_strings = tuple(self.stop_strings)
        if isinstance(self.stop_token_ids, int):
            self.stop_token_ids = (self.stop_token_ids,)
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)

        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"GenerationConfig: {name} must be {rule}, got {getattr(self, name)!r}")

        def positive_int(v: object) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v >= 1

        check(positive_int(self.max_new_tokens), "max_new_tokens", "a positive integer")
        check(self.temperature >= 0.0, "temperature", ">= 0 (0 = greedy)")
        check(isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "an integer >= 0 (0 = off)")
        check(0.0 < self.top_p <= 1.0, "top_p", "in (0, 1] (1 = off)")
        check(0.0 <= self.min_p <= 1.0, "min_p", "in [0, 1] (0 = off)")
        check(self.repetition_penalty > 0.0, "repetition_penalty", "> 0 (1 = off)")
        check(self.repetition_window is None or positive_int(self.repetition_window), "repetition_window",
              "a positive integer or None")
        check(all(isinstance(s, str) and s for s in self.stop_strings), "stop_strings", "non-empty strings")

    @property
    def do_sample(self) -> bool:
        """True when tokens are drawn at random (temperature > 0), False for greedy decoding."""
        return self.temperature > 0.0


# ----------------------------------------------------------------------------------------------
# processors: (V,) logits in, new (V,) logits out; removed tokens become -inf


def _row(logits: np.ndarray, op: str) -> np.ndarray:
    a = np.asarray(logits)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{op}: expected one row of logits of shape (V,), got shape {a.shape}")
    return a


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities of one row of logits (float32, or float64 for float64 input), as transformers
    computes them; -inf entries get probability 0."""
    x = np.asarray(logits)
    if x.dtype != np.float64:
        x = x.astype(np.float32, copy=False)
    e = np.exp(x - x.max())
    e /= e.sum()
    return e


def apply_repetition_penalty(logits: np.ndarray, token_ids: Iterable[int] | np.ndarray, penalty: float) -> np.ndarray:
    """transformers' `RepetitionPenaltyLogitsProcessor`: every distinct token of `token_ids` has its
    logit divided by `penalty` when positive (or zero) and multiplied by it when negative."""
    x = _row(logits, "repetition_penalty")
    if penalty == 1.0:
        return x
    ids = np.asarray(token_ids if isinstance(token_ids, np.ndarray) else list(token_ids), dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= x.shape[0]):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise ValueError(f"repetition_penalty: token id {bad} outside the vocabulary (0..{x.shape[0] - 1})")
    out = x.copy()
    seen = x[ids]  # a repeated id reads the unpenalized logit every time, so it is penalized once
    out[ids] = np.where(seen < 0, seen * penalty, seen / penalty)
    return out


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """transformers' `TemperatureLogitsWarper`: logits / temperature (temperature > 0)."""
    x = _row(logits, "temperature")
    if not temperature > 0.0:
        raise ValueError(f"temperature: must be > 0, got {temperature!r} (use greedy decoding for 0)")
    return x if temperature == 1.0 else x / np.asarray(temperature, dtype=x.dtype)


def apply_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    """transformers' `TopKLogitsWarper`: keep the k highest logits (and every logit tied with the
    k-th); k = 0 or k >= V keeps all."""
    x = _row(logits, "top_k")
    v = x.shape[0]
    if k <= 0 or k >= v:
        return x
    nb = v // _BLOCK
    if k <= nb:
        # the k-th largest block maximum is <= the k-th largest logit (k blocks each hold one at least as
        # large), so the few logits above it hold the top k: partition those, not all V
        floor = np.partition(x[:nb * _BLOCK].reshape(nb, _BLOCK).max(axis=1), nb - k)[nb - k]
        head = x[x >= floor]
        kth = np.partition(head, head.shape[0] - k)[head.shape[0] - k]
    else:
        kth = np.partition(x, v - k)[v - k]  # the k-th largest value
    return np.where(x < kth, _NEG_INF, x).astype(x.dtype, copy=False)


def apply_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """transformers' `TopPLogitsWarper` (nucleus): keep the smallest set of most probable tokens whose
    probabilities sum to >= p, and always the most probable one; p >= 1 keeps all.

    A token is kept when the total probability of the tokens ranked above it is < p (tokens tied
    with the last one kept are kept too). Only the head of the distribution is sorted: the tokens
    above a falling probability threshold, once they hold at least p of the mass."""
    x = _row(logits, "top_p")
    if p >= 1.0:
        return x
    probs = softmax(x)
    top = probs.max()
    for c in (top * 1e-1, top * 1e-2, top * 1e-3, top * 1e-4, top * 1e-6, 0.0):
        head = probs[probs >= c] if c > 0.0 else probs
        if c == 0.0 or head.sum(dtype=np.float64) >= p:  # the kept set lies inside the head
            break
    ranked = np.sort(head)[::-1]
    above = np.cumsum(ranked, dtype=np.float64) - ranked  # probability of the tokens ranked above each one
    n_keep = max(1, int(np.searchsorted(above, p, side="left")))
    return np.where(probs >= ranked[n_keep - 1], x, _NEG_INF).astype(x.dtype, copy=False)


def apply_min_p(logits: np.ndarray, min_p: float) -> np.ndarray:
    """transformers' `MinPLogitsWarper`: keep the tokens whose probability is >= min_p times the
    highest probability (the most probable token always stays); min_p = 0 keeps all."""
    x = _row(logits, "min_p")
    if min_p <= 0.0:
        return x
    # p_i < min_p * p_max  <=>  logit_i < logit_max + log(min_p): no softmax needed
    floor = x.max() + np.log(np.float64(min_p))
    return np.where(x < floor, _NEG_INF, x).astype(x.dtype, copy=False)


# ----------------------------------------------------------------------------------------------


class Sampler:
    """Picks the next token from one row of logits, following a `GenerationConfig`.

    It owns a numpy `default_rng(config.seed)`; each sampled token consumes exactly one uniform
    draw, so a fixed seed reproduces the same tokens given the same logits.
    """

    def __init__(self, config: GenerationConfig | None = None) -> None:
        self.config = config if config is not None else GenerationConfig()
        self.rng = np.random.default_rng(self.config.seed)

    def penalize(self, logits: np.ndarray, history: Iterable[int] | np.ndarray = ()) -> np.ndarray:
        """The repetition penalty over `history` (prompt + output ids so far, oldest first)."""
        c = self.config
        if c.repetition_penalty == 1.0:
            return _row(logits, "penalize")
        h = history if isinstance(history, np.ndarray) else np.fromiter(history, dtype=np.int64)
        if c.repetition_window is not None:
            h = h[-c.repetition_window:]
        return apply_repetition_penalty(logits, h, c.repetition_penalty)

    def process(self, logits: np.ndarray, history: Iterable[int] | np.ndarray = ()) -> np.ndarray:
        """Every processor the config enables, in transformers' order; removed tokens are -inf."""
        c = self.config
        x = self.penalize(logits, history)
        if c.do_sample:
            x = apply_temperature(x, c.temperature)
            x = apply_top_k(x, c.top_k)
            x = apply_top_p(x, c.top_p)
            x = apply_min_p(x, c.min_p)
        return x

    def probabilities(self, logits: np.ndarray, history: Iterable[int] | np.ndarray = ()) -> np.ndarray:
        """The distribution `sample` draws from (float64; one-hot at the argmax when greedy)."""
        x = self.process(logits, history)
        if not self.config.do_sample:
            p = np.zeros(x.shape[0], dtype=np.float64)
            p[int(np.argmax(x))] = 1.0
            return p
        return softmax(x).astype(np.float64)

    def sample(self, logits: np.ndarray, history: Iterable[int] | np.ndarray = ()) -> int:
        """The next token id: the argmax (greedy) or one seeded draw from the processed distribution."""
        x = self.process(logits, history)
        if not self.config.do_sample:
            i = int(np.argmax(x))
            if np.isnan(x[i]):
                raise ValueError("sample: the logits contain NaN")
            return i
        top = x.max()
        if not np.isfinite(top):
            raise ValueError(f"sample: the logits are not finite (max {top})")
        return _draw(np.exp(np.asarray(x - top, dtype=np.float32)), self.rng.random())


def _draw(weights: np.ndarray, u: float) -> int:
    """The index at fraction u in [0, 1) of the cumulative non-negative `weights`; an index whose
    weight is 0 is never returned. Block sums first, then one block's cumulative sum: O(V) but
    with no full-length sequential cumsum."""
    n = weights.shape[0]
    starts = np.arange(0, n, _BLOCK)
    csum = np.cumsum(np.add.reduceat(weights, starts, dtype=np.float64))
    target = u * csum[-1]
    b = min(int(np.searchsorted(csum, target, side="right")), starts.shape[0] - 1)
    block = weights[starts[b]:starts[b] + _BLOCK]
    within = np.cumsum(block, dtype=np.float64)
    i = int(np.searchsorted(within, target - (csum[b - 1] if b else 0.0), side="right"))
    if i >= block.shape[0]:  # rounding at the block's end: take its last token with weight
        i = int(np.flatnonzero(block)[-1])
    return int(starts[b]) + i

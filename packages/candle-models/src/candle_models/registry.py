"""The architecture registry: names from config.json's `model_type` or GGUF's `general.architecture`
mapped to model classes.

    @register("llama", "mistral")
    class LlamaForCausalLM(Module): ...

    cls = get_architecture("mistral")

Adding an architecture is adding a file: the modules of this package are scanned (as text, nothing is
imported) for `@register(...)` lines, and a module is imported only when one of its names is asked
for. Third-party packages add architectures through the entry-point group `candle.models`: the entry
point's name is the architecture name, its value a class (`pkg.module:Class`) or a module whose
`@register` decorators run on import. Entry points are also loaded only on demand.

A registered class provides (see `candle_models.llama.LlamaForCausalLM` for the reference):
`config_from_hf(config_json_dict)`, `from_weights(config, weights, device=, dtype=, progress=)`,
`weight_count(config)` (for the progress bar) and, to read GGUF files, `config_from_gguf(reader)` and
`gguf_weights(reader, config)` (the file's tensors under the names `from_weights` reads). A model may
also have `attach(tokenizer, source)`, which `load_model` calls with the loaded tokenizer and the
`ModelSource` (BERT uses it for `encode(texts)` and the folder's pooling settings).
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from candle import CandleError

__all__ = ["ENTRY_POINT_GROUP", "UnknownArchitectureError", "get_architecture", "known_architectures", "register"]

ENTRY_POINT_GROUP = "candle.models"
T = TypeVar("T")

_registry: dict[str, type] = {}
_lock = threading.RLock()
_builtin: dict[str, str] | None = None  # name -> module of this package that registers it
_REGISTER_LINE = re.compile(r"^@register\((.*?)\)\s*$", re.MULTILINE)


class UnknownArchitectureError(CandleError, KeyError):
    """No registered class for an architecture name; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register(*names: str) -> Callable[[T], T]:
    """Class decorator: the class handles architectures `names` (config.json `model_type` and/or GGUF
    `general.architecture` values). A name registered twice keeps its first class."""
    if not names:
        raise TypeError("register() needs at least one architecture name")

    def deco(cls: T) -> T:
        with _lock:
            for n in names:
                _registry.setdefault(_norm(n), cls)  # type: ignore[arg-type]
        cls.architecture_names = tuple(names)  # type: ignore[attr-defined]
        return cls

    return deco


def _scan_builtin() -> dict[str, str]:
    """Architecture names declared by `@register(...)` lines in this package's modules (read as text)."""
    global _builtin
    if _builtin is not None:
        return _builtin
    found: dict[str, str] = {}
    here = os.path.dirname(os.path.abspath(__file__))
    for fname in sorted(os.listdir(here)):
        if not fname.endswith(".py") or fname in ("registry.py", "__init__.py", "__main__.py"):
            continue
        try:
            with open(os.path.join(here, fname), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        for m in _REGISTER_LINE.finditer(text):
            try:
                args = ast.literal_eval(f"({m.group(1)},)")
            except (ValueError, SyntaxError):
                continue
            for a in args:
                if isinstance(a, str):
                    found.setdefault(_norm(a), f"{__package__}.{fname[:-3]}")
    _builtin = found
    return found


def _entry_points() -> dict[str, EntryPoint]:
    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # a broken distribution's metadata must not break the registry
        return {}
    return {_norm(ep.name): ep for ep in eps}


def known_architectures() -> list[str]:
    """Every architecture name: registered, built in (not yet imported) or from entry points."""
    with _lock:
        return sorted(set(_registry) | set(_scan_builtin()) | set(_entry_points()))


def get_architecture(name: str) -> type:
    """The class registered for `name` (case-insensitive; `-` and `_` are the same), importing its module
    or entry point on first use; `UnknownArchitectureError` lists the known names."""
    key = _norm(str(name))
    with _lock:
        if key in _registry:
            return _registry[key]
        module = _scan_builtin().get(key)
        if module is not None:
            importlib.import_module(module)
            if key in _registry:
                return _registry[key]
        ep = _entry_points().get(key)
        if ep is not None:
            try:
                obj: Any = ep.load()
            except Exception as e:
                raise CandleError(f"architecture {name!r}: its entry point {ep.value!r} (group "
                                  f"{ENTRY_POINT_GROUP!r}) failed to load: {type(e).__name__}: {e}") from e
            if isinstance(obj, type):
                _registry.setdefault(key, obj)
            if key in _registry:
                return _registry[key]
            raise CandleError(f"architecture {name!r}: the entry point {ep.value!r} registered no class for it")
    known = ", ".join(known_architectures()) or "none"
    raise UnknownArchitectureError(f"unknown model architecture {name!r}; known architectures: {known} "
                                   f"(third-party packages add more through the {ENTRY_POINT_GROUP!r} entry points)")
